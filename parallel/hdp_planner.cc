#include "parallel/hdp_planner.h"

#include "absl/strings/str_format.h"
#include "parallel/activation_offload.h"
#include "parallel/hdp_placement.h"
#include "parallel/plan_builder.h"

namespace loom {

absl::Status CheckHdpBatch(const std::vector<SequenceSpec>& sequences, const HdpOptions& options,
                           const CostModel* cost) {
  if (options.world_size < 1 || options.capacity_tokens < 1) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "hdp planning needs world_size >= 1 and capacity_tokens >= 1; got %d and %d",
        options.world_size, options.capacity_tokens));
  }
  const int64_t world_capacity = options.world_size * options.capacity_tokens;
  for (size_t i = 0; i < sequences.size(); ++i) {
    const int64_t length = sequences[i].length;
    if (length > world_capacity && length > options.capacity_tokens &&
        options.offload != nullptr && cost != nullptr &&
        MinRingMembers(length, options.capacity_tokens, *cost, *options.offload,
                       options.world_size) > 0) {
      continue;  // the whole world holds it, offloading
    }
    if (length < 1 || length > world_capacity) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "sequence %d (index %d) has %d tokens; it must have between 1 and the world's capacity "
          "of %d tokens (%d ranks x %d)",
          sequences[i].id, i, sequences[i].length, world_capacity, options.world_size,
          options.capacity_tokens));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<StepPlan> PlanNaiveHdp(const std::vector<SequenceSpec>& sequences,
                                      const HdpOptions& options, const CostModel& cost) {
  if (absl::Status s = CheckHdpBatch(sequences, options); !s.ok()) return s;
  return BuildStepPlan("hdp", sequences, PlaceInOrder(sequences, options), cost,
                       options.capacity_tokens);
}

}  // namespace loom
