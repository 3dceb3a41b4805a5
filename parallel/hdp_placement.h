// Naive HDP placement: sequences in batch order onto a dynamic mesh with C tokens per rank per
// micro-batch. A sequence of L <= C tokens goes first fit to the first (slot, rank) with room; a
// longer one is spread over ceil(L/C) ranks, the lowest that are still empty in the first slot
// that has enough of them. The naive planner runs it as is; the balance scheduler keeps it when it
// happens to be the cheaper of the two.
#ifndef LOOM_PARALLEL_HDP_PLACEMENT_H_
#define LOOM_PARALLEL_HDP_PLACEMENT_H_

#include <vector>

#include "parallel/cost_model.h"
#include "parallel/hdp_planner.h"
#include "parallel/plan_builder.h"
#include "parallel/step_plan.h"

namespace loom {

// Needs a batch that CheckHdpBatch accepts.
FlatPlacement PlaceInOrder(const std::vector<SequenceSpec>& sequences, const HdpOptions& options);

// Whether some rank of PlaceInOrder's placement runs for at least `seconds` (the cost model's
// time summed over its micro-batches, as SlowestRankSeconds counts it, up to rounding), answered
// without making the placement: first from single sequences (the rank holding one whole, or
// every member of its ceil(L/C)-rank ring, runs at least that share and one micro-batch), then by
// placing in order, loads only, up to the first rank that gets there. The balance scheduler
// asks this with its own slowest rank, which in-order placement at scale exceeds early on.
bool InOrderReaches(const std::vector<SequenceSpec>& sequences, const HdpOptions& options,
                    const CostModel& cost, double seconds);

}  // namespace loom

#endif  // LOOM_PARALLEL_HDP_PLACEMENT_H_
