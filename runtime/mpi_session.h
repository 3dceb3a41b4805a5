// Process-wide MPI plumbing shared by the mpi and nccl backends.
//
// Threading: loom initialises MPI with MPI_THREAD_SERIALIZED and makes every MPI call of its own
// under one process-wide mutex (MpiMutex). Each call is short: waits never block inside MPI but
// poll non-blocking requests with MPI_Test between short sleeps (MPI_Wait has no timeout). So
// any thread may use a communicator, no thread holds MPI while it waits, and Open MPI is spared
// the internal locking that MPI_THREAD_MULTIPLE costs on every call. A program that initialises
// MPI itself must ask for at least MPI_THREAD_SERIALIZED.
#ifndef LOOM_RUNTIME_MPI_SESSION_H_
#define LOOM_RUNTIME_MPI_SESSION_H_

#include <mpi.h>

#include <string>

#include "absl/functional/function_ref.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "runtime/dtype.h"

namespace loom {

// Initialises MPI (MPI_THREAD_SERIALIZED) unless already initialised, in which case it checks the
// thread level. When loom initialised MPI, MPI_Finalize runs at process exit.
absl::Status EnsureMpiInitialized();

// Guards every MPI call loom makes.
absl::Mutex& MpiMutex();

// Ends every process of the job now (MPI_Abort on MPI_COMM_WORLD, which makes mpirun or srun
// kill the others) when MPI is initialised and not yet finalised; does nothing otherwise. For a
// process whose run failed: a timed-out operation may still be outstanding on a lost or hung
// peer, and MPI_Finalize at exit would wait for it forever.
void AbortMpiJob(int exit_code);

// The text MPI gives for an error code. Takes MpiMutex: call it without holding it.
std::string MpiErrorText(int code);

// bf16 has no MPI type and travels as 16-bit integers (loom reduces it itself).
MPI_Datatype MpiDatatype(DataType type);

// Calls `poll` until it returns true (then returns true) or `deadline` passes (then false; `poll`
// has run at least once). Spins briefly, then polls with a yield of the core between polls for
// up to 20 ms, then sleeps for growing intervals up to 100 us. MPI's non-blocking collectives
// advance only inside MPI calls, so a wait keeps polling for as long as a large operation
// typically takes (sleeping between polls halved all-reduce bandwidth); yielding leaves the
// cores to working ranks when ranks outnumber cores, and long waits (a slow peer) back off.
bool PollUntil(absl::Time deadline, absl::FunctionRef<bool()> poll);

}  // namespace loom

#endif  // LOOM_RUNTIME_MPI_SESSION_H_
