// All-gather context-parallel attention: every member gathers the K/V of the whole group
// (AllGatherV), computes its queries against all keys with one kernel call, and in the backward
// returns each member's dK/dV share with a reduce-scatter. Fewer, larger messages than the ring
// and nothing to overlap: the better choice for short documents on small groups, where the ring's
// per-step latency dominates; it holds the whole group's K/V at once.
//
// The runtime's ReduceScatter takes equal blocks, and members hold different token counts, so
// every member's dK|dV block is padded with zeros to the largest member's size; the padding sums
// to zero and is dropped on arrival (it costs (max - mean) tokens' worth of traffic per member).
#ifndef LOOM_PARALLEL_ALLGATHER_ATTENTION_H_
#define LOOM_PARALLEL_ALLGATHER_ATTENTION_H_

#include <memory>
#include <vector>

#include "absl/status/statusor.h"
#include "parallel/context_parallel_attention.h"

namespace loom {

class AllGatherAttention : public ContextParallelAttention {
 public:
  // Collective over `group`; `spans` are this member's tokens.
  static absl::StatusOr<std::unique_ptr<AllGatherAttention>> Create(Communicator& comm,
                                                                    const Group& group,
                                                                    const AttentionShape& shape,
                                                                    const TokenSpans& spans);

  absl::Status Forward(float* out, float* lse, const float* q, const float* k,
                       const float* v) override;
  absl::Status Backward(float* dq, float* dk, float* dv, const float* dout, const float* q,
                        const float* k, const float* v, const float* lse,
                        const float* delta) override;

 private:
  AllGatherAttention(Communicator& comm, Group group, const AttentionShape& shape,
                     GroupTokens tokens);
  // The group's K and V, each [all tokens, n_kv_heads, D] in group order.
  absl::Status GatherKv(const float* k, const float* v, std::vector<float>& all_k,
                        std::vector<float>& all_v);
  size_t RowElements() const {
    return static_cast<size_t>(shape_.n_kv_heads) * shape_.head_dim;
  }

  Communicator& comm_;
  Group group_;
  AttentionShape shape_;
  GroupTokens tokens_;
  std::vector<size_t> kv_counts_;  // K (or V) elements of each member
};

}  // namespace loom

#endif  // LOOM_PARALLEL_ALLGATHER_ATTENTION_H_
