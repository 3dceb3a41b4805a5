// Selective activation offloading (ByteScale section 5): a micro-batch may keep part of the
// activations it saves for the backward in host memory instead of on the GPU, copying them out
// over the host link while its forward computes and back while its backward does. The copy is
// free as long as the compute hides it, and compute per token grows with a sequence's length
// (attention is quadratic) while the bytes per token do not, so a long sequence can offload far
// more of its activations than a short one: the ratio is chosen per micro-batch. A ring member
// that offloads holds more tokens in the same memory, so a long sequence needs fewer ranks, and
// each member computes more per ring step against its K/V messages.
#ifndef LOOM_PARALLEL_ACTIVATION_OFFLOAD_H_
#define LOOM_PARALLEL_ACTIVATION_OFFLOAD_H_

#include <cstdint>

#include "parallel/cost_model.h"
#include "parallel/step_plan.h"

namespace loom {

struct OffloadPolicy {
  int64_t budget_bytes = 0;        // what a rank's GPU may hold (the plan's activation budget)
  int64_t host_memory_bytes = 0;   // host memory per GPU for offloaded activations (0: no limit)
  double max_ratio = 1.0;          // the largest share of a micro-batch's activations offloaded
};

// The largest ratio a Forward of `tokens` that computes for `forward_s` seconds can offload with
// the copy hidden by its compute (cost.host_bytes_per_s), within the host memory and max_ratio.
double HiddenOffloadRatio(int64_t tokens, double forward_s, const CostModel& cost,
                          const OffloadPolicy& policy);

// The ratio a micro-batch of `tokens` must offload for its memory (CostModel::MicroBatchBytes) to
// fit the budget: 0 when it fits; above 1 when not even offloading every activation would.
double NeededOffloadRatio(int64_t tokens, const CostModel& cost, const OffloadPolicy& policy);

// The fewest members (at least 2, at most ceil(L / C) and `max_members`) among which a sequence of
// `length` tokens fits, each member offloading no more than its compute hides; 0 when not even
// `max_members` do (only possible below ceil(L / C), where no member needs to offload at all).
int MinRingMembers(int64_t length, int64_t capacity_tokens, const CostModel& cost,
                   const OffloadPolicy& policy, int max_members);

// Sets the offload ratio of every Forward whose micro-batch would not fit the budget to the
// ratio it needs (at most 1), so that the plan's memory, as RankMemoryTimeline counts it, stays
// within the budget wherever offloading can make it.
void ApplyOffload(StepPlan& plan, const CostModel& cost, const OffloadPolicy& policy);

}  // namespace loom

#endif  // LOOM_PARALLEL_ACTIVATION_OFFLOAD_H_
