#include "runtime/local_world.h"

#include <climits>
#include <map>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "runtime/local_mailbox.h"
#include "runtime/local_rendezvous.h"

namespace loom {
namespace {

class LocalCommunicator final : public Communicator {
 public:
  LocalCommunicator(WorldInfo world, absl::Duration timeout, LocalMailboxes* mailboxes,
                    LocalRendezvous* rendezvous)
      : Communicator(std::move(world), timeout, INT_MAX),
        mailboxes_(mailboxes),
        rendezvous_(rendezvous) {}

  Backend backend() const override { return Backend::kLocal; }

 protected:
  absl::StatusOr<std::unique_ptr<Request>> PostSend(ConstBufferView data, int peer,
                                                    int tag) override {
    auto transfer = std::make_shared<LocalTransfer>();
    transfer->is_send = true;
    transfer->src = rank();
    transfer->dst = peer;
    transfer->tag = tag;
    transfer->type = data.type();
    transfer->count = data.count();
    transfer->send_data = data.data();
    transfer->what = DescribeP2p("Send", data.type(), data.count(), peer, tag);
    return Post(std::move(transfer));
  }

  absl::StatusOr<std::unique_ptr<Request>> PostRecv(BufferView data, int peer, int tag) override {
    auto transfer = std::make_shared<LocalTransfer>();
    transfer->src = peer;
    transfer->dst = rank();
    transfer->tag = tag;
    transfer->type = data.type();
    transfer->count = data.count();
    transfer->recv_data = data.data();
    transfer->what = DescribeP2p("Recv", data.type(), data.count(), peer, tag);
    return Post(std::move(transfer));
  }

  absl::Status RunCollective(const CollectiveCall& call) override {
    const absl::Time deadline = absl::Now() + timeout();
    return rendezvous_->Run(call, NextSequence(*call.group), deadline, timeout());
  }

  // Threads share memory: a group needs nothing beyond its slot in the rendezvous.
  absl::Status RunPrepareGroup(const Group&, int) override { return absl::OkStatus(); }

 private:
  std::unique_ptr<Request> Post(std::shared_ptr<LocalTransfer> transfer) {
    mailboxes_->Post(transfer);
    return std::make_unique<LocalRequest>(std::move(transfer), mailboxes_, timeout());
  }

  // Numbers this rank's collectives on each group, so members meet in the same slot.
  uint64_t NextSequence(const Group& group) {
    absl::MutexLock lock(&mu_);
    return next_sequence_[group.ranks()]++;
  }

  LocalMailboxes* const mailboxes_;
  LocalRendezvous* const rendezvous_;
  absl::Mutex mu_;
  std::map<std::vector<int>, uint64_t> next_sequence_ ABSL_GUARDED_BY(mu_);
};

}  // namespace

absl::StatusOr<std::unique_ptr<LocalWorld>> LocalWorld::Create(int size, absl::Duration timeout) {
  if (size < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("a local world needs at least one rank, got ", size));
  }
  if (timeout <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError(
        absl::StrCat("timeout must be positive, got ", absl::FormatDuration(timeout)));
  }
  return std::unique_ptr<LocalWorld>(new LocalWorld(size, timeout));
}

LocalWorld::LocalWorld(int size, absl::Duration timeout)
    : mailboxes_(std::make_unique<LocalMailboxes>(size)),
      rendezvous_(std::make_unique<LocalRendezvous>()) {
  const std::string host = HostName();
  for (int r = 0; r < size; ++r) {
    WorldInfo info;
    info.rank = r;
    info.size = size;
    info.local_rank = r;
    info.local_size = size;
    info.node = 0;
    info.num_nodes = 1;
    info.hostname = host;
    info.source = "local";
    communicators_.push_back(std::make_unique<LocalCommunicator>(
        std::move(info), timeout, mailboxes_.get(), rendezvous_.get()));
  }
}

LocalWorld::~LocalWorld() = default;

absl::Status LocalWorld::Run(absl::FunctionRef<absl::Status(Communicator&)> body) {
  std::vector<absl::Status> results(communicators_.size());
  {
    std::vector<std::jthread> threads;
    for (size_t r = 0; r < communicators_.size(); ++r) {
      threads.emplace_back([&, r] { results[r] = body(*communicators_[r]); });
    }
  }
  for (size_t r = 0; r < results.size(); ++r) {
    if (!results[r].ok()) {
      return absl::Status(results[r].code(), absl::StrCat("rank ", r, ": ", results[r].message()));
    }
  }
  return absl::OkStatus();
}

}  // namespace loom
