#include "parallel/step_executor.h"

#include <cstring>
#include <memory>
#include <set>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_format.h"
#include "parallel/ring_attention.h"
#include "src/kernels/attention.h"

namespace loom {
namespace {

// Rows [begin, begin + count) of a micro-batch whose attention runs around one ring.
struct RingPart {
  int ring_id = 0;
  int begin = 0;
  int count = 0;
  std::unique_ptr<RingAttention> attention;
};

// The model's attention hook for one micro-batch: the leading `local_count` rows (documents kept
// whole) with the local kernel, then each ring's rows with its RingAttention. Parts never attend
// to each other: they hold different documents. The hook cannot return a status, so the first
// failure is kept and later calls do nothing (peers then fail on their own timeouts).
class MicroBatchAttention : public AttentionFn {
 public:
  MicroBatchAttention(const AttentionShape& shape, int local_count, std::vector<RingPart> rings)
      : shape_(shape), local_count_(local_count), rings_(std::move(rings)) {}

  void Forward(int layer, float* out, float* lse, const float* q, const float* k, const float* v,
               const TokenSpans& spans) override {
    if (!status_.ok()) return;
    if (local_count_ > 0) {
      const TokenSpans local{spans.doc, spans.pos, local_count_};
      AttentionForward(out, lse, q, k, v, local, local, shape_, /*causal=*/true);
    }
    for (RingPart& part : rings_) {
      const size_t qo = QRows(part.begin), ko = KvRows(part.begin);
      status_ = Named(part.attention->Forward(out + qo, lse + LseRows(part.begin), q + qo,
                                              k + ko, v + ko),
                      layer, "forward", part.ring_id);
      if (!status_.ok()) return;
    }
  }

  void Backward(int layer, float* dq, float* dk, float* dv, const float* dout, const float* q,
                const float* k, const float* v, const float* lse, const float* delta,
                const TokenSpans& spans) override {
    if (!status_.ok()) return;
    if (local_count_ > 0) {
      const TokenSpans local{spans.doc, spans.pos, local_count_};
      AttentionBackward(dq, dk, dv, dout, q, k, v, lse, delta, local, local, shape_,
                        /*causal=*/true);
    }
    for (RingPart& part : rings_) {
      const size_t qo = QRows(part.begin), ko = KvRows(part.begin), lo = LseRows(part.begin);
      status_ = Named(part.attention->Backward(dq + qo, dk + ko, dv + ko, dout + qo, q + qo,
                                               k + ko, v + ko, lse + lo, delta + lo),
                      layer, "backward", part.ring_id);
      if (!status_.ok()) return;
    }
  }

  const absl::Status& status() const { return status_; }

 private:
  size_t QRows(int rows) const {
    return static_cast<size_t>(rows) * static_cast<size_t>(shape_.n_heads * shape_.head_dim);
  }
  size_t KvRows(int rows) const {
    return static_cast<size_t>(rows) * static_cast<size_t>(shape_.n_kv_heads * shape_.head_dim);
  }
  size_t LseRows(int rows) const {
    return static_cast<size_t>(rows) * static_cast<size_t>(shape_.n_heads);
  }
  static absl::Status Named(const absl::Status& s, int layer, const char* pass, int ring) {
    return WithContext(s, absl::StrFormat("layer %d attention %s, ring %d", layer, pass, ring));
  }

  AttentionShape shape_;
  int local_count_;
  std::vector<RingPart> rings_;
  absl::Status status_;
};

// Appends the tokens of `range` (sequence i of the packed batch) to `out`.
void AppendRange(const PackedBatch& batch, const TokenRange& range, TokenBatch& out) {
  const int64_t start = batch.sequence_starts[static_cast<size_t>(range.sequence_id)];
  for (int64_t t = start + range.begin; t < start + range.end; ++t) {
    const size_t i = static_cast<size_t>(t);
    out.tokens.push_back(batch.tokens[i]);
    out.targets.push_back(batch.targets[i]);
    out.doc.push_back(static_cast<int32_t>(range.sequence_id));
    out.pos.push_back(batch.positions[i]);
  }
}

// Document ids and positions of a list of ranges, as the kernel's spans want them.
struct RangeSpans {
  std::vector<int32_t> doc, pos;
  explicit RangeSpans(const std::vector<TokenRange>& ranges) {
    for (const TokenRange& r : ranges) {
      for (int64_t p = r.begin; p < r.end; ++p) {
        doc.push_back(static_cast<int32_t>(r.sequence_id));
        pos.push_back(static_cast<int32_t>(p));
      }
    }
  }
  TokenSpans spans() const { return TokenSpans{doc.data(), pos.data(), static_cast<int>(doc.size())}; }
};

// The ring's members' shares, in ring order, from every rank's RingExchange action of `ring_id`.
absl::StatusOr<GroupTokens> RingTokens(const StepPlan& plan, const Action& mine, int me_index) {
  std::vector<RangeSpans> shares;
  for (int member : mine.ring) {
    const Action* found = nullptr;
    for (const Action& a : plan.ranks[static_cast<size_t>(member)].actions) {
      if (a.kind == ActionKind::kRingExchange && a.ring_id == mine.ring_id) {
        found = &a;
        break;
      }
    }
    if (found == nullptr) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "ring %d names rank %d as a member, but rank %d has no exchange for it", mine.ring_id,
          member, member));
    }
    shares.emplace_back(found->tokens);
  }
  std::vector<TokenSpans> spans;
  for (const RangeSpans& s : shares) spans.push_back(s.spans());
  return GroupTokens::FromMembers(me_index, spans);
}

absl::Status CheckPlanMatches(const Communicator& comm, const StepPlan& plan,
                              const PackedBatch& batch) {
  if (plan.world_size() != comm.size()) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "the plan is for %d ranks, the world has %d", plan.world_size(), comm.size()));
  }
  const size_t n = batch.sequence_starts.empty() ? 0 : batch.sequence_starts.size() - 1;
  if (plan.sequences.size() != n) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "the plan has %d sequences, the batch %d", plan.sequences.size(), n));
  }
  for (size_t i = 0; i < n; ++i) {
    const int64_t length = batch.sequence_starts[i + 1] - batch.sequence_starts[i];
    if (plan.sequences[i].id != static_cast<int64_t>(i) || plan.sequences[i].length != length) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "plan sequence %d (id %d, %d tokens) does not match batch sequence %d (%d tokens)", i,
          plan.sequences[i].id, plan.sequences[i].length, i, length));
    }
  }
  return absl::OkStatus();
}

// One micro-batch: its Forward action and the RingExchange actions before it.
struct MicroBatch {
  const Action* forward = nullptr;
  std::vector<const Action*> rings;
};

std::vector<MicroBatch> MicroBatches(const RankPlan& plan) {
  std::vector<MicroBatch> out;
  std::vector<const Action*> rings;
  for (const Action& a : plan.actions) {
    if (a.kind == ActionKind::kRingExchange) rings.push_back(&a);
    if (a.kind == ActionKind::kForward) {
      out.push_back(MicroBatch{&a, std::move(rings)});
      rings.clear();
    }
  }
  return out;
}

// Runs one micro-batch's forward and backward; returns its loss sum.
absl::StatusOr<double> RunMicroBatch(Communicator& comm, const StepPlan& plan,
                                     const MicroBatch& mb, const PackedBatch& batch, Model& model,
                                     float grad_scale, const ExecutorOptions& options) {
  const ModelConfig& c = model.config();
  const AttentionShape shape{c.n_heads, c.n_kv_heads, c.head_dim()};
  std::set<int64_t> ring_sequences;
  for (const Action* r : mb.rings) {
    for (const TokenRange& t : r->tokens) ring_sequences.insert(t.sequence_id);
  }
  TokenBatch tb;
  for (const TokenRange& t : mb.forward->tokens) {
    if (!ring_sequences.contains(t.sequence_id)) AppendRange(batch, t, tb);
  }
  const int local_count = tb.size();
  std::vector<RingPart> parts;
  for (const Action* r : mb.rings) {
    RingPart part;
    part.ring_id = r->ring_id;
    part.begin = tb.size();
    for (const TokenRange& t : r->tokens) AppendRange(batch, t, tb);
    part.count = tb.size() - part.begin;
    int me = -1;
    for (size_t m = 0; m < r->ring.size(); ++m) {
      if (r->ring[m] == comm.rank()) me = static_cast<int>(m);
    }
    absl::StatusOr<Group> group = Group::Make(r->ring);
    if (me < 0 || !group.ok()) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "ring %d (%s) does not list rank %d exactly once", r->ring_id,
          group.ok() ? group->ToString() : "invalid", comm.rank()));
    }
    absl::StatusOr<GroupTokens> tokens = RingTokens(plan, *r, me);
    if (!tokens.ok()) return tokens.status();
    absl::StatusOr<std::unique_ptr<RingAttention>> attention = RingAttention::Create(
        comm, *group, shape, *std::move(tokens), options.tag_base + 2 * r->ring_id);
    if (!attention.ok()) return attention.status();
    part.attention = *std::move(attention);
    parts.push_back(std::move(part));
  }
  if (tb.size() != TokenCount(mb.forward->tokens)) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "the forward lists %d tokens but its whole documents and ring shares hold %d",
        TokenCount(mb.forward->tokens), tb.size()));
  }
  if (tb.size() == 0) return 0.0;
  MicroBatchAttention hook(shape, local_count, std::move(parts));
  model.set_attention(&hook);
  const double loss = model.ForwardBackward(tb, grad_scale);
  model.set_attention(nullptr);
  if (!hook.status().ok()) return hook.status();
  return loss;
}

}  // namespace

absl::StatusOr<StepOutcome> ExecuteStep(Communicator& comm, const StepPlan& plan,
                                        const PackedBatch& batch, Model& model,
                                        const ExecutorOptions& options) {
  const std::string who = absl::StrFormat("rank %d", comm.rank());
  if (absl::Status s = CheckPlanMatches(comm, plan, batch); !s.ok()) return WithContext(s, who);
  StepOutcome outcome;
  outcome.targets = TotalTargets(plan.sequences);
  const float scale = outcome.targets > 0 ? 1.0f / static_cast<float>(outcome.targets) : 0.0f;
  model.ZeroGrads();
  double loss = 0.0;
  for (const MicroBatch& mb : MicroBatches(plan.ranks[static_cast<size_t>(comm.rank())])) {
    absl::StatusOr<double> part = RunMicroBatch(comm, plan, mb, batch, model, scale, options);
    if (!part.ok()) {
      return WithContext(part.status(),
                         absl::StrFormat("%s, micro-batch %d", who, mb.forward->micro_batch));
    }
    loss += *part;
    outcome.rank_tokens += TokenCount(mb.forward->tokens);
    ++outcome.micro_batches;
  }
  const Group& world = comm.world_group();
  if (options.all_reduce_gradients) {
    if (absl::Status s = comm.AllReduce(
            world, BufferView(model.grads(), model.num_params(), DataType::kFloat32),
            ReduceOp::kSum);
        !s.ok()) {
      return WithContext(s, who + ", summing gradients");
    }
  }
  // Loss sums travel as their bits and are added in rank order: exact and the same on every rank
  // (the runtime reduces no float64).
  int64_t bits = 0;
  std::memcpy(&bits, &loss, sizeof(loss));
  std::vector<int64_t> all(static_cast<size_t>(comm.size()));
  if (absl::Status s = comm.AllGather(world, std::span<const int64_t>(&bits, 1), all); !s.ok()) {
    return WithContext(s, who + ", gathering losses");
  }
  for (int64_t b : all) {
    double rank_loss = 0.0;
    std::memcpy(&rank_loss, &b, sizeof(b));
    outcome.loss_sum += rank_loss;
  }
  return outcome;
}

}  // namespace loom
