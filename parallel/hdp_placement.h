// Naive HDP placement: sequences in batch order onto a dynamic mesh with C tokens per rank per
// micro-batch. A sequence of L <= C tokens goes first fit to the first (slot, rank) with room; a
// longer one is spread over ceil(L/C) ranks, the lowest that are still empty in the first slot
// that has enough of them. The naive planner runs it as is; the balance scheduler keeps it when it
// happens to be the cheaper of the two.
#ifndef LOOM_PARALLEL_HDP_PLACEMENT_H_
#define LOOM_PARALLEL_HDP_PLACEMENT_H_

#include <vector>

#include "parallel/hdp_planner.h"
#include "parallel/plan_builder.h"
#include "parallel/step_plan.h"

namespace loom {

// Needs a batch that CheckHdpBatch accepts.
Placement PlaceInOrder(const std::vector<SequenceSpec>& sequences, const HdpOptions& options);

}  // namespace loom

#endif  // LOOM_PARALLEL_HDP_PLACEMENT_H_
