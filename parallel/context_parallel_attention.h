// Causal attention of one layer whose tokens are spread over the members of a Group (context
// parallelism). Each member passes its own tokens' q, k, v, in the kernel's layout
// (src/kernels/attention.h), and gets exactly what the kernel would give for those query rows and
// key rows on all the group's tokens at once. Strategies differ only in how keys meet queries:
// RingAttention passes K/V blocks around the ring, AllGatherAttention gathers them all.
//
// Objects live for one step (one token layout) and serve every layer: creating one is a
// collective over the group (members exchange token counts and spans once). Every member calls
// Forward and Backward in the same order.
#ifndef LOOM_PARALLEL_CONTEXT_PARALLEL_ATTENTION_H_
#define LOOM_PARALLEL_CONTEXT_PARALLEL_ATTENTION_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "runtime/communicator.h"
#include "runtime/group.h"
#include "src/kernels/attention.h"

namespace loom {

class ContextParallelAttention {
 public:
  virtual ~ContextParallelAttention() = default;

  // q: [T, n_heads, D], k, v: [T, n_kv_heads, D] of this member's T tokens. Writes out
  // [T, n_heads, D] and lse [T, n_heads] as AttentionForward.
  virtual absl::Status Forward(float* out, float* lse, const float* q, const float* k,
                               const float* v) = 0;
  // Accumulates (+=) dq, dk, dv of this member's tokens, given the final lse and delta
  // (AttentionBackwardDelta of the final output), as AttentionBackward.
  virtual absl::Status Backward(float* dq, float* dk, float* dv, const float* dout,
                                const float* q, const float* k, const float* v, const float* lse,
                                const float* delta) = 0;
};

// Every member's token spans, in group order: learnt once per step with two small all-gathers,
// or built without messages where every member already knows them all (from a StepPlan).
class GroupTokens {
 public:
  static absl::StatusOr<GroupTokens> Gather(Communicator& comm, const Group& group,
                                            const TokenSpans& mine);
  // From every member's spans, in group order; `me` is this member's index.
  static GroupTokens FromMembers(int me, const std::vector<TokenSpans>& members);

  int group_size() const { return static_cast<int>(counts_.size()); }
  int me() const { return me_; }
  int count(int member) const { return static_cast<int>(counts_[static_cast<size_t>(member)]); }
  int max_count() const { return max_count_; }
  int64_t total() const { return static_cast<int64_t>(doc_.size()); }
  // Group-order index of member's first token.
  int64_t offset(int member) const { return offsets_[static_cast<size_t>(member)]; }
  const std::vector<size_t>& counts() const { return counts_; }
  TokenSpans spans(int member) const;
  TokenSpans all_spans() const;
  // Whether any of this member's queries may see any key of `member` under the causal mask.
  bool Visible(int member) const { return visible_[static_cast<size_t>(member)]; }

 private:
  int me_ = 0;
  int max_count_ = 0;
  std::vector<size_t> counts_;
  std::vector<int64_t> offsets_;
  std::vector<int32_t> doc_;
  std::vector<int32_t> pos_;
  std::vector<bool> visible_;
};

// The status with `context: ` in front of its message, same code.
absl::Status WithContext(const absl::Status& status, const std::string& context);

}  // namespace loom

#endif  // LOOM_PARALLEL_CONTEXT_PARALLEL_ATTENTION_H_
