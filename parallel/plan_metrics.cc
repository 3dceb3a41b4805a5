#include "parallel/plan_metrics.h"

#include <algorithm>
#include <cmath>
#include <map>
#include <utility>
#include <unordered_map>
#include <unordered_set>

namespace loom {

PlanMetrics MeasurePlan(const StepPlan& plan, const CostModel& cost) {
  PlanMetrics metrics;
  metrics.ranks.resize(plan.ranks.size());
  double total_s = 0.0;
  double total_bytes = 0.0;
  const bool pipelined = !plan.stages.empty();
  for (size_t r = 0; r < plan.ranks.size(); ++r) {
    RankLoad& load = metrics.ranks[r];
    for (const RankMemory& m : RankMemoryTimeline(plan, static_cast<int>(r), cost)) {
      load.peak_activation_bytes = std::max(load.peak_activation_bytes, m.bytes());
    }
    for (const Action& a : plan.ranks[r].actions) {
      switch (a.kind) {
        case ActionKind::kForward:
          // Without stages a Forward stands for its whole micro-batch, backward included.
          load.compute_s += pipelined ? cost.ComputeSeconds(plan, a) : cost.MicroBatchSeconds(a.tokens);
          ++load.micro_batches;
          load.tokens += TokenCount(a.tokens);
          if (!a.context.empty() && a.stage == 0) ++metrics.chunks;
          break;
        case ActionKind::kBackward:
        case ActionKind::kWeightGrad:
          if (pipelined) load.compute_s += cost.ComputeSeconds(plan, a);
          break;
        case ActionKind::kRecompute:
          // The forward again: its share of the micro-batch's time.
          load.compute_s += pipelined ? cost.ComputeSeconds(plan, a)
                                      : cost.MicroBatchSeconds(a.tokens) * (1.0 - cost.backward_fraction);
          break;
        case ActionKind::kRingExchange:
          load.ring_bytes_sent +=
              cost.RingBytesSent(static_cast<int>(a.ring.size()), a.bytes_per_step);
          metrics.largest_ring = std::max(metrics.largest_ring, static_cast<int>(a.ring.size()));
          if (a.ring.front() == static_cast<int>(r)) ++metrics.rings;
          break;
        case ActionKind::kGradSync:
          break;
      }
    }
    metrics.max_compute_s = std::max(metrics.max_compute_s, load.compute_s);
    total_s += load.compute_s;
    total_bytes += static_cast<double>(load.ring_bytes_sent);
  }
  if (!plan.ranks.empty()) {
    metrics.mean_compute_s = total_s / static_cast<double>(plan.ranks.size());
    metrics.mean_ring_bytes_sent = total_bytes / static_cast<double>(plan.ranks.size());
  }
  return metrics;
}

std::vector<RankMemory> RankMemoryTimeline(const StepPlan& plan, int rank, const CostModel& cost) {
  const std::vector<Action>& actions = plan.ranks[static_cast<size_t>(rank)].actions;
  const int last_stage = plan.num_stages() - 1;
  const int64_t n_layers = std::max(cost.n_layers, 1);
  // Bytes of `per_token_all_layers` for `tokens` on the layers of `stage`.
  auto on_stage = [&](int64_t tokens, int64_t per_token_all_layers, int stage) {
    const StageSpec s = StageOf(plan, stage, cost.n_layers);
    return tokens * per_token_all_layers * (s.last_layer - s.first_layer) / n_layers;
  };
  // Sequences this rank runs as chunks: those some chunk of it names as context.
  std::unordered_set<int64_t> chunked;
  for (const Action& a : actions) {
    for (const TokenRange& r : a.context) chunked.insert(r.sequence_id);
  }
  // Sequence id -> its place in the batch, for the chunked ones only: a plan at scale has half a
  // million sequences, and indexing them all for every rank would cost more than the plan.
  std::unordered_map<int64_t, size_t> index;
  if (!chunked.empty()) {
    for (size_t i = 0; i < plan.sequences.size(); ++i) {
      if (chunked.contains(plan.sequences[i].id)) index.emplace(plan.sequences[i].id, i);
    }
  }
  // (sequence id, stage) -> tokens in the state store
  std::map<std::pair<int64_t, int>, int64_t> stored;
  // What a micro-batch holds until its Backward (or WeightGrad), by (slot, stage).
  struct Held {
    int64_t activation_bytes = 0;
    int64_t pending_bytes = 0;
  };
  std::map<std::pair<int, int>, Held> held;
  // Bytes of a micro-batch's kept activations that wait in host memory, by (slot, stage).
  std::map<std::pair<int, int>, int64_t> offloaded;
  RankMemory m;
  std::vector<RankMemory> timeline;
  timeline.reserve(actions.size());
  for (const Action& a : actions) {
    const int64_t tokens = TokenCount(a.tokens);
    const bool head = a.stage == last_stage;
    const std::pair<int, int> key{a.micro_batch, a.stage};
    const bool computes = a.kind == ActionKind::kForward || a.kind == ActionKind::kRecompute ||
                          a.kind == ActionKind::kBackward || a.kind == ActionKind::kWeightGrad;
    m.working_bytes = 0;
    if (computes) {
      m.working_bytes = tokens * cost.working_bytes_per_token + (head ? cost.LogitBytes(tokens) : 0);
      // The stage message this action sends (its output, or its input's gradient) stays until
      // the neighbour has received it, at least to the action's end.
      const bool sends = (a.kind == ActionKind::kForward && a.next_rank >= 0) ||
                         (a.kind == ActionKind::kBackward && a.prev_rank >= 0);
      if (sends) m.working_bytes += tokens * cost.stage_message_bytes_per_token;
    }
    // A deferring backward makes its weight gradients' inputs as it goes.
    if (a.kind == ActionKind::kBackward && a.defer_weight_grads) {
      m.deferred_bytes += on_stage(tokens, cost.deferred_bytes_per_token, a.stage);
    }
    const int64_t activation_bytes = on_stage(tokens, cost.activation_bytes_per_token, a.stage);
    if (a.kind == ActionKind::kForward) {
      m.activation_tokens += tokens;
      m.activation_bytes += activation_bytes;
      if (a.offload_ratio > 0 && a.keep_activations) {
        const int64_t out = std::llround(static_cast<double>(activation_bytes) *
                                         std::min(a.offload_ratio, 1.0));
        offloaded[key] = out;
        m.activation_bytes -= out;
      }
      Held& h = held[key];
      // The loss gradient waits at the head; a later stage that drops its activations keeps its
      // input for the recompute.
      if (head || (!a.keep_activations && a.stage > 0)) {
        h.pending_bytes = tokens * cost.pending_bytes_per_token;
        m.pending_bytes += h.pending_bytes;
      }
      for (const TokenRange& r : a.tokens) {
        // The executor sizes a sequence's state store for all of it at its first chunk.
        if (!chunked.contains(r.sequence_id) || stored.contains({r.sequence_id, a.stage})) continue;
        const int64_t length = plan.sequences[index.at(r.sequence_id)].length;
        stored[{r.sequence_id, a.stage}] = length;
        m.context_tokens += length;
        m.context_bytes += on_stage(length, cost.ContextBytesPerToken(), a.stage);
      }
    }
    if (a.kind == ActionKind::kRecompute) {
      m.activation_tokens += tokens;
      m.activation_bytes += activation_bytes;
    }
    timeline.push_back(m);
    m.working_bytes = 0;
    const bool frees_activations =
        (a.kind == ActionKind::kForward && !a.keep_activations) ||
        (a.kind == ActionKind::kBackward && !a.defer_weight_grads) ||
        a.kind == ActionKind::kWeightGrad;
    if (frees_activations) {
      m.activation_tokens -= tokens;
      m.activation_bytes -= activation_bytes;
      if (auto o = offloaded.find(key); o != offloaded.end() && a.kind != ActionKind::kForward) {
        m.activation_bytes += o->second;
        offloaded.erase(o);
      }
    }
    if (a.kind == ActionKind::kWeightGrad) {
      m.deferred_bytes -= on_stage(tokens, cost.deferred_bytes_per_token, a.stage);
    }
    if (a.kind != ActionKind::kBackward) continue;
    auto h = held.find(key);
    if (h != held.end()) {
      m.pending_bytes -= h->second.pending_bytes;
      held.erase(h);
    }
    for (const TokenRange& r : a.tokens) {
      // The backward of a sequence's first chunk is its last: its state is no longer needed.
      auto it = stored.find({r.sequence_id, a.stage});
      if (r.begin != 0 || it == stored.end()) continue;
      m.context_tokens -= it->second;
      m.context_bytes -= on_stage(it->second, cost.ContextBytesPerToken(), a.stage);
      stored.erase(it);
    }
  }
  return timeline;
}

}  // namespace loom
