// Turns a planner's decision (which rank computes which sequences in which micro-batch slot, and
// which rings spread long sequences) into a StepPlan. Every planner ends here, so all plans share
// one action order: per rank, slots in increasing order; in a slot, its rings by increasing ring
// id, then Forward and Backward; GradSync last. Ring ids increase with the slot, so every rank
// meets its rings in one global order and no two ranks can wait on each other in a cycle.
#ifndef LOOM_PARALLEL_PLAN_BUILDER_H_
#define LOOM_PARALLEL_PLAN_BUILDER_H_

#include <cstdint>
#include <span>
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

// The same decision in flat arrays, which planners at scale fill without a vector per rank,
// slot and ring (a Placement of 12,288 ranks costs over a hundred thousand allocations to make
// and free). Sequences appear as themselves rather than as indices into the batch, so that
// measuring and building the plan walk memory in order: with half a million sequences, reading
// the batch at random was most of the time spent building the plan.
struct FlatPlacement {
  // Rank r's whole sequences are local[rank_begin[r]] up to local[rank_begin[r + 1]], by
  // increasing slot, and within a slot in the order the plan lists them.
  struct Local {
    int slot = 0;
    SequenceSpec sequence;
  };
  std::vector<Local> local;
  std::vector<size_t> rank_begin = {0};  // world + 1 offsets into local

  // A RingPlacement, its members and sequences being ranges of ring_members and ring_sequences.
  struct Ring {
    int micro_batch = 0;
    size_t member_begin = 0;
    size_t member_end = 0;
    size_t sequence_begin = 0;
    size_t sequence_end = 0;
  };
  std::vector<Ring> rings;
  std::vector<int> ring_members;
  std::vector<SequenceSpec> ring_sequences;

  int world_size() const { return static_cast<int>(rank_begin.size()) - 1; }
  void AddRing(int micro_batch, std::span<const int> members,
               std::span<const SequenceSpec> sequences);
};

// The largest over ranks of the sum over its micro-batches of the cost model's time: what
// MeasurePlan(BuildStepPlan(...)).max_compute_s reports, without building the plan.
double SlowestRankSeconds(const FlatPlacement& placement, const CostModel& cost);

// The plan for `placement` over a world of placement.world_size() ranks.
StepPlan BuildStepPlan(std::string planner, const std::vector<SequenceSpec>& sequences,
                       const FlatPlacement& placement, const CostModel& cost,
                       int64_t capacity_tokens);
// The same for a Placement, over a world of placement.local.size() ranks.
StepPlan BuildStepPlan(std::string planner, const std::vector<SequenceSpec>& sequences,
                       const Placement& placement, const CostModel& cost, int64_t capacity_tokens);

}  // namespace loom

#endif  // LOOM_PARALLEL_PLAN_BUILDER_H_
