#include "parallel/plan_metrics.h"

#include <algorithm>

namespace loom {

PlanMetrics MeasurePlan(const StepPlan& plan, const CostModel& cost) {
  PlanMetrics metrics;
  metrics.ranks.resize(plan.ranks.size());
  double total_s = 0.0;
  double total_bytes = 0.0;
  for (size_t r = 0; r < plan.ranks.size(); ++r) {
    RankLoad& load = metrics.ranks[r];
    int64_t alive = 0;
    for (const Action& a : plan.ranks[r].actions) {
      switch (a.kind) {
        case ActionKind::kForward:
          load.compute_s += cost.MicroBatchSeconds(a.tokens);
          ++load.micro_batches;
          alive += TokenCount(a.tokens);
          load.tokens += TokenCount(a.tokens);
          load.peak_activation_bytes =
              std::max(load.peak_activation_bytes, alive * cost.activation_bytes_per_token);
          break;
        case ActionKind::kBackward:
          alive -= TokenCount(a.tokens);
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

}  // namespace loom
