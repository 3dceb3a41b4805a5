// The `nccl` backend: one process per rank, each driving one GPU, buffers in GPU memory. MPI
// bootstraps it (the first member makes the NCCL unique id and broadcasts it) and carries small
// control messages; NCCL carries the data. Built only with CUDA and NCCL (LOOM_HAVE_NCCL).
//
// Every call returns when its data is in place (the backend waits on its own CUDA stream), so
// results are visible to any stream after the call. Waits poll a CUDA event and NCCL's error
// state until the deadline; a timeout aborts the NCCL communicator and breaks this one.
//
// NCCL has no tags: messages between two ranks match in the order they are launched. Each send
// therefore also posts a small MPI header (tag, type, count) that the receiver checks before it
// launches its receive, so a wrong tag or size is an error (and the communicator unusable), not
// data in the wrong buffer. NCCL messages that depend on one another must be launched in one
// group: Exchange launches all of its messages together once every receive's header is in, while
// a lone ISend or IRecv launches, with whatever else is ready, at its first Wait or Test. Rings
// therefore go through Exchange.
#ifndef LOOM_RUNTIME_NCCL_COMMUNICATOR_H_
#define LOOM_RUNTIME_NCCL_COMMUNICATOR_H_

#include <memory>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "runtime/communicator.h"

namespace loom {

// Collective over MPI_COMM_WORLD. Uses GPU local_rank % device count; FAILED_PRECONDITION when no
// CUDA device is visible.
absl::StatusOr<std::unique_ptr<Communicator>> MakeNcclCommunicator(absl::Duration timeout);

}  // namespace loom

#endif  // LOOM_RUNTIME_NCCL_COMMUNICATOR_H_
