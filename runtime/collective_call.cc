#include "runtime/collective_call.h"

namespace loom {

absl::string_view CollectiveName(CollectiveKind kind) {
  switch (kind) {
    case CollectiveKind::kAllReduce:
      return "AllReduce";
    case CollectiveKind::kAllGather:
      return "AllGather";
    case CollectiveKind::kAllGatherV:
      return "AllGatherV";
    case CollectiveKind::kReduceScatter:
      return "ReduceScatter";
    case CollectiveKind::kBroadcast:
      return "Broadcast";
    case CollectiveKind::kBarrier:
      return "Barrier";
  }
  return "?";
}

size_t CollectiveCall::block_count() const {
  switch (kind) {
    case CollectiveKind::kAllGather:
    case CollectiveKind::kAllGatherV:
      return send.count();
    case CollectiveKind::kReduceScatter:
    case CollectiveKind::kAllReduce:
    case CollectiveKind::kBroadcast:
      return recv.count();
    case CollectiveKind::kBarrier:
      return 0;
  }
  return 0;
}

std::array<int64_t, 5> CollectiveCall::Signature() const {
  int64_t size = static_cast<int64_t>(block_count());
  if (kind == CollectiveKind::kAllGatherV) {
    // FNV-1a over the counts: members passing different count lists disagree on the digest.
    uint64_t digest = 1469598103934665603ull;
    for (size_t c : counts) {
      digest = (digest ^ static_cast<uint64_t>(c)) * 1099511628211ull;
    }
    size = static_cast<int64_t>(digest >> 1);
  }
  const bool reduces = kind == CollectiveKind::kAllReduce || kind == CollectiveKind::kReduceScatter;
  const bool has_data = kind != CollectiveKind::kBarrier;
  return {static_cast<int64_t>(kind), has_data ? static_cast<int64_t>(send.type()) : 0,
          reduces ? static_cast<int64_t>(op) : 0,
          kind == CollectiveKind::kBroadcast ? static_cast<int64_t>(root) : 0, size};
}

}  // namespace loom
