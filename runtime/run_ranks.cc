#include "runtime/run_ranks.h"

#include "runtime/local_world.h"
#include "runtime/mpi_communicator.h"
#ifdef LOOM_HAVE_NCCL
#include "runtime/nccl_communicator.h"
#endif

namespace loom {

absl::Status RunRanks(const RuntimeConfig& config,
                      absl::FunctionRef<absl::Status(Communicator&)> body) {
  absl::Status status = ValidateRuntimeConfig(config);
  if (!status.ok()) return status;
  absl::StatusOr<std::unique_ptr<Communicator>> communicator;
  switch (config.backend) {
    case Backend::kLocal: {
      absl::StatusOr<std::unique_ptr<LocalWorld>> world =
          LocalWorld::Create(config.local_world_size, config.timeout);
      if (!world.ok()) return world.status();
      return (*world)->Run(body);
    }
    case Backend::kMpi:
      communicator = MakeMpiCommunicator(config.timeout);
      break;
    case Backend::kNccl:
#ifdef LOOM_HAVE_NCCL
      communicator = MakeNcclCommunicator(config.timeout);
#endif
      break;
  }
  if (!communicator.ok()) return communicator.status();
  return body(**communicator);
}

}  // namespace loom
