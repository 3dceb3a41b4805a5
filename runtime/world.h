// Who this process is in the job: rank, size, local rank and node, read from the launcher's
// environment before any communication.
#ifndef LOOM_RUNTIME_WORLD_H_
#define LOOM_RUNTIME_WORLD_H_

#include <functional>
#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace loom {

struct WorldInfo {
  int rank = 0;
  int size = 1;
  // Position among the ranks on this node and their count; -1 where the launcher does not say
  // (communicators fill them in from the hostnames of all ranks).
  int local_rank = 0;
  int local_size = 1;
  // Index of this rank's node among the job's nodes and their count; -1 where unknown, as above.
  int node = 0;
  int num_nodes = 1;
  std::string hostname;
  // Which environment described the world: "openmpi", "pmi", "slurm", "singleton" or "local".
  std::string source;
};

// Reads an environment variable; std::nullopt when it is not set.
using EnvLookup = std::function<std::optional<std::string>(absl::string_view name)>;

// The process environment.
EnvLookup ProcessEnv();

// Discovers the world from, in this order: Open MPI's OMPI_COMM_WORLD_{RANK,SIZE,LOCAL_RANK,
// LOCAL_SIZE}; PMI_{RANK,SIZE} (MPICH/Hydra, with MPI_LOCALRANKID and MPI_LOCALNRANKS); a Slurm job
// step's SLURM_{PROCID,STEP_NUM_TASKS,LOCALID,NODEID,STEP_NUM_NODES}; else a singleton. mpirun
// inside a Slurm allocation sets both its own and Slurm's variables, and Slurm's then describe the
// batch step, so launcher variables win over Slurm's. Slurm's are read from the job step (set by
// srun) rather than SLURM_NTASKS, which the batch script itself also sees while running as one
// process. Malformed or inconsistent values are an error naming the variable.
absl::StatusOr<WorldInfo> DetectWorld(const EnvLookup& env);

// This machine's hostname.
std::string HostName();

}  // namespace loom

#endif  // LOOM_RUNTIME_WORLD_H_
