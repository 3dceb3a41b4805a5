#include "runtime/config.h"

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace loom {

absl::string_view BackendName(Backend backend) {
  switch (backend) {
    case Backend::kLocal:
      return "local";
    case Backend::kMpi:
      return "mpi";
    case Backend::kNccl:
      return "nccl";
  }
  return "?";
}

absl::StatusOr<Backend> ParseBackend(absl::string_view name) {
  for (Backend backend : {Backend::kLocal, Backend::kMpi, Backend::kNccl}) {
    if (name == BackendName(backend)) return backend;
  }
  return absl::InvalidArgumentError(
      absl::StrCat("runtime.backend '", name, "' is not one of local, mpi, nccl"));
}

bool BackendAvailable(Backend backend) {
#ifdef LOOM_HAVE_NCCL
  constexpr bool kHaveNccl = true;
#else
  constexpr bool kHaveNccl = false;
#endif
  return backend != Backend::kNccl || kHaveNccl;
}

absl::Status ValidateRuntimeConfig(const RuntimeConfig& config) {
  if (!BackendAvailable(config.backend)) {
    return absl::UnimplementedError(
        absl::StrCat("runtime.backend '", BackendName(config.backend),
                     "' is not in this build (it needs CUDA and NCCL at configure time)"));
  }
  if (config.local_world_size < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("runtime.local_world_size must be at least 1, got ", config.local_world_size));
  }
  if (config.timeout <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError(absl::StrCat("runtime.timeout must be positive, got ",
                                                   absl::FormatDuration(config.timeout)));
  }
  return absl::OkStatus();
}

}  // namespace loom
