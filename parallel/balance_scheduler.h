// The balance scheduler: hybrid data parallelism on a dynamic mesh (ByteScale section 6's idea)
// that assigns sequences to ranks and micro-batch slots so that the slowest rank's compute, the
// sum over its micro-batches of the cost model's time, is as small as possible, with at most C
// tokens per rank per micro-batch. Ranks run as many micro-batches as their share needs.
//
// Under quadratic attention a long sequence on ceil(L/C) ranks can cost each of them more than
// the mean rank's whole step, so a ring is widened until its per-member cost fits under the mean
// (zigzag splits attention evenly over members); sequences of L <= C tokens never form rings.
//  1. Target: the batch's total cost over the world (the mean rank's load).
//  2. Rings, largest per-member cost first, each onto the fewest least-loaded ranks (at least
//     ceil(L/C)) whose loads stay under the target, in a fresh slot common to all members.
//  3. Whole sequences, longest first, each onto the least-loaded rank (LPT), first fit into its
//     slots.
//  4. Refinement: move a whole sequence from the most to the least loaded rank, or swap two,
//     while that lowers the pair's maximum, until the slowest rank is within 1e-4 of the mean
//     (where LPT usually leaves it already).
//  5. The in-order placement of naive HDP (hdp_placement.h) is kept instead when its slowest rank
//     is faster: with a large per-micro-batch overhead, its tighter packing can win by a hair. It
//     is made only when neither single sequences nor packing in order up to the first rank that
//     gets there show that some rank of it reaches the balanced slowest rank; at scale one does
//     within a small part of the batch.
// Planning runs every step, for 12,288 ranks over half a million sequences, so it is built for
// that size: ranks wait in a bucketed queue that pops them in exactly a heap's (load, rank) order
// (so the plan does not depend on it) at a fraction of a heap's cost, the placement lives in
// flat arrays (FlatPlacement, plan_builder.h) that carry the sequences rather than indices to
// look up at random, and the in-order placement is rarely made. Most of what remains is
// allocating the StepPlan's vectors.
#ifndef LOOM_PARALLEL_BALANCE_SCHEDULER_H_
#define LOOM_PARALLEL_BALANCE_SCHEDULER_H_

#include <vector>

#include "absl/status/statusor.h"
#include "parallel/cost_model.h"
#include "parallel/hdp_planner.h"
#include "parallel/step_plan.h"

namespace loom {

absl::StatusOr<StepPlan> PlanBalancedHdp(const std::vector<SequenceSpec>& sequences,
                                         const HdpOptions& options, const CostModel& cost);

}  // namespace loom

#endif  // LOOM_PARALLEL_BALANCE_SCHEDULER_H_
