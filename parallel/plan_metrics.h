// Figures of a StepPlan under a cost model, without running or simulating it: each rank's compute
// time (the sum over its micro-batches of forward + backward), the ring bytes it sends and its
// activation peak. The balance ratio max/mean over ranks is what the balance scheduler minimises
// and what `loom plan` and the balance benchmark report.
#ifndef LOOM_PARALLEL_PLAN_METRICS_H_
#define LOOM_PARALLEL_PLAN_METRICS_H_

#include <cstdint>
#include <vector>

#include "parallel/cost_model.h"
#include "parallel/step_plan.h"

namespace loom {

struct RankLoad {
  double compute_s = 0.0;
  int micro_batches = 0;
  int64_t tokens = 0;
  int64_t ring_bytes_sent = 0;
  int64_t peak_activation_bytes = 0;
};

struct PlanMetrics {
  std::vector<RankLoad> ranks;
  double max_compute_s = 0.0;
  double mean_compute_s = 0.0;
  double mean_ring_bytes_sent = 0.0;
  int largest_ring = 1;  // members of the largest ring (1 when there is none)
  int rings = 0;

  // max / mean compute over ranks; 1 for a plan with no compute.
  double balance() const { return mean_compute_s > 0 ? max_compute_s / mean_compute_s : 1.0; }
};

PlanMetrics MeasurePlan(const StepPlan& plan, const CostModel& cost);

}  // namespace loom

#endif  // LOOM_PARALLEL_PLAN_METRICS_H_
