// Sharding of packed documents over the members of a context-parallel ring: which tokens each
// member holds, with their document ids and in-document positions (what masking and RoPE need),
// and the map back to the global packed order.
//
// Zigzag: a document spread over c members is cut into 2c pieces whose lengths differ by at most
// one (so any length works, and pieces are empty when the document is shorter than 2c); member i
// holds pieces i and 2c-1-i. Under a causal mask the early piece is cheap and the late one
// expensive, so every member gets about the same attention work. A contiguous split (member i
// holds the i-th of c equal ranges) is kept as the baseline the balance benchmark compares with.
// A short document may instead stay whole on one member, packed beside pieces of long ones.
#ifndef LOOM_PARALLEL_ZIGZAG_H_
#define LOOM_PARALLEL_ZIGZAG_H_

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"
#include "src/kernels/attention.h"

namespace loom {

enum class SplitKind { kZigzag, kContiguous };

// One member's tokens in its local order: global[t] is the index of local token t in the global
// packed order (documents back to back, document d has id d).
struct MemberShard {
  std::vector<int32_t> global;
  std::vector<int32_t> doc;
  std::vector<int32_t> pos;

  int size() const { return static_cast<int>(global.size()); }
  TokenSpans spans() const { return TokenSpans{doc.data(), pos.data(), size()}; }
};

struct Sharding {
  std::vector<MemberShard> members;
  int64_t total_tokens = 0;
};

// Placement of a document: spread over every member, or whole on one member (its index).
inline constexpr int kSpreadOverGroup = -1;

// Shards documents of the given lengths over `group_size` members. `owner`, when not empty, has
// one entry per document: kSpreadOverGroup or the member that keeps it whole. Fails on a
// non-positive group size, a negative length or an owner out of range.
absl::StatusOr<Sharding> ShardDocuments(const std::vector<int32_t>& lengths, int group_size,
                                        SplitKind kind, const std::vector<int>& owner = {});

// Causally visible (query, key) pairs of one member's queries against all keys of their
// documents: sum over its tokens of (pos + 1). Attention FLOPs are proportional to it.
int64_t VisiblePairs(const MemberShard& shard);

// Rows of a [total_tokens, width] global array that `shard` holds, in local order.
std::vector<float> GatherRows(const float* global, int width, const MemberShard& shard);
// Writes local rows back to their places in a [total_tokens, width] global array.
void ScatterRows(const float* local, int width, const MemberShard& shard, float* global);

}  // namespace loom

#endif  // LOOM_PARALLEL_ZIGZAG_H_
