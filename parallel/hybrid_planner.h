// HDP rings and ChunkFlow chunks in one plan: a long sequence (L > C) either spans a ring of ranks
// for this step, as the balance scheduler places it, or runs on one rank as dependent chunks of
// `chunk_size` tokens (chunk_planner.h), whichever is cheaper for the step. A ring spreads the
// sequence's quadratic attention over its members but costs every member ring messages and ties
// them to one meeting point; chunks cost no messages and keep memory to the chunk size, but put
// the whole sequence's compute on one rank. So a sequence is chunked when its chunked cost
// (recompute included) fits under the mean rank load of the step, where the greedy placement can
// still balance it, and ringed otherwise. A sequence longer than the world's capacity (world_size
// x C) cannot ring and always runs as chunks.
//
// The rest of the batch (short sequences and ringed ones) is planned by the balance scheduler;
// the chunked sequences then go, costliest first, to the least-loaded ranks, after their HDP
// micro-batches (chunks send no messages, so their order against the rings cannot deadlock).
#ifndef LOOM_PARALLEL_HYBRID_PLANNER_H_
#define LOOM_PARALLEL_HYBRID_PLANNER_H_

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"
#include "parallel/cost_model.h"
#include "parallel/hdp_planner.h"
#include "parallel/step_plan.h"

namespace loom {

struct HybridOptions {
  HdpOptions hdp;          // world size and C, tokens per rank per micro-batch
  int64_t chunk_size = 0;  // tokens per chunk; <= C
  int keep = 0;            // K: chunks of a sequence that keep their activations; 0 = all
};

absl::StatusOr<StepPlan> PlanHdpWithChunks(const std::vector<SequenceSpec>& sequences,
                                           const HybridOptions& options, const CostModel& cost);

}  // namespace loom

#endif  // LOOM_PARALLEL_HYBRID_PLANNER_H_
