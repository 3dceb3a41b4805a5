// ChunkFlow (arXiv 2503.02356) as a planner: the global batch becomes chunks of at most C tokens
// (data/chunk_packing.h: long sequences cut into dependent chunks, short ones packed), and every
// rank runs whole chunks, data parallel over the ranks. A long sequence's chunks stay on one rank:
// they run forward in order, each attending to the K/V of the earlier ones (its `context`), and
// backward in reverse. State-aware scheduling with parameter K: of a sequence's n chunks only the
// last K keep their activations from the forward to the backward; the first n - K drop them and
// are recomputed just before their backward. A rank's activation memory therefore follows C and
// K, plus the K/V state of the sequence in flight, not the longest sequence.
//
// Assignment: units (a long sequence's chunks together, or one standalone chunk) go longest
// first to the least-loaded rank under the cost model, recompute included (LPT).
#ifndef LOOM_PARALLEL_CHUNK_PLANNER_H_
#define LOOM_PARALLEL_CHUNK_PLANNER_H_

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"
#include "parallel/cost_model.h"
#include "parallel/step_plan.h"

namespace loom {

struct ChunkPlannerOptions {
  int world_size = 1;
  int64_t chunk_size = 0;  // C
  int keep = 0;            // K: chunks of a sequence whose activations are kept; 0 = all
};

// What one rank runs whole: a long sequence's dependent chunks (forward in order, each with the
// earlier chunks as context; backward in reverse, recomputing the chunks that dropped their
// activations), or one standalone chunk.
struct ChunkUnit {
  struct Part {
    std::vector<TokenRange> tokens;
    std::vector<TokenRange> context;
    bool keep = true;
  };
  std::vector<Part> chunks;
  double seconds = 0.0;          // forward + backward (+ recompute) under the cost model
  int64_t chunked_length = 0;    // the long sequence's length; 0 for a standalone chunk
  int kept = 1;                  // chunks keeping activations
};

// The chunks of `sequences` (data/chunk_packing.h) grouped into units, in packing order.
absl::StatusOr<std::vector<ChunkUnit>> MakeChunkUnits(const std::vector<SequenceSpec>& sequences,
                                                      int64_t chunk_size, int keep,
                                                      const CostModel& cost);

// Appends a unit's actions, numbering its micro-batches from *slot on.
void AppendChunkUnit(const ChunkUnit& unit, int* slot, std::vector<Action>* actions);

// The most memory any rank running `units` needs: one chunk of `chunk_size` being computed, the
// other kept chunks' activations, and the K/V state and pending loss gradients of the longest
// chunked sequence.
int64_t ChunkUnitsBudget(const std::vector<ChunkUnit>& units, int64_t chunk_size,
                         const CostModel& cost);

// The plan's activation budget is what the schedule needs at most: one chunk of C tokens being
// computed, max(K, 1) - 1 more chunks of activations kept (every chunk's when K = 0), and the K/V
// state and pending loss gradients of the batch's longest chunked sequence.
absl::StatusOr<StepPlan> PlanChunkFlow(const std::vector<SequenceSpec>& sequences,
                                       const ChunkPlannerOptions& options, const CostModel& cost);

}  // namespace loom

#endif  // LOOM_PARALLEL_CHUNK_PLANNER_H_
