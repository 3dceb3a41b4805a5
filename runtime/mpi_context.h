// The MPI side of the mpi and nccl backends: this process's place in MPI_COMM_WORLD, private
// duplicates of it, communicators for collectives over groups, and waiting on MPI requests with
// a deadline.
//
// A timeout that leaves an MPI operation outstanding (a send or collective cannot be cancelled)
// breaks the context: the operation may still write its buffer, so every later call fails with
// FAILED_PRECONDITION naming the first failure, and the job should end. A receive that times out
// is cancelled cleanly and breaks nothing.
#ifndef LOOM_RUNTIME_MPI_CONTEXT_H_
#define LOOM_RUNTIME_MPI_CONTEXT_H_

#include <mpi.h>

#include <map>
#include <memory>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/functional/function_ref.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "runtime/collective_call.h"
#include "runtime/group.h"
#include "runtime/world.h"

namespace loom {

class MpiContext {
 public:
  // Collective over MPI_COMM_WORLD (every rank calls it); initialises MPI when needed.
  static absl::StatusOr<std::unique_ptr<MpiContext>> Create(absl::Duration timeout);
  ~MpiContext();
  MpiContext(const MpiContext&) = delete;
  MpiContext& operator=(const MpiContext&) = delete;

  // Rank and size from MPI; local rank, node and their counts from the hostnames of all ranks.
  const WorldInfo& world() const { return world_; }
  absl::Duration timeout() const { return timeout_; }
  int max_tag() const { return max_tag_; }
  // A duplicate of MPI_COMM_WORLD for point-to-point messages.
  MPI_Comm p2p_comm() const { return p2p_comm_; }

  // OK, or FAILED_PRECONDITION for `what` once the context is broken.
  absl::Status CheckUsable(absl::string_view what) const;
  // Records the first reason the context became unusable.
  void Break(const absl::Status& why);
  // Keeps `memory` alive with the context: an abandoned MPI operation may still touch it.
  void Abandon(std::shared_ptr<void> memory);

  // Starts a non-blocking MPI operation (`start` returns an MPI error code) and waits for it until
  // `deadline`. A failure to start or complete is INTERNAL; a timeout is DEADLINE_EXCEEDED with
  // `on_timeout` as reason and breaks the context, since the operation stays outstanding: then
  // `scratch` (memory the operation uses besides the caller's buffers) is kept alive with the
  // context. The messages start with `what`.
  absl::Status Run(absl::string_view what, absl::Time deadline, absl::string_view on_timeout,
                   absl::FunctionRef<int(MPI_Request*)> start,
                   std::shared_ptr<void> scratch = nullptr);
  // As Run, for several operations that `start` appends to `requests` (waits for all).
  absl::Status RunAll(absl::string_view what, absl::Time deadline, absl::string_view on_timeout,
                      absl::FunctionRef<int(std::vector<MPI_Request>& requests)> start,
                      std::shared_ptr<void> scratch = nullptr);
  // Polls `request` until it completes (true) or `deadline` passes (false); `rc` gets the MPI
  // result of the completing test.
  bool Poll(MPI_Request& request, absl::Time deadline, MPI_Status* status, int* rc);

  // The communicator for collectives over `group` (this rank at position `index`): the world
  // duplicate for the world in order, otherwise made on first use and cached by the ordered rank
  // list. Making one costs a timed handshake among the members (so that a missing member is an
  // error, not a hang in MPI_Comm_create_group) and MPI_Comm_create_group, which involves the
  // members only: ranks outside the group do not take part.
  absl::StatusOr<MPI_Comm> GroupComm(const Group& group, int index, absl::Time deadline);

  // One small MPI all-reduce (max of each field and of its negation) over `comm`, so every member
  // learns whether all passed the same call.Signature(); INVALID_ARGUMENT names the field.
  absl::Status CheckAgreement(MPI_Comm comm, const CollectiveCall& call, absl::Time deadline);

 private:
  explicit MpiContext(absl::Duration timeout) : timeout_(timeout) {}
  absl::Status Initialize();
  absl::Status ResolveHosts(absl::Time deadline);
  absl::Status Handshake(const Group& group, int index, int tag, absl::Time deadline);

  WorldInfo world_;
  absl::Duration timeout_;
  int max_tag_ = 32767;
  MPI_Comm p2p_comm_ = MPI_COMM_NULL;
  MPI_Comm control_comm_ = MPI_COMM_NULL;     // handshakes and bootstrap messages
  MPI_Comm collective_comm_ = MPI_COMM_NULL;  // collectives over the world; parent of groups

  mutable absl::Mutex mu_;
  absl::Status broken_ ABSL_GUARDED_BY(mu_);
  std::map<std::vector<int>, MPI_Comm> group_comms_ ABSL_GUARDED_BY(mu_);
  // Memory of operations abandoned at a timeout, which MPI may still touch.
  std::vector<std::shared_ptr<void>> abandoned_ ABSL_GUARDED_BY(mu_);
};

}  // namespace loom

#endif  // LOOM_RUNTIME_MPI_CONTEXT_H_
