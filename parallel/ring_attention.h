// Ring self-attention: each member keeps its queries while the K/V blocks of all members travel
// the ring (member i sends to i+1 and receives from i-1, in group order). At step s a member
// holds the block of member (i - s) mod c and folds its partial (out, lse) into the running
// result with AttentionMerge (fp32, stable log-sum-exp). The backward sends K/V around again;
// each block's dK/dV accumulator (fp32) follows it one hop behind and arrives home after a full
// turn, while dQ stays local and uses the merged LSE of the forward.
//
// Communication hides behind compute: the next step's K/V exchange is posted before the current
// step's kernel call and waited after it, and a dK/dV accumulator is received while the next
// block is computed into scratch, then added and passed on. A step in which no query of this
// member may see any key of the block (different documents, or every key later) is not computed.
//
// Messages use tags `tag` (K/V) and `tag + 1` (dK/dV): rings that share a rank need distinct tags.
// Every wait has the communicator's timeout; a failure names the step and the peer.
#ifndef LOOM_PARALLEL_RING_ATTENTION_H_
#define LOOM_PARALLEL_RING_ATTENTION_H_

#include <memory>
#include <vector>

#include "absl/status/statusor.h"
#include "parallel/context_parallel_attention.h"

namespace loom {

class RingAttention : public ContextParallelAttention {
 public:
  // Collective over `group` (see ContextParallelAttention); `spans` are this member's tokens and
  // must stay valid while the object is used.
  static absl::StatusOr<std::unique_ptr<RingAttention>> Create(Communicator& comm,
                                                               const Group& group,
                                                               const AttentionShape& shape,
                                                               const TokenSpans& spans, int tag);
  // The same without messages, when every member's tokens are known (GroupTokens::FromMembers):
  // rings planned per step need no collective to start.
  static absl::StatusOr<std::unique_ptr<RingAttention>> Create(Communicator& comm,
                                                               const Group& group,
                                                               const AttentionShape& shape,
                                                               GroupTokens tokens, int tag);

  absl::Status Forward(float* out, float* lse, const float* q, const float* k,
                       const float* v) override;
  absl::Status Backward(float* dq, float* dk, float* dv, const float* dout, const float* q,
                        const float* k, const float* v, const float* lse,
                        const float* delta) override;

  // Ring steps whose kernel call was skipped because the block was fully masked, over all
  // Forward and Backward calls so far.
  int skipped_steps() const { return skipped_steps_; }

 private:
  RingAttention(Communicator& comm, Group group, const AttentionShape& shape, GroupTokens tokens,
                int tag);
  // Member whose block this member holds at ring step s.
  int OriginAt(int step) const;
  // Elements of one member's K (or V, dK, dV).
  size_t KvElements(int member) const;

  Communicator& comm_;
  Group group_;
  AttentionShape shape_;
  GroupTokens tokens_;
  int tag_;
  int next_;  // world ranks of the ring neighbours
  int prev_;
  int skipped_steps_ = 0;
};

}  // namespace loom

#endif  // LOOM_PARALLEL_RING_ATTENTION_H_
