// One entry point for every backend: runs the ranks this process hosts.
#ifndef LOOM_RUNTIME_RUN_RANKS_H_
#define LOOM_RUNTIME_RUN_RANKS_H_

#include "absl/functional/function_ref.h"
#include "absl/status/status.h"
#include "runtime/communicator.h"
#include "runtime/config.h"

namespace loom {

// Runs body(communicator) for each rank of this process: config.local_world_size threads for
// `local`; once for `mpi` and `nccl`, where this process is one rank of a job started by mpirun
// or srun (every process of the job must call RunRanks). Returns the first failure; with `local`,
// the lowest failing rank's, prefixed with "rank r: ".
absl::Status RunRanks(const RuntimeConfig& config,
                      absl::FunctionRef<absl::Status(Communicator&)> body);

}  // namespace loom

#endif  // LOOM_RUNTIME_RUN_RANKS_H_
