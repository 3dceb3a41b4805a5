// The `mpi` backend: one process per rank (mpirun or srun), CPU buffers, Open MPI underneath.
// Messages go straight to MPI non-blocking calls, so that every wait can time out. A collective
// first checks (one small all-reduce) that all members agree on its arguments. AllReduce and
// ReduceScatter do not use MPI's reductions: member i receives share i of every member's buffer,
// reduces it in group order exactly as the local backend does (same bits, bf16 accumulated in
// fp32), and AllReduce sends the result back to all: two rounds of concurrent point-to-point
// messages moving 2(n-1)/n of the buffer per rank, as a bandwidth-optimal all-reduce does. The
// other collectives are MPI's non-blocking ones.
#ifndef LOOM_RUNTIME_MPI_COMMUNICATOR_H_
#define LOOM_RUNTIME_MPI_COMMUNICATOR_H_

#include <memory>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "runtime/communicator.h"

namespace loom {

// Collective over MPI_COMM_WORLD: every rank of the job calls it. Initialises MPI when needed
// (see runtime/mpi_session.h for the threading choice).
absl::StatusOr<std::unique_ptr<Communicator>> MakeMpiCommunicator(absl::Duration timeout);

}  // namespace loom

#endif  // LOOM_RUNTIME_MPI_COMMUNICATOR_H_
