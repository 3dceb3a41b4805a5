// Proves a StepPlan safe to run before anyone runs it: cheap enough to call on every step.
//
// Checks, in order, each failing with a message that names the rank, action index, peer, ring id
// or sequence id at fault:
//  - shape: known sequences and in-range token ranges; each Forward has its Backward over the same
//    tokens; one GradSync per rank, last, with the batch's target count;
//  - matching messages: every member of a ring has exactly one action for it, with the same
//    members in the same order, the same bytes per step and the same micro-batch slot;
//  - no deadlock: replaying the per-rank orders with each ring as a meeting of its members, every
//    rank reaches its end (otherwise the cycle of waits is named);
//  - every token of the batch computed exactly once in the forward and once in the backward, and a
//    sequence split over ranks only through one ring that carries all its pieces;
//  - activation memory: tokens of micro-batches between their Forward and Backward, times the cost
//    model's bytes per token, stay under the plan's budget on every rank.
#ifndef LOOM_PARALLEL_PLAN_VALIDATOR_H_
#define LOOM_PARALLEL_PLAN_VALIDATOR_H_

#include "absl/status/status.h"
#include "parallel/cost_model.h"
#include "parallel/step_plan.h"

namespace loom {

absl::Status ValidatePlan(const StepPlan& plan, const CostModel& cost);

}  // namespace loom

#endif  // LOOM_PARALLEL_PLAN_VALIDATOR_H_
