// The Communicator: how ranks exchange messages and run collectives, whatever carries them. One
// small interface with three backends behind it: `local` (ranks as threads of one process), `mpi`
// (a process per rank, CPU buffers) and `nccl` (a process per rank, GPU buffers).
//
// Ranks are always world ranks. Point-to-point messages travel on the world communicator, so a
// ring of any ranks in any order needs only a Group made locally. Collectives run over a Group:
// every member calls the same collectives on that group in the same order.
//
// Every blocking call waits at most timeout() for its peers and then fails with
// DEADLINE_EXCEEDED, naming the operation, tag and peer (or the members that did not arrive). A
// send and its receive must agree on the size, and members of a collective on its arguments;
// disagreement is INVALID_ARGUMENT, never a truncated or corrupted buffer.
//
// A send is only guaranteed to complete once its receive is posted. MPI buffers small messages
// and lets their sends complete early; the local backend never does, so a program that relies on
// buffering fails in local tests instead of hanging at scale with large messages. Rings post
// their receives and sends together through Exchange.
//
// A Communicator may be used from several threads at once (a rank's compute and communication
// threads); collectives on one group must still be issued in one order.
#ifndef LOOM_RUNTIME_COMMUNICATOR_H_
#define LOOM_RUNTIME_COMMUNICATOR_H_

#include <memory>
#include <span>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "runtime/buffer_view.h"
#include "runtime/collective_call.h"
#include "runtime/config.h"
#include "runtime/dtype.h"
#include "runtime/group.h"
#include "runtime/world.h"

namespace loom {

// A posted, non-blocking send or receive. Destroying a request that has not completed withdraws it
// if no peer has matched it yet, and otherwise waits (at most the timeout) for the transfer to
// finish, so a buffer is never touched after its request is gone.
class Request {
 public:
  virtual ~Request() = default;
  Request(const Request&) = delete;
  Request& operator=(const Request&) = delete;

  // Waits for completion until `deadline`. Returns the transfer's outcome; DEADLINE_EXCEEDED
  // names the operation, peer and tag.
  virtual absl::Status WaitUntil(absl::Time deadline) = 0;
  // Whether the transfer has completed (successfully or not); never blocks. Once it returns true,
  // Wait() returns the outcome immediately.
  virtual bool Test() = 0;
  // WaitUntil(now + the communicator's timeout).
  absl::Status Wait() { return WaitUntil(absl::Now() + timeout_); }

 protected:
  explicit Request(absl::Duration timeout) : timeout_(timeout) {}

 private:
  absl::Duration timeout_;
};

// Waits for every request (all share one deadline) and returns the first failure.
absl::Status WaitAll(std::span<const std::unique_ptr<Request>> requests, absl::Time deadline);

struct SendSpec {
  ConstBufferView data;
  int peer = 0;
  int tag = 0;
};

struct RecvSpec {
  BufferView data;
  int peer = 0;
  int tag = 0;
};

class Communicator {
 public:
  virtual ~Communicator() = default;
  Communicator(const Communicator&) = delete;
  Communicator& operator=(const Communicator&) = delete;

  virtual Backend backend() const = 0;
  const WorldInfo& world() const { return world_; }
  int rank() const { return world_.rank; }
  int size() const { return world_.size; }
  const Group& world_group() const { return world_group_; }
  absl::Duration timeout() const { return timeout_; }
  // Tags are in [0, max_tag()].
  int max_tag() const { return max_tag_; }

  // Point to point. Messages from one rank to another with the same tag arrive in posting order;
  // the tag tells apart concurrent streams between the same two ranks (say, two rings).
  absl::StatusOr<std::unique_ptr<Request>> ISend(ConstBufferView data, int peer, int tag);
  absl::StatusOr<std::unique_ptr<Request>> IRecv(BufferView data, int peer, int tag);
  absl::Status Send(ConstBufferView data, int peer, int tag);
  absl::Status Recv(BufferView data, int peer, int tag);
  // Posts every receive and send, then waits for all of them under one deadline: one ring step,
  // or the steps of several rings this rank belongs to.
  absl::Status Exchange(std::span<const SendSpec> sends, std::span<const RecvSpec> recvs);

  // Collectives over `group`, which must contain this rank. Element types of send and recv must
  // match.
  // data <- op over members of data. Reproducible bit for bit from run to run with fixed inputs.
  absl::Status AllReduce(const Group& group, BufferView data, ReduceOp op);
  // recv (send.count() x group size) <- every member's send, in group order. `send` may be this
  // rank's own slot of `recv` (in place).
  absl::Status AllGather(const Group& group, ConstBufferView send, BufferView recv);
  // As AllGather with counts[i] elements from member i; every member passes the same counts.
  absl::Status AllGatherV(const Group& group, ConstBufferView send, BufferView recv,
                          std::span<const size_t> counts);
  // recv (send.count() / group size) <- op over members of this member's block of send. `recv`
  // may be this rank's own block of `send` (in place).
  absl::Status ReduceScatter(const Group& group, ConstBufferView send, BufferView recv,
                             ReduceOp op);
  // data <- the data of world rank `root`, a member of the group.
  absl::Status Broadcast(const Group& group, BufferView data, int root);
  absl::Status Barrier(const Group& group);
  // Creates now whatever the backend keeps for collectives over `group` (an MPI or NCCL
  // communicator), so that its cost is paid at a known point; called by all members.
  absl::Status PrepareGroup(const Group& group);

 protected:
  Communicator(WorldInfo world, absl::Duration timeout, int max_tag);

  // Arguments are checked: peer and tag in range, a null pointer only with a zero count.
  virtual absl::StatusOr<std::unique_ptr<Request>> PostSend(ConstBufferView data, int peer,
                                                            int tag) = 0;
  virtual absl::StatusOr<std::unique_ptr<Request>> PostRecv(BufferView data, int peer, int tag) = 0;
  // Posts all receives, then all sends, and waits for them; backends that must launch a batch as
  // one unit override it.
  virtual absl::Status RunExchange(std::span<const SendSpec> sends,
                                   std::span<const RecvSpec> recvs);
  // `call` is checked against this rank's view: sizes consistent, group valid.
  virtual absl::Status RunCollective(const CollectiveCall& call) = 0;
  virtual absl::Status RunPrepareGroup(const Group& group, int index) = 0;

  // "Send(fp32 x 10 to rank 3, tag 7) on rank 1".
  std::string DescribeP2p(absl::string_view op, DataType type, size_t count, int peer,
                          int tag) const;

 private:
  absl::Status CheckP2p(absl::string_view op, const void* data, size_t count, DataType type,
                        int peer, int tag) const;
  // Checks the group and fills call.group, call.index and call.what.
  absl::Status PrepareCall(const Group& group, CollectiveCall& call) const;
  // PrepareCall, then RunCollective: every public collective ends here.
  absl::Status Collect(const Group& group, CollectiveCall call);

  WorldInfo world_;
  Group world_group_;
  absl::Duration timeout_;
  int max_tag_;
};

}  // namespace loom

#endif  // LOOM_RUNTIME_COMMUNICATOR_H_
