// Turns a planner's decision (which rank computes which sequences in which micro-batch slot, and
// which rings spread long sequences) into a StepPlan. Every planner ends here, so all plans share
// one action order: per rank, slots in increasing order; in a slot, its rings by increasing ring
// id, then Forward and Backward; GradSync last. Ring ids increase with the slot, so every rank
// meets its rings in one global order and no two ranks can wait on each other in a cycle.
#ifndef LOOM_PARALLEL_PLAN_BUILDER_H_
#define LOOM_PARALLEL_PLAN_BUILDER_H_

#include <cstdint>
#include <string>
#include <vector>

#include "parallel/cost_model.h"
#include "parallel/step_plan.h"

namespace loom {

// Sequences spread over the members of a ring (each zigzag-split over all members), run in slot
// `micro_batch` of every member.
struct RingPlacement {
  std::vector<int> members;           // world ranks in ring order
  int micro_batch = 0;
  std::vector<int64_t> sequences;     // indices into the batch
};

struct Placement {
  // local[rank][slot]: indices into the batch of sequences kept whole on that rank in that slot.
  std::vector<std::vector<std::vector<int64_t>>> local;
  std::vector<RingPlacement> rings;
};

// The largest over ranks of the sum over its micro-batches of the cost model's time: what
// MeasurePlan(BuildStepPlan(...)).max_compute_s reports, without building the plan.
double SlowestRankSeconds(const std::vector<SequenceSpec>& sequences, const Placement& placement,
                          const CostModel& cost);

// The plan for `placement` over a world of placement.local.size() ranks.
StepPlan BuildStepPlan(std::string planner, const std::vector<SequenceSpec>& sequences,
                       const Placement& placement, const CostModel& cost, int64_t capacity_tokens);

}  // namespace loom

#endif  // LOOM_PARALLEL_PLAN_BUILDER_H_
