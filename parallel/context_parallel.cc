#include "parallel/context_parallel.h"

#include <cstring>
#include <utility>

#include "absl/strings/str_format.h"
#include "parallel/allgather_attention.h"
#include "parallel/ring_attention.h"
#include "src/tensor.h"

namespace loom {
namespace {

// The model's attention hook backed by a context-parallel strategy. The hook cannot return a
// status, so the first failure is kept and later calls do nothing (their peers then fail on
// their own timeouts); the runner reports it after the step.
class HookedAttention : public AttentionFn {
 public:
  explicit HookedAttention(ContextParallelAttention& attention) : attention_(attention) {}

  void Forward(int layer, float* out, float* lse, const float* q, const float* k, const float* v,
               const TokenSpans&) override {
    if (!status_.ok()) return;
    status_ = WithContext(attention_.Forward(out, lse, q, k, v),
                          absl::StrFormat("layer %d attention forward", layer));
  }
  void Backward(int layer, float* dq, float* dk, float* dv, const float* dout, const float* q,
                const float* k, const float* v, const float* lse, const float* delta,
                const TokenSpans&) override {
    if (!status_.ok()) return;
    status_ = WithContext(attention_.Backward(dq, dk, dv, dout, q, k, v, lse, delta),
                          absl::StrFormat("layer %d attention backward", layer));
  }
  const absl::Status& status() const { return status_; }

 private:
  ContextParallelAttention& attention_;
  absl::Status status_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<ContextParallelAttention>> MakeContextParallelAttention(
    CpStrategy strategy, Communicator& comm, const Group& group, const AttentionShape& shape,
    const TokenSpans& spans, int tag) {
  if (strategy == CpStrategy::kRing) {
    absl::StatusOr<std::unique_ptr<RingAttention>> ring =
        RingAttention::Create(comm, group, shape, spans, tag);
    if (!ring.ok()) return ring.status();
    return std::unique_ptr<ContextParallelAttention>(*std::move(ring));
  }
  absl::StatusOr<std::unique_ptr<AllGatherAttention>> gather =
      AllGatherAttention::Create(comm, group, shape, spans);
  if (!gather.ok()) return gather.status();
  return std::unique_ptr<ContextParallelAttention>(*std::move(gather));
}

TokenBatch MemberBatch(const TokenBatch& global, const MemberShard& shard) {
  TokenBatch batch;
  for (int32_t g : shard.global) {
    batch.tokens.push_back(global.tokens[static_cast<size_t>(g)]);
    batch.targets.push_back(global.targets[static_cast<size_t>(g)]);
    batch.doc.push_back(global.doc[static_cast<size_t>(g)]);
    batch.pos.push_back(global.pos[static_cast<size_t>(g)]);
  }
  return batch;
}

absl::StatusOr<double> ContextParallelRunner::ForwardBackward(
    Model& model, const std::vector<std::vector<int32_t>>& documents, float grad_scale) {
  const std::optional<int> me = group_.IndexOf(comm_.rank());
  if (!me.has_value()) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "rank %d is not a member of group %s", comm_.rank(), group_.ToString()));
  }
  std::vector<int32_t> lengths;
  for (const std::vector<int32_t>& d : documents) lengths.push_back(static_cast<int32_t>(d.size()));
  absl::StatusOr<Sharding> sharding = ShardDocuments(lengths, group_.size(), SplitKind::kZigzag);
  if (!sharding.ok()) return sharding.status();
  for (int m = 0; m < group_.size(); ++m) {
    if (sharding->members[static_cast<size_t>(m)].size() == 0) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "member %d of group %s receives no tokens of %d documents (%d tokens)", m,
          group_.ToString(), documents.size(), sharding->total_tokens));
    }
  }
  const TokenBatch batch =
      MemberBatch(TokenBatch::FromDocuments(documents), sharding->members[static_cast<size_t>(*me)]);
  const ModelConfig& c = model.config();
  absl::StatusOr<std::unique_ptr<ContextParallelAttention>> attention =
      MakeContextParallelAttention(strategy_, comm_, group_,
                                   AttentionShape{c.n_heads, c.n_kv_heads, c.head_dim()},
                                   batch.spans(), tag_);
  if (!attention.ok()) return attention.status();
  HookedAttention hook(**attention);
  model.set_attention(&hook);
  model.ZeroGrads();
  const size_t elements = static_cast<size_t>(batch.size()) * c.d_model;
  Buffer x(elements, model.allocator());
  Buffer dx(elements, model.allocator());
  model.EmbedForward(batch, x.data());
  std::unique_ptr<StageActivations> acts = model.LayersForward(0, c.n_layers, batch, x.data());
  const double loss = model.HeadForwardBackward(batch, x.data(), grad_scale, dx.data());
  model.LayersBackward(0, c.n_layers, batch, *acts, dx.data());
  model.EmbedBackward(batch, dx.data());
  model.set_attention(nullptr);
  if (!hook.status().ok()) return hook.status();

  if (absl::Status s = comm_.AllReduce(
          group_, BufferView(model.grads(), model.num_params(), DataType::kFloat32),
          ReduceOp::kSum);
      !s.ok()) {
    return WithContext(s, "summing gradients");
  }
  // Losses travel as their bits and are summed in group order: exact and the same on every
  // member (the runtime reduces no float64).
  int64_t bits = 0;
  std::memcpy(&bits, &loss, sizeof(loss));
  std::vector<int64_t> all(static_cast<size_t>(group_.size()));
  if (absl::Status s = comm_.AllGather(group_, std::span<const int64_t>(&bits, 1), all);
      !s.ok()) {
    return WithContext(s, "gathering losses");
  }
  double total = 0.0;
  for (int64_t b : all) {
    double member_loss = 0.0;
    std::memcpy(&member_loss, &b, sizeof(b));
    total += member_loss;
  }
  return total;
}

}  // namespace loom
