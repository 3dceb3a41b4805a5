// The static DP x CP mesh baseline, as Megatron-LM runs it: the world is cut once into groups of
// `cp_size` consecutive ranks; sequences are packed in batch order into micro-batches of up to
// cp_size * C tokens (no member's zigzag share over C); every sequence of a micro-batch is sharded
// over its context-parallel group, whose ring carries them all; data-parallel groups take the
// micro-batches round robin.
#ifndef LOOM_PARALLEL_STATIC_PLANNER_H_
#define LOOM_PARALLEL_STATIC_PLANNER_H_

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"
#include "parallel/cost_model.h"
#include "parallel/step_plan.h"

namespace loom {

struct StaticPlannerOptions {
  int world_size = 1;
  int cp_size = 1;               // must divide world_size
  int64_t capacity_tokens = 0;   // C: tokens per rank per micro-batch
};

// Fails on bad options, or on a sequence too long for one micro-batch of its group (named).
absl::StatusOr<StepPlan> PlanStatic(const std::vector<SequenceSpec>& sequences,
                                    const StaticPlannerOptions& options, const CostModel& cost);

}  // namespace loom

#endif  // LOOM_PARALLEL_STATIC_PLANNER_H_
