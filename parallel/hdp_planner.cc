#include "parallel/hdp_planner.h"

#include "absl/strings/str_format.h"
#include "parallel/hdp_placement.h"
#include "parallel/plan_builder.h"

namespace loom {

absl::Status CheckHdpBatch(const std::vector<SequenceSpec>& sequences, const HdpOptions& options) {
  if (options.world_size < 1 || options.capacity_tokens < 1) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "hdp planning needs world_size >= 1 and capacity_tokens >= 1; got %d and %d",
        options.world_size, options.capacity_tokens));
  }
  const int64_t world_capacity = options.world_size * options.capacity_tokens;
  for (size_t i = 0; i < sequences.size(); ++i) {
    if (sequences[i].length < 1 || sequences[i].length > world_capacity) {
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
