// Point-to-point matching for the local backend: ranks are threads of one process, so a message is
// one memcpy from the sender's buffer straight into the receiver's, made by whichever side arrives
// second. Sends are never buffered (they complete when matched), which is the strictest reading of
// the Communicator contract: code that would deadlock on MPI with large messages deadlocks here
// at every size, and fails within the timeout.
#ifndef LOOM_RUNTIME_LOCAL_MAILBOX_H_
#define LOOM_RUNTIME_LOCAL_MAILBOX_H_

#include <deque>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/time.h"
#include "runtime/communicator.h"
#include "runtime/dtype.h"

namespace loom {

// One posted send or receive.
struct LocalTransfer {
  bool is_send = false;
  int src = 0;
  int dst = 0;
  int tag = 0;
  DataType type = DataType::kFloat32;
  size_t count = 0;
  const void* send_data = nullptr;
  void* recv_data = nullptr;
  std::string what;     // Communicator::DescribeP2p of the posting call
  absl::Status status;  // written before `done` is notified
  absl::Notification done;
};

class LocalMailboxes {
 public:
  explicit LocalMailboxes(int world_size);

  // Matches the transfer with the oldest posted counterpart of the same (source, destination,
  // tag), copying the data at once, or queues it for the counterpart to find.
  void Post(const std::shared_ptr<LocalTransfer>& transfer);
  // Removes a transfer no peer has matched; false when a peer already matched it (then it is
  // complete or about to be, with no waiting on anyone).
  bool Withdraw(const LocalTransfer& transfer);

 private:
  // Queued unmatched transfers destined for one rank.
  struct Box {
    absl::Mutex mu;
    std::deque<std::shared_ptr<LocalTransfer>> sends ABSL_GUARDED_BY(mu);
    std::deque<std::shared_ptr<LocalTransfer>> recvs ABSL_GUARDED_BY(mu);
  };
  std::vector<std::unique_ptr<Box>> boxes_;  // by destination rank
};

// A request of the local backend over one transfer.
class LocalRequest final : public Request {
 public:
  LocalRequest(std::shared_ptr<LocalTransfer> transfer, LocalMailboxes* mailboxes,
               absl::Duration timeout);
  ~LocalRequest() override;

  absl::Status WaitUntil(absl::Time deadline) override;
  bool Test() override;

 private:
  std::shared_ptr<LocalTransfer> transfer_;
  LocalMailboxes* mailboxes_;
  absl::Duration timeout_;
  // Set when a wait gave up and withdrew the transfer: the final outcome.
  std::optional<absl::Status> withdrawn_;
};

}  // namespace loom

#endif  // LOOM_RUNTIME_LOCAL_MAILBOX_H_
