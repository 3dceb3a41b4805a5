#include "parallel/plan_metrics.h"

#include <algorithm>
#include <unordered_map>
#include <unordered_set>

namespace loom {

PlanMetrics MeasurePlan(const StepPlan& plan, const CostModel& cost) {
  PlanMetrics metrics;
  metrics.ranks.resize(plan.ranks.size());
  double total_s = 0.0;
  double total_bytes = 0.0;
  for (size_t r = 0; r < plan.ranks.size(); ++r) {
    RankLoad& load = metrics.ranks[r];
    for (const RankMemory& m : RankMemoryTimeline(plan, static_cast<int>(r))) {
      load.peak_activation_bytes = std::max(load.peak_activation_bytes, m.bytes(cost));
    }
    for (const Action& a : plan.ranks[r].actions) {
      switch (a.kind) {
        case ActionKind::kForward:
          load.compute_s += cost.MicroBatchSeconds(a.tokens);
          ++load.micro_batches;
          load.tokens += TokenCount(a.tokens);
          if (!a.context.empty()) ++metrics.chunks;
          break;
        case ActionKind::kBackward:
          break;
        case ActionKind::kRecompute:
          // The forward again: its share of the micro-batch's time.
          load.compute_s += cost.MicroBatchSeconds(a.tokens) * (1.0 - cost.backward_fraction);
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

std::vector<RankMemory> RankMemoryTimeline(const StepPlan& plan, int rank) {
  const std::vector<Action>& actions = plan.ranks[static_cast<size_t>(rank)].actions;
  // Sequences this rank runs as chunks: those some chunk of it names as context.
  std::unordered_set<int64_t> chunked;
  for (const Action& a : actions) {
    for (const TokenRange& r : a.context) chunked.insert(r.sequence_id);
  }
  std::unordered_map<int64_t, size_t> index;  // sequence id -> its place in the batch
  for (size_t i = 0; i < plan.sequences.size(); ++i) index.emplace(plan.sequences[i].id, i);
  std::unordered_map<int64_t, int64_t> stored;  // sequence id -> tokens in the state store
  RankMemory m;
  std::vector<RankMemory> timeline;
  timeline.reserve(actions.size());
  for (const Action& a : actions) {
    const int64_t tokens = TokenCount(a.tokens);
    const bool computes = a.kind == ActionKind::kForward || a.kind == ActionKind::kRecompute ||
                          a.kind == ActionKind::kBackward;
    m.working_tokens = computes ? tokens : 0;
    if (a.kind == ActionKind::kForward) {
      m.activation_tokens += tokens;
      m.pending_tokens += tokens;
      for (const TokenRange& r : a.tokens) {
        // The executor sizes a sequence's state store for all of it at its first chunk.
        if (!chunked.contains(r.sequence_id) || stored.contains(r.sequence_id)) continue;
        const int64_t length = plan.sequences[index.at(r.sequence_id)].length;
        stored[r.sequence_id] = length;
        m.context_tokens += length;
      }
    }
    if (a.kind == ActionKind::kRecompute) m.activation_tokens += tokens;
    timeline.push_back(m);
    m.working_tokens = 0;
    if ((a.kind == ActionKind::kForward && !a.keep_activations) ||
        a.kind == ActionKind::kBackward) {
      m.activation_tokens -= tokens;
    }
    if (a.kind == ActionKind::kBackward) m.pending_tokens -= tokens;
    if (a.kind != ActionKind::kBackward) continue;
    for (const TokenRange& r : a.tokens) {
      // The backward of a sequence's first chunk is its last: its state is no longer needed.
      if (r.begin != 0 || !chunked.contains(r.sequence_id)) continue;
      m.context_tokens -= stored[r.sequence_id];
      stored.erase(r.sequence_id);
    }
  }
  return timeline;
}

}  // namespace loom
