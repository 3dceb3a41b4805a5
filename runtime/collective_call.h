// One rank's view of one collective operation, checked and described by Communicator before a
// backend runs it. Every member of the group must make the same call: the signature holds the
// fields they must agree on, so backends can turn a disagreement into an error instead of a hang or
// a corrupted buffer.
#ifndef LOOM_RUNTIME_COLLECTIVE_CALL_H_
#define LOOM_RUNTIME_COLLECTIVE_CALL_H_

#include <array>
#include <cstdint>
#include <span>
#include <string>

#include "absl/strings/string_view.h"
#include "runtime/buffer_view.h"
#include "runtime/dtype.h"
#include "runtime/group.h"

namespace loom {

enum class CollectiveKind {
  kAllReduce,
  kAllGather,
  kAllGatherV,
  kReduceScatter,
  kBroadcast,
  kBarrier
};

absl::string_view CollectiveName(CollectiveKind kind);

struct CollectiveCall {
  CollectiveKind kind = CollectiveKind::kBarrier;
  const Group* group = nullptr;
  int index = 0;  // this rank's position in the group
  // What this rank contributes. AllReduce and Broadcast work in place: send and recv are the same
  // memory.
  ConstBufferView send;
  BufferView recv;
  ReduceOp op = ReduceOp::kSum;
  int root = 0;  // Broadcast: group position of the rank whose data everyone receives
  // AllGatherV: elements contributed by each member, in group order.
  std::span<const size_t> counts;
  // AllGather(V) with send being this rank's own slot of recv, or ReduceScatter with recv being
  // this rank's own block of send.
  bool in_place = false;
  // "AllReduce(sum, fp32 x 1024) over group [0 1 2] on rank 1", for error messages.
  std::string what;

  // Elements each member sends for AllGather, or receives for ReduceScatter; the buffer size for
  // AllReduce and Broadcast.
  size_t block_count() const;
  // kind, element type, reduce op, root and a per-member size (a digest of `counts` for
  // AllGatherV).
  std::array<int64_t, 5> Signature() const;
};

// Names the fields of Signature() for messages.
inline constexpr std::array<absl::string_view, 5> kSignatureFields = {
    "operation", "element type", "reduce op", "root", "element count"};

}  // namespace loom

#endif  // LOOM_RUNTIME_COLLECTIVE_CALL_H_
