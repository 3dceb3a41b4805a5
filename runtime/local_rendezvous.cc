#include "runtime/local_rendezvous.h"

#include <cstring>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "runtime/reduce.h"

namespace loom {

struct LocalRendezvous::Slot {
  explicit Slot(int members) : members(members), calls(static_cast<size_t>(members), nullptr) {}

  const int members;
  absl::Mutex mu;
  // Each member's call, valid from its arrival until it leaves Run.
  std::vector<const CollectiveCall*> calls ABSL_GUARDED_BY(mu);
  int arrived ABSL_GUARDED_BY(mu) = 0;
  int synced[2] ABSL_GUARDED_BY(mu) = {0, 0};  // members past each phase of the work
  int left ABSL_GUARDED_BY(mu) = 0;
  // Why the collective can no longer complete; each member prefixes its own description.
  absl::StatusCode failure_code ABSL_GUARDED_BY(mu) = absl::StatusCode::kOk;
  std::string failure ABSL_GUARDED_BY(mu);

  // Waits, without deadline, until every member has finished `phase` of the work.
  void Sync(int phase) {
    absl::MutexLock lock(&mu);
    ++synced[phase];
    auto all_done = [this, phase]()
                        ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) { return synced[phase] == members; };
    mu.Await(absl::Condition(&all_done));
  }

  // Marks the member as gone; true for the last one, which removes the slot.
  bool Leave() {
    absl::MutexLock lock(&mu);
    return ++left == members;
  }
};

namespace {

// Elements [begin, end) of `count` split evenly over `parts`: part `i`.
std::pair<size_t, size_t> Share(size_t count, int parts, int i) {
  const auto p = static_cast<size_t>(parts);
  const auto k = static_cast<size_t>(i);
  return {count * k / p, count * (k + 1) / p};
}

void Copy(void* dst, const void* src, size_t bytes) {
  if (bytes > 0 && dst != src) std::memcpy(dst, src, bytes);
}

}  // namespace

std::shared_ptr<LocalRendezvous::Slot> LocalRendezvous::FindOrAddSlot(const Key& key, int members) {
  absl::MutexLock lock(&mu_);
  std::shared_ptr<Slot>& slot = slots_[key];
  if (slot == nullptr) slot = std::make_shared<Slot>(members);
  return slot;
}

void LocalRendezvous::RemoveSlot(const Key& key) {
  absl::MutexLock lock(&mu_);
  slots_.erase(key);
}

absl::Status LocalRendezvous::Run(const CollectiveCall& call, uint64_t sequence,
                                  absl::Time deadline, absl::Duration timeout) {
  const Group& group = *call.group;
  const int n = group.size();
  const int me = call.index;
  const Key key{group.ranks(), sequence};
  std::shared_ptr<Slot> slot = FindOrAddSlot(key, n);
  std::vector<const CollectiveCall*> calls;

  // Arrival: check the call against a member already present, then wait for all members.
  {
    absl::MutexLock lock(&slot->mu);
    if (slot->failure_code == absl::StatusCode::kOk) {
      for (int j = 0; j < n; ++j) {
        const CollectiveCall* other = slot->calls[static_cast<size_t>(j)];
        if (other == nullptr) continue;
        const auto mine = call.Signature();
        const auto theirs = other->Signature();
        for (size_t f = 0; f < mine.size(); ++f) {
          if (mine[f] != theirs[f]) {
            slot->failure_code = absl::StatusCode::kInvalidArgument;
            slot->failure = absl::StrCat("members disagree on the ", kSignatureFields[f], ": rank ",
                                         group.world_rank(j), " called ", other->what, " but rank ",
                                         group.world_rank(me), " called ", call.what);
            break;
          }
        }
        break;
      }
    }
    if (slot->failure_code == absl::StatusCode::kOk) {
      slot->calls[static_cast<size_t>(me)] = &call;
      ++slot->arrived;
      auto ready = [&slot]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(slot->mu) {
        return slot->arrived == slot->members || slot->failure_code != absl::StatusCode::kOk;
      };
      slot->mu.AwaitWithDeadline(absl::Condition(&ready), deadline);
      if (slot->arrived < n && slot->failure_code == absl::StatusCode::kOk) {
        std::vector<int> missing;
        for (int j = 0; j < n; ++j) {
          if (slot->calls[static_cast<size_t>(j)] == nullptr) {
            missing.push_back(group.world_rank(j));
          }
        }
        slot->failure_code = absl::StatusCode::kDeadlineExceeded;
        slot->failure = absl::StrFormat(
            "timed out (timeout %s): rank(s) %s never joined; the members of a group must make "
            "the same collective calls on it in the same order",
            absl::FormatDuration(timeout), absl::StrJoin(missing, " "));
      }
    }
    if (slot->failure_code != absl::StatusCode::kOk) {
      slot->calls[static_cast<size_t>(me)] = nullptr;
      // Lock order is always slot, then the slot table; nothing takes them the other way round.
      if (++slot->left == n) RemoveSlot(key);
      return absl::Status(slot->failure_code, absl::StrCat(call.what, ": ", slot->failure));
    }
    calls = slot->calls;
  }

  // Everyone is here and stays until the last Sync; buffers of all members are readable.
  const CollectiveCall& mine = call;
  auto member = [&calls](int j) -> const CollectiveCall& { return *calls[static_cast<size_t>(j)]; };
  const size_t elem = DataTypeSize(call.recv.type());
  switch (call.kind) {
    case CollectiveKind::kAllReduce: {
      // Reduce-scatter then all-gather through shared memory: member i reduces share i.
      std::vector<const void*> inputs;
      for (int j = 0; j < n; ++j) inputs.push_back(member(j).recv.data());
      const size_t count = mine.recv.count();
      const auto [begin, end] = Share(count, n, me);
      ReduceInOrder(mine.recv.type(), mine.op, inputs, mine.recv.data(), begin, end);
      slot->Sync(0);
      for (int j = 0; j < n; ++j) {
        if (j == me) continue;
        const auto [b, e] = Share(count, n, j);
        Copy(mine.recv.Slice(b, e - b).data(), member(j).recv.Slice(b, e - b).data(),
             (e - b) * elem);
      }
      slot->Sync(1);
      break;
    }
    case CollectiveKind::kAllGather:
    case CollectiveKind::kAllGatherV: {
      size_t offset = 0;
      for (int j = 0; j < n; ++j) {
        const ConstBufferView& send = member(j).send;
        Copy(mine.recv.Slice(offset, send.count()).data(), send.data(), send.bytes());
        offset += send.count();
      }
      slot->Sync(0);
      break;
    }
    case CollectiveKind::kReduceScatter: {
      const size_t block = mine.recv.count();
      std::vector<const void*> inputs;
      for (int j = 0; j < n; ++j) {
        inputs.push_back(member(j).send.Slice(static_cast<size_t>(me) * block, block).data());
      }
      // The output is read from offset 0 of each input block, hence the rebased range.
      ReduceInOrder(mine.recv.type(), mine.op, inputs, mine.recv.data(), 0, block);
      slot->Sync(0);
      break;
    }
    case CollectiveKind::kBroadcast: {
      if (me != mine.root) {
        Copy(mine.recv.data(), member(mine.root).recv.data(), mine.recv.bytes());
      }
      slot->Sync(0);
      break;
    }
    case CollectiveKind::kBarrier:
      break;
  }
  if (slot->Leave()) RemoveSlot(key);
  return absl::OkStatus();
}

}  // namespace loom
