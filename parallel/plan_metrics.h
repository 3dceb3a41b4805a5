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
  int chunks = 0;  // chunks that attend to earlier chunks of their sequence (ChunkFlow)

  // max / mean compute over ranks; 1 for a plan with no compute.
  double balance() const { return mean_compute_s > 0 ? max_compute_s / mean_compute_s : 1.0; }
};

PlanMetrics MeasurePlan(const StepPlan& plan, const CostModel& cost);

// What a rank holds while one of its actions runs: the tokens whose activations are alive
// (micro-batches between Forward and Backward whose activations are kept, and the one being
// computed or recomputed), the tokens whose loss gradient waits for their backward, the scratch of
// the micro-batch being computed, and the tokens of chunked sequences whose K/V (and K/V
// gradients) wait in the state store for later chunks (a whole sequence's, from its first chunk's
// forward to its last backward). The validator checks it against the
// budget; MeasurePlan's peak is its largest value.
struct RankMemory {
  int64_t activation_tokens = 0;
  int64_t pending_tokens = 0;
  int64_t working_tokens = 0;
  int64_t context_tokens = 0;

  int64_t bytes(const CostModel& cost) const {
    return activation_tokens * cost.activation_bytes_per_token +
           pending_tokens * cost.pending_bytes_per_token +
           working_tokens * cost.working_bytes_per_token +
           cost.LogitBytes(working_tokens) +
           context_tokens * cost.ContextBytesPerToken();
  }
};

// One entry per action of `rank`, in order.
std::vector<RankMemory> RankMemoryTimeline(const StepPlan& plan, int rank);

}  // namespace loom

#endif  // LOOM_PARALLEL_PLAN_METRICS_H_
