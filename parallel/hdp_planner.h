// Hybrid data parallelism on a dynamic mesh (ByteScale), without balancing: every rank holds up to
// C tokens per micro-batch; a sequence of L <= C tokens stays whole on one rank, a longer one is
// zigzag-split over ceil(L/C) ranks (any count) that form its ring for this step. Sequences are
// placed in batch order: a long one onto the first micro-batch slot with enough empty ranks, a
// short one first-fit into the first (slot, rank) with room. The balance scheduler
// (balance_scheduler.h) is the balanced counterpart.
#ifndef LOOM_PARALLEL_HDP_PLANNER_H_
#define LOOM_PARALLEL_HDP_PLANNER_H_

#include <cstdint>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "parallel/cost_model.h"
#include "parallel/step_plan.h"

namespace loom {

struct OffloadPolicy;

struct HdpOptions {
  int world_size = 1;
  int64_t capacity_tokens = 0;  // C: tokens per rank per micro-batch
  // The balance scheduler only: with a policy, a ring member may hold more than C tokens of a
  // long sequence, offloading the activations that would not fit (activation_offload.h), so the
  // sequence spans fewer ranks.
  const OffloadPolicy* offload = nullptr;
  // The balance scheduler only: a ring member's load also counts the ring messages its attention
  // does not hide (the simulator's overlap model, over the inter-node link when the world spans
  // nodes), so that its members take fewer other sequences and every rank ends at about the same
  // time rather than computes for about the same time. Rings are still sized by compute alone:
  // every member of a ring waits for about the same messages, so a wider ring would waste more.
  bool count_ring_messages = false;
};

// Options in range and every sequence within the world's capacity (world_size * C tokens, or,
// with an offload policy and the cost model, what the whole world holds offloading); the error
// names the first sequence that is not.
absl::Status CheckHdpBatch(const std::vector<SequenceSpec>& sequences, const HdpOptions& options,
                           const CostModel* cost = nullptr);

absl::StatusOr<StepPlan> PlanNaiveHdp(const std::vector<SequenceSpec>& sequences,
                                      const HdpOptions& options, const CostModel& cost);

}  // namespace loom

#endif  // LOOM_PARALLEL_HDP_PLANNER_H_
