// The whole model with context parallelism: a set of documents spread over a Group by zigzag
// sharding, each member running embedding, layers (attention through a ContextParallelAttention
// strategy, plugged into the model's AttentionFn hook), head and backward on its own tokens; then
// gradients and loss summed over the group. The result equals single-rank
// Model::ForwardBackward on the same documents, up to fp32 reassociation. The step planner builds
// on this; here it is the harness that proves the equivalence.
#ifndef LOOM_PARALLEL_CONTEXT_PARALLEL_H_
#define LOOM_PARALLEL_CONTEXT_PARALLEL_H_

#include <cstdint>
#include <memory>
#include <vector>

#include "absl/status/statusor.h"
#include "parallel/context_parallel_attention.h"
#include "parallel/zigzag.h"
#include "runtime/communicator.h"
#include "runtime/group.h"
#include "src/model.h"
#include "src/token_batch.h"

namespace loom {

enum class CpStrategy { kRing, kAllGather };

// This member's attention under `strategy` (a collective over the group). `tag` (and tag + 1) is
// used by the ring only.
absl::StatusOr<std::unique_ptr<ContextParallelAttention>> MakeContextParallelAttention(
    CpStrategy strategy, Communicator& comm, const Group& group, const AttentionShape& shape,
    const TokenSpans& spans, int tag);

// This member's tokens of TokenBatch::FromDocuments(documents) (targets, document ids and
// in-document positions kept).
TokenBatch MemberBatch(const TokenBatch& global, const MemberShard& shard);

class ContextParallelRunner {
 public:
  ContextParallelRunner(Communicator& comm, Group group, CpStrategy strategy, int tag)
      : comm_(comm), group_(std::move(group)), strategy_(strategy), tag_(tag) {}

  // Runs one step on `model` (every member's model holds the same weights) and returns the sum of
  // the token losses over all documents. Overwrites model.grads() with the gradient of
  // (that sum * grad_scale), identical on every member. Every member of the group calls it with
  // the same documents; each must receive at least one token (at least 2c tokens in a spread
  // document guarantee that).
  absl::StatusOr<double> ForwardBackward(Model& model,
                                         const std::vector<std::vector<int32_t>>& documents,
                                         float grad_scale);

 private:
  Communicator& comm_;
  Group group_;
  CpStrategy strategy_;
  int tag_;
};

}  // namespace loom

#endif  // LOOM_PARALLEL_CONTEXT_PARALLEL_H_
