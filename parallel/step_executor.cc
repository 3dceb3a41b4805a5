#include "parallel/step_executor.h"

#include <time.h>

#include <algorithm>
#include <cstring>
#include <map>
#include <memory>
#include <set>
#include <utility>
#include <vector>

#include "absl/strings/str_format.h"
#include "parallel/ring_attention.h"
#include "src/kernels/attention.h"

namespace loom {
namespace {

// The K/V state of a chunked sequence on this rank: K and V (after RoPE) of every token its chunks
// have computed so far, per layer, which later chunks attend to, and the gradients those later
// chunks add to them. Rows are token positions, allocated for the whole sequence at its first
// chunk (as the plan's memory timeline counts it); memory comes from the model's allocator, so the
// measured peak includes it.
struct ContextStore {
  int first_layer = 0;               // the stage's layers, from this one
  std::vector<Buffer> k, v, dk, dv;  // per layer of the stage, [sequence length, n_kv_heads * D]
  std::vector<int32_t> doc, pos;     // the spans of rows [0, length)

  ContextStore(int64_t sequence, int64_t length, const StageSpec& stage, size_t kv_width,
               Allocator* alloc)
      : first_layer(stage.first_layer) {
    const size_t n = static_cast<size_t>(length) * kv_width;
    for (int l = stage.first_layer; l < stage.last_layer; ++l) {
      k.emplace_back(n, alloc);
      v.emplace_back(n, alloc);
      dk.emplace_back(n, alloc);
      dv.emplace_back(n, alloc);
      dk.back().Zero();
      dv.back().Zero();
    }
    doc.assign(static_cast<size_t>(length), static_cast<int32_t>(sequence));
    for (int64_t p = 0; p < length; ++p) pos.push_back(static_cast<int32_t>(p));
  }

  // What a chunk whose context is rows [0, rows) sees, one entry per layer.
  std::vector<ExternalKv> External(int64_t rows) {
    std::vector<ExternalKv> out;
    for (size_t l = 0; l < k.size(); ++l) {
      out.push_back(ExternalKv{k[l].data(), v[l].data(),
                               TokenSpans{doc.data(), pos.data(), static_cast<int>(rows)},
                               dk[l].data(), dv[l].data()});
    }
    return out;
  }
};

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

  // The leading `rows` rows are a chunk whose K/V later chunks attended to: their gradients,
  // accumulated in `store` from row `first` on, join the chunk's own in the backward.
  void AddChunkGradients(int rows, int64_t first, const ContextStore* store) {
    chunk_rows_ = rows;
    chunk_first_ = first;
    store_ = store;
  }
  bool has_rings() const { return !rings_.empty(); }

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
    if (store_ != nullptr) {
      const size_t n = KvRows(chunk_rows_), at = KvRows(static_cast<int>(chunk_first_));
      const size_t l = static_cast<size_t>(layer - store_->first_layer);
      const float* sk = store_->dk[l].data() + at;
      const float* sv = store_->dv[l].data() + at;
      for (size_t i = 0; i < n; ++i) {
        dk[i] += sk[i];
        dv[i] += sv[i];
      }
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
  int chunk_rows_ = 0;
  int64_t chunk_first_ = 0;
  const ContextStore* store_ = nullptr;
  absl::Status status_;
};

// CPU time of the calling thread: excludes time spent blocked on peers or preempted.
double ThreadCpuSeconds() {
  timespec t{};
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
  return static_cast<double>(t.tv_sec) + 1e-9 * static_cast<double>(t.tv_nsec);
}

// Appends the tokens of `range` (sequence i of the packed batch) to `out`, as document `doc`.
void AppendRange(const PackedBatch& batch, const TokenRange& range, int32_t doc,
                 TokenBatch& out) {
  const int64_t start = batch.sequence_starts[static_cast<size_t>(range.sequence_id)];
  for (int64_t t = start + range.begin; t < start + range.end; ++t) {
    const size_t i = static_cast<size_t>(t);
    out.tokens.push_back(batch.tokens[i]);
    out.targets.push_back(batch.targets[i]);
    out.doc.push_back(doc);
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

// A micro-batch on one stage between its Forward and its Backward (or its WeightGrad).
struct InFlight {
  TokenBatch batch;
  StageSpec layers;
  std::unique_ptr<MicroBatchAttention> attention;
  std::unique_ptr<StageActivations> acts;  // null while dropped (waiting for a Recompute)
  std::unique_ptr<Buffer> dx;              // the last stage: the loss gradient at the top
  std::unique_ptr<Buffer> input;           // a later stage that dropped its activations: its input
  std::unique_ptr<DeferredWeightGrads> deferred;  // between a deferring Backward and its WeightGrad
  std::vector<ExternalKv> external;        // a chunk's context, one per layer; else empty
  int64_t chunk_sequence = -1;             // the chunk's sequence, or -1
  TokenRange chunk;
};

// Pipeline messages between stages: activations forward, their gradients back. Tags sit above
// every ring's, one per (slot, receiving stage, direction), so that messages never match the
// wrong receive whatever order two ranks post them in.
struct StageTags {
  int base = 0;
  int stages = 1;
  int Tag(int slot, int receiver_stage, bool backward) const {
    return base + 2 * (slot * stages + receiver_stage) + (backward ? 1 : 0);
  }
};

// One rank's actions, run in order.
class RankExecutor {
 public:
  RankExecutor(Communicator& comm, const StepPlan& plan, const PackedBatch& batch, Model& model,
               float grad_scale, const ExecutorOptions& options, StageTags tags)
      : comm_(comm),
        plan_(plan),
        batch_(batch),
        model_(model),
        grad_scale_(grad_scale),
        options_(options),
        tags_(tags) {}

  absl::Status Run(StepOutcome& outcome) {
    const std::vector<Action>& actions = plan_.ranks[static_cast<size_t>(comm_.rank())].actions;
    std::vector<const Action*> rings;  // the RingExchange actions of the next Forward
    if (options_.action_cpu_s != nullptr) options_.action_cpu_s->clear();
    for (const Action& a : actions) {
      const double cpu0 = options_.action_cpu_s != nullptr ? ThreadCpuSeconds() : 0.0;
      absl::Status s = ReleaseSentBuffers();
      if (s.ok()) s = RunAction(a, rings, outcome);
      if (options_.action_cpu_s != nullptr) {
        options_.action_cpu_s->push_back(ThreadCpuSeconds() - cpu0);
      }
      if (!s.ok()) {
        const std::string stage =
            plan_.stages.empty() ? "" : absl::StrFormat(" stage %d", a.stage);
        return WithContext(s, absl::StrFormat("%s of micro-batch %d%s", ActionKindName(a.kind),
                                              a.micro_batch, stage));
      }
    }
    outcome.loss_sum = loss_;
    return absl::OkStatus();
  }

 private:
  absl::Status RunAction(const Action& a, std::vector<const Action*>& rings,
                         StepOutcome& outcome) {
    switch (a.kind) {
      case ActionKind::kRingExchange:
        rings.push_back(&a);
        return absl::OkStatus();
      case ActionKind::kForward: {
        absl::Status s = Forward(a, rings);
        rings.clear();
        outcome.rank_tokens += TokenCount(a.tokens);
        ++outcome.micro_batches;
        return s;
      }
      case ActionKind::kRecompute:
        return Recompute(a);
      case ActionKind::kBackward:
        return Backward(a);
      case ActionKind::kWeightGrad:
        return WeightGrad(a);
      case ActionKind::kGradSync:
        return FinishSends();
    }
    return absl::InvalidArgumentError("unknown action kind");
  }

  absl::Status Forward(const Action& a, const std::vector<const Action*>& rings) {
    const ModelConfig& c = model_.config();
    const AttentionShape shape{c.n_heads, c.n_kv_heads, c.head_dim()};
    InFlight f;
    std::set<int64_t> ring_sequences;
    for (const Action* r : rings) {
      for (const TokenRange& t : r->tokens) ring_sequences.insert(t.sequence_id);
    }
    // Rows: the chunk (a piece outside every ring that is not its whole sequence) first, then
    // whole documents, then each ring's shares.
    for (const TokenRange& t : a.tokens) {
      if (ring_sequences.contains(t.sequence_id) || t.size() == SequenceLength(t.sequence_id)) {
        continue;
      }
      if (f.chunk_sequence >= 0) {
        return absl::InvalidArgumentError("a micro-batch with two chunks outside any ring");
      }
      f.chunk_sequence = t.sequence_id;
      f.chunk = t;
      AppendRange(batch_, t, static_cast<int32_t>(t.sequence_id), f.batch);
    }
    // Whole documents are numbered in layout order, above every sequence id: the attention
    // kernel skips a block pair by comparing the blocks' document id ranges, which only works
    // when ids increase along the rows. (A chunk and ring shares keep their sequence ids, which
    // their context and their ring partners know them by.)
    int32_t next_doc = static_cast<int32_t>(plan_.sequences.size());
    for (const TokenRange& t : a.tokens) {
      if (!ring_sequences.contains(t.sequence_id) && t.size() == SequenceLength(t.sequence_id)) {
        AppendRange(batch_, t, next_doc++, f.batch);
      }
    }
    const int local_count = f.batch.size();
    std::vector<RingPart> parts;
    for (const Action* r : rings) {
      absl::StatusOr<RingPart> part = StartRing(*r, shape, f.batch);
      if (!part.ok()) return part.status();
      parts.push_back(*std::move(part));
    }
    if (f.batch.size() != TokenCount(a.tokens)) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "the forward lists %d tokens but its chunk, whole documents and ring shares hold %d",
          TokenCount(a.tokens), f.batch.size()));
    }
    if (!parts.empty() && !a.keep_activations) {
      return absl::InvalidArgumentError(
          "a micro-batch with rings must keep its activations (a recompute would repeat the "
          "rings' messages)");
    }
    f.attention = std::make_unique<MicroBatchAttention>(shape, local_count, std::move(parts));
    f.layers = StageOf(plan_, a.stage, c.n_layers);
    if (f.chunk_sequence >= 0) {
      ContextStore& store = Store(f.chunk_sequence, a.stage);
      f.external = store.External(f.chunk.begin);
      f.attention->AddChunkGradients(static_cast<int>(f.chunk.size()), f.chunk.begin, &store);
    }
    const size_t elements = static_cast<size_t>(f.batch.size()) * c.d_model;
    Buffer x(elements, model_.allocator());
    if (absl::Status s = StageInput(a, f.batch, x); !s.ok()) return s;
    if (!a.keep_activations && a.stage > 0) {
      f.input = std::make_unique<Buffer>(elements, model_.allocator());
      std::memcpy(f.input->data(), x.data(), elements * sizeof(float));
    }
    // A ring member without tokens still runs its layers: they relay the other members' blocks.
    if (f.batch.size() > 0 || f.attention->has_rings()) {
      model_.set_attention(f.attention.get());
      f.acts = model_.LayersForward(f.layers.first_layer, f.layers.last_layer, f.batch, x.data(),
                                    External(f));
      model_.set_attention(nullptr);
      if (!f.attention->status().ok()) return f.attention->status();
    }
    if (a.next_rank >= 0) {
      if (absl::Status s = SendStage(std::make_unique<Buffer>(std::move(x)), a.next_rank,
                                     tags_.Tag(a.micro_batch, a.stage + 1, false));
          !s.ok()) {
        return s;
      }
    } else {
      f.dx = std::make_unique<Buffer>(elements, model_.allocator());
      if (f.batch.size() > 0) {
        loss_ += model_.HeadForwardBackward(f.batch, x.data(), grad_scale_, f.dx->data());
      }
    }
    if (f.chunk_sequence >= 0 && f.acts != nullptr) KeepChunkKv(f, a.stage);
    if (!a.keep_activations) f.acts.reset();
    in_flight_[{a.micro_batch, a.stage}] = std::move(f);
    return absl::OkStatus();
  }

  absl::Status Recompute(const Action& a) {
    auto it = in_flight_.find({a.micro_batch, a.stage});
    if (it == in_flight_.end() || it->second.acts != nullptr) {
      return absl::InvalidArgumentError("nothing to recompute");
    }
    InFlight& f = it->second;
    if (f.batch.size() == 0) return absl::OkStatus();
    const ModelConfig& c = model_.config();
    Buffer x(static_cast<size_t>(f.batch.size()) * c.d_model, model_.allocator());
    if (f.input != nullptr) {
      std::memcpy(x.data(), f.input->data(), x.bytes());
      f.input.reset();
    } else {
      model_.EmbedForward(f.batch, x.data());
    }
    model_.set_attention(f.attention.get());
    f.acts = model_.LayersForward(f.layers.first_layer, f.layers.last_layer, f.batch, x.data(),
                                  External(f));
    model_.set_attention(nullptr);
    return f.attention->status();
  }

  absl::Status Backward(const Action& a) {
    auto it = in_flight_.find({a.micro_batch, a.stage});
    if (it == in_flight_.end()) return absl::InvalidArgumentError("backward without a forward");
    InFlight& f = it->second;
    std::unique_ptr<Buffer> dx = std::move(f.dx);
    if (a.next_rank >= 0) {
      dx = std::make_unique<Buffer>(static_cast<size_t>(f.batch.size()) * model_.config().d_model,
                                    model_.allocator());
      if (absl::Status s = comm_.Recv(BufferView(dx->data(), dx->numel(), DataType::kFloat32),
                                      a.next_rank, tags_.Tag(a.micro_batch, a.stage, true));
          !s.ok()) {
        return WithContext(s, absl::StrFormat("receiving the gradient from rank %d", a.next_rank));
      }
    }
    if (f.batch.size() > 0 || f.attention->has_rings()) {
      if (f.acts == nullptr) {
        return absl::InvalidArgumentError("its activations were dropped and not recomputed");
      }
      if (a.defer_weight_grads) f.deferred = std::make_unique<DeferredWeightGrads>();
      model_.set_attention(f.attention.get());
      model_.LayersBackward(f.layers.first_layer, f.layers.last_layer, f.batch, *f.acts,
                            dx->data(), External(f), f.deferred.get());
      if (a.stage == 0) model_.EmbedBackward(f.batch, dx->data());
      model_.set_attention(nullptr);
    }
    const absl::Status status = f.attention->status();
    if (!status.ok()) return status;
    if (a.prev_rank >= 0) {
      if (absl::Status s =
              SendStage(std::move(dx), a.prev_rank, tags_.Tag(a.micro_batch, a.stage - 1, true));
          !s.ok()) {
        return s;
      }
    }
    // The first chunk's backward is the sequence's last: its K/V state is done with.
    if (f.chunk_sequence >= 0 && f.chunk.begin == 0) stores_.erase({f.chunk_sequence, a.stage});
    if (!a.defer_weight_grads) in_flight_.erase(it);
    return absl::OkStatus();
  }

  absl::Status WeightGrad(const Action& a) {
    auto it = in_flight_.find({a.micro_batch, a.stage});
    if (it == in_flight_.end() || (it->second.deferred == nullptr && it->second.batch.size() > 0)) {
      return absl::InvalidArgumentError("weight gradients without a backward that deferred them");
    }
    InFlight& f = it->second;
    if (f.batch.size() > 0) model_.ApplyWeightGrads(f.batch, *f.acts, *f.deferred);
    in_flight_.erase(it);
    return absl::OkStatus();
  }

  // The stage's input: the embedded tokens on the first stage, else the previous stage's output.
  absl::Status StageInput(const Action& a, const TokenBatch& batch, Buffer& x) {
    if (a.prev_rank < 0) {
      if (batch.size() > 0) model_.EmbedForward(batch, x.data());
      return absl::OkStatus();
    }
    return WithContext(comm_.Recv(BufferView(x.data(), x.numel(), DataType::kFloat32),
                                  a.prev_rank, tags_.Tag(a.micro_batch, a.stage, false)),
                       absl::StrFormat("receiving the activations from rank %d", a.prev_rank));
  }

  // Posts a send of `data` that completes in the background (a send only completes once its
  // receive is posted, and the receiving stage may be busy); FinishSends waits for all of them.
  absl::Status SendStage(std::unique_ptr<Buffer> data, int peer, int tag) {
    absl::StatusOr<std::unique_ptr<Request>> request =
        comm_.ISend(ConstBufferView(data->data(), data->numel(), DataType::kFloat32), peer, tag);
    if (!request.ok()) {
      return WithContext(request.status(), absl::StrFormat("sending to rank %d", peer));
    }
    sends_.push_back({*std::move(request), std::move(data), peer});
    return absl::OkStatus();
  }

  // Frees the buffers of stage messages that have arrived, so that memory holds only those still
  // on their way, not every micro-batch's until the step ends.
  absl::Status ReleaseSentBuffers() {
    for (auto it = sends_.begin(); it != sends_.end();) {
      if (!it->request->Test()) {
        ++it;
        continue;
      }
      if (absl::Status s = it->request->Wait(); !s.ok()) {
        return WithContext(s, absl::StrFormat("the stage message to rank %d", it->peer));
      }
      it = sends_.erase(it);
    }
    return absl::OkStatus();
  }

  absl::Status FinishSends() {
    const absl::Time deadline = absl::Now() + comm_.timeout();
    for (PendingSend& send : sends_) {
      if (absl::Status s = send.request->WaitUntil(deadline); !s.ok()) {
        return WithContext(s, absl::StrFormat("the stage message to rank %d was never received",
                                              send.peer));
      }
    }
    sends_.clear();
    return absl::OkStatus();
  }

  int64_t SequenceLength(int64_t id) const {
    return plan_.sequences[static_cast<size_t>(id)].length;
  }

  static const std::vector<ExternalKv>* External(const InFlight& f) {
    return f.external.empty() ? nullptr : &f.external;
  }

  // A chunked sequence's K/V state on one stage (each stage keeps its own layers').
  ContextStore& Store(int64_t sequence, int stage) {
    auto it = stores_.find({sequence, stage});
    if (it == stores_.end()) {
      const ModelConfig& c = model_.config();
      it = stores_
               .emplace(std::make_pair(sequence, stage),
                        std::make_unique<ContextStore>(
                            sequence, SequenceLength(sequence), StageOf(plan_, stage, c.n_layers),
                            static_cast<size_t>(c.kv_dim()), model_.allocator()))
               .first;
    }
    return *it->second;
  }

  // The chunk's K/V (its leading rows) into its sequence's state, for the chunks after it.
  void KeepChunkKv(const InFlight& f, int stage) {
    if (f.chunk.end == SequenceLength(f.chunk_sequence)) return;  // no later chunk reads it
    ContextStore& store = Store(f.chunk_sequence, stage);
    const size_t width = static_cast<size_t>(model_.config().kv_dim());
    const size_t n = static_cast<size_t>(f.chunk.size()) * width;
    const size_t at = static_cast<size_t>(f.chunk.begin) * width;
    for (int l = f.layers.first_layer; l < f.layers.last_layer; ++l) {
      const LayerActivations& la = f.acts->layer(l);
      const size_t i = static_cast<size_t>(l - f.layers.first_layer);
      std::memcpy(store.k[i].data() + at, la.k, n * sizeof(float));
      std::memcpy(store.v[i].data() + at, la.v, n * sizeof(float));
    }
  }

  absl::StatusOr<RingPart> StartRing(const Action& r, const AttentionShape& shape,
                                     TokenBatch& batch) {
    RingPart part;
    part.ring_id = r.ring_id;
    part.begin = batch.size();
    for (const TokenRange& t : r.tokens) {
      AppendRange(batch_, t, static_cast<int32_t>(t.sequence_id), batch);
    }
    part.count = batch.size() - part.begin;
    int me = -1;
    for (size_t m = 0; m < r.ring.size(); ++m) {
      if (r.ring[m] == comm_.rank()) me = static_cast<int>(m);
    }
    absl::StatusOr<Group> group = Group::Make(r.ring);
    if (me < 0 || !group.ok()) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "ring %d (%s) does not list rank %d exactly once", r.ring_id,
          group.ok() ? group->ToString() : "invalid", comm_.rank()));
    }
    absl::StatusOr<GroupTokens> tokens = RingTokens(plan_, r, me);
    if (!tokens.ok()) return tokens.status();
    absl::StatusOr<std::unique_ptr<RingAttention>> attention = RingAttention::Create(
        comm_, *group, shape, *std::move(tokens), options_.tag_base + 2 * r.ring_id);
    if (!attention.ok()) return attention.status();
    part.attention = *std::move(attention);
    return part;
  }

  Communicator& comm_;
  const StepPlan& plan_;
  const PackedBatch& batch_;
  Model& model_;
  float grad_scale_;
  const ExecutorOptions& options_;
  StageTags tags_;
  double loss_ = 0.0;
  std::map<std::pair<int, int>, InFlight> in_flight_;  // by (micro-batch, stage)
  std::map<std::pair<int64_t, int>, std::unique_ptr<ContextStore>> stores_;  // (sequence, stage)
  struct PendingSend {
    std::unique_ptr<Request> request;
    std::unique_ptr<Buffer> data;
    int peer = 0;
  };
  std::vector<PendingSend> sends_;
};

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
  // Stage message tags start above every ring's.
  int max_ring = -1;
  int max_slot = 0;
  for (const RankPlan& r : plan.ranks) {
    for (const Action& a : r.actions) {
      if (a.kind == ActionKind::kRingExchange) max_ring = std::max(max_ring, a.ring_id);
      max_slot = std::max(max_slot, a.micro_batch);
    }
  }
  const StageTags tags{options.tag_base + 2 * (max_ring + 1), plan.num_stages()};
  if (static_cast<int64_t>(tags.base) + 2LL * (max_slot + 1) * tags.stages > comm.max_tag()) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "%s: the plan needs message tags up to %d, beyond the %s backend's %d", who,
        static_cast<int64_t>(tags.base) + 2LL * (max_slot + 1) * tags.stages,
        BackendName(comm.backend()), comm.max_tag()));
  }
  RankExecutor executor(comm, plan, batch, model, scale, options, tags);
  if (absl::Status s = executor.Run(outcome); !s.ok()) return WithContext(s, who);
  const double loss = outcome.loss_sum;
  outcome.loss_sum = 0.0;
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
