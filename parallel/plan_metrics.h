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

// What a rank holds while one of its actions runs: the activations alive (micro-batches between
// Forward and Backward whose activations are kept, and the one being computed or recomputed;
// with deferred weight gradients, until the WeightGrad, together with the gradients it keeps),
// the loss gradients waiting for their backward (and, on a pipeline stage past the first, the
// input of a micro-batch whose activations were dropped, for its recompute), the scratch of the
// micro-batch being computed (with the head's logits on the stage that has the head), and the
// K/V (and K/V gradients) of chunked sequences waiting in the state store for later chunks (a
// whole sequence's, from its first chunk's forward to its last backward). Activations and K/V
// state count the layers of the action's stage only. A Forward's offloaded share of its
// activations (Action::offload_ratio) waits in host memory and does not count (its backward
// brings it back layer by layer, as it goes). The validator checks the total against the budget;
// MeasurePlan's peak is its largest value.
struct RankMemory {
  int64_t activation_tokens = 0;  // tokens (of any stage) whose activations are alive
  int64_t activation_bytes = 0;
  int64_t deferred_bytes = 0;
  int64_t pending_bytes = 0;
  int64_t working_bytes = 0;
  int64_t context_tokens = 0;
  int64_t context_bytes = 0;

  int64_t bytes() const {
    return activation_bytes + deferred_bytes + pending_bytes + working_bytes + context_bytes;
  }
};

// One entry per action of `rank`, in order.
std::vector<RankMemory> RankMemoryTimeline(const StepPlan& plan, int rank, const CostModel& cost);

}  // namespace loom

#endif  // LOOM_PARALLEL_PLAN_METRICS_H_
