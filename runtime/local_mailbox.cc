#include "runtime/local_mailbox.h"

#include <cstring>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace loom {
namespace {

// Copies a matched send into its receive (or reports a size mismatch to both) and completes both.
void Complete(LocalTransfer& send, LocalTransfer& recv) {
  if (send.type != recv.type || send.count != recv.count) {
    send.status = absl::InvalidArgumentError(
        absl::StrFormat("%s: size mismatch: rank %d posted a receive for %s x %d", send.what,
                        recv.dst, DataTypeName(recv.type), recv.count));
    recv.status = absl::InvalidArgumentError(
        absl::StrFormat("%s: size mismatch: rank %d sent %s x %d", recv.what, send.src,
                        DataTypeName(send.type), send.count));
  } else if (send.count > 0) {
    std::memcpy(recv.recv_data, send.send_data, send.count * DataTypeSize(send.type));
  }
  send.done.Notify();
  recv.done.Notify();
}

}  // namespace

LocalMailboxes::LocalMailboxes(int world_size) {
  for (int r = 0; r < world_size; ++r) boxes_.push_back(std::make_unique<Box>());
}

void LocalMailboxes::Post(const std::shared_ptr<LocalTransfer>& transfer) {
  Box& box = *boxes_[static_cast<size_t>(transfer->dst)];
  std::shared_ptr<LocalTransfer> match;
  {
    absl::MutexLock lock(&box.mu);
    auto& counterparts = transfer->is_send ? box.recvs : box.sends;
    for (auto it = counterparts.begin(); it != counterparts.end(); ++it) {
      if ((*it)->src == transfer->src && (*it)->tag == transfer->tag) {
        match = std::move(*it);
        counterparts.erase(it);
        break;
      }
    }
    if (match == nullptr) {
      (transfer->is_send ? box.sends : box.recvs).push_back(transfer);
      return;
    }
  }
  // The copy runs outside the lock so that other messages to this rank are not held up by it.
  if (transfer->is_send) {
    Complete(*transfer, *match);
  } else {
    Complete(*match, *transfer);
  }
}

bool LocalMailboxes::Withdraw(const LocalTransfer& transfer) {
  Box& box = *boxes_[static_cast<size_t>(transfer.dst)];
  absl::MutexLock lock(&box.mu);
  auto& queue = transfer.is_send ? box.sends : box.recvs;
  for (auto it = queue.begin(); it != queue.end(); ++it) {
    if (it->get() == &transfer) {
      queue.erase(it);
      return true;
    }
  }
  return false;
}

LocalRequest::LocalRequest(std::shared_ptr<LocalTransfer> transfer, LocalMailboxes* mailboxes,
                           absl::Duration timeout)
    : Request(timeout), transfer_(std::move(transfer)), mailboxes_(mailboxes), timeout_(timeout) {}

LocalRequest::~LocalRequest() {
  if (withdrawn_.has_value() || transfer_->done.HasBeenNotified()) return;
  if (!mailboxes_->Withdraw(*transfer_)) transfer_->done.WaitForNotification();
}

absl::Status LocalRequest::WaitUntil(absl::Time deadline) {
  if (withdrawn_.has_value()) return *withdrawn_;
  if (transfer_->done.WaitForNotificationWithDeadline(deadline)) return transfer_->status;
  if (!mailboxes_->Withdraw(*transfer_)) {
    // Matched just now: the peer is copying, which takes no waiting on anyone else.
    transfer_->done.WaitForNotification();
    return transfer_->status;
  }
  const LocalTransfer& t = *transfer_;
  withdrawn_ = absl::DeadlineExceededError(
      absl::StrFormat("%s: timed out (timeout %s): rank %d posted no matching %s with tag %d",
                      t.what, absl::FormatDuration(timeout_), t.is_send ? t.dst : t.src,
                      t.is_send ? "receive" : "send", t.tag));
  return *withdrawn_;
}

bool LocalRequest::Test() { return withdrawn_.has_value() || transfer_->done.HasBeenNotified(); }

}  // namespace loom
