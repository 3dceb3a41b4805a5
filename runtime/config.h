// How a run wants its ranks connected: the plain struct launch/ fills from `runtime:` in YAML.
#ifndef LOOM_RUNTIME_CONFIG_H_
#define LOOM_RUNTIME_CONFIG_H_

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"

namespace loom {

enum class Backend { kLocal, kMpi, kNccl };

absl::string_view BackendName(Backend backend);  // "local", "mpi", "nccl"
absl::StatusOr<Backend> ParseBackend(absl::string_view name);
// Whether this build has the backend (nccl needs a CUDA build that found NCCL).
bool BackendAvailable(Backend backend);

struct RuntimeConfig {
  Backend backend = Backend::kLocal;
  // Ranks of the `local` backend (threads of this process); the launcher decides for mpi and nccl.
  int local_world_size = 1;
  // Longest any blocking call waits for its peers before failing with DEADLINE_EXCEEDED.
  absl::Duration timeout = absl::Minutes(5);
};

absl::Status ValidateRuntimeConfig(const RuntimeConfig& config);

}  // namespace loom

#endif  // LOOM_RUNTIME_CONFIG_H_
