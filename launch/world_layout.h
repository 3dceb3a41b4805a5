// Where the ranks of a run landed: host, local rank on that host, and what each computes with
// (CPU threads and the cores it may run on, or its GPU). Rank 0 prints it at start-up so a user
// sees at once whether mpirun / srun placed one rank per core or per GPU as intended, before any
// step is paid for.
#ifndef LOOM_LAUNCH_WORLD_LAYOUT_H_
#define LOOM_LAUNCH_WORLD_LAYOUT_H_

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "runtime/communicator.h"

namespace loom {

struct RankPlacement {
  int rank = 0;
  std::string host;
  int local_rank = 0;  // position among the ranks on its host
  int threads = 0;     // kernel threads of this rank
  std::string cpus;    // cores this rank's process may run on ("0-3,8"), from its affinity mask
  int gpu = -1;        // CUDA device with the nccl backend; -1 for CPU ranks
};

// Collective over the world: every rank's placement, in rank order. `threads` is this rank's
// kernel thread count.
absl::StatusOr<std::vector<RankPlacement>> GatherWorldLayout(Communicator& comm, int threads);

// "world: 4 ranks, mpi backend (openmpi), 2 hosts" followed by one line per host and, for worlds
// of up to 32 ranks, one line per rank.
std::string FormatWorldLayout(const std::vector<RankPlacement>& ranks, const Communicator& comm);

}  // namespace loom

#endif  // LOOM_LAUNCH_WORLD_LAYOUT_H_
