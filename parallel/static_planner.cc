#include "parallel/static_planner.h"

#include "absl/strings/str_format.h"
#include "parallel/plan_builder.h"
#include "parallel/ring_share.h"

namespace loom {

absl::StatusOr<StepPlan> PlanStatic(const std::vector<SequenceSpec>& sequences,
                                    const StaticPlannerOptions& options, const CostModel& cost) {
  const int world = options.world_size;
  const int cp = options.cp_size;
  const int64_t capacity = options.capacity_tokens;
  if (world < 1 || cp < 1 || world % cp != 0 || capacity < 1) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "static planner needs world_size >= 1, cp_size dividing it and capacity_tokens >= 1; got "
        "world_size %d, cp_size %d, capacity_tokens %d",
        world, cp, capacity));
  }
  // Pack in batch order; a micro-batch closes when the next sequence's share would push any member
  // past C.
  std::vector<std::vector<int64_t>> micro_batches;
  std::vector<int64_t> member_tokens(static_cast<size_t>(cp), 0);
  std::vector<int64_t> shares(static_cast<size_t>(cp));
  for (size_t i = 0; i < sequences.size(); ++i) {
    const SequenceSpec& seq = sequences[i];
    bool fits_empty = true;
    bool fits = !micro_batches.empty();
    for (int m = 0; m < cp; ++m) {
      shares[static_cast<size_t>(m)] = TokenCount(ZigzagShare(seq.id, seq.length, cp, m));
      fits_empty = fits_empty && shares[static_cast<size_t>(m)] <= capacity;
      fits = fits && member_tokens[static_cast<size_t>(m)] + shares[static_cast<size_t>(m)] <=
                         capacity;
    }
    if (!fits_empty) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "sequence %d (index %d) has %d tokens, more than a micro-batch of the static mesh holds "
          "(cp_size %d x capacity %d tokens)",
          seq.id, i, seq.length, cp, capacity));
    }
    if (!fits) {
      micro_batches.emplace_back();
      std::fill(member_tokens.begin(), member_tokens.end(), 0);
    }
    micro_batches.back().push_back(static_cast<int64_t>(i));
    for (int m = 0; m < cp; ++m) {
      member_tokens[static_cast<size_t>(m)] += shares[static_cast<size_t>(m)];
    }
  }

  const int dp = world / cp;
  Placement placement;
  placement.local.resize(static_cast<size_t>(world));
  for (size_t j = 0; j < micro_batches.size(); ++j) {
    const int group = static_cast<int>(j % static_cast<size_t>(dp));
    const int slot = static_cast<int>(j / static_cast<size_t>(dp));
    if (cp == 1) {
      auto& slots = placement.local[static_cast<size_t>(group)];
      slots.resize(static_cast<size_t>(slot + 1));
      slots[static_cast<size_t>(slot)] = micro_batches[j];
      continue;
    }
    RingPlacement ring;
    ring.micro_batch = slot;
    ring.sequences = micro_batches[j];
    for (int m = 0; m < cp; ++m) ring.members.push_back(group * cp + m);
    placement.rings.push_back(std::move(ring));
  }
  return BuildStepPlan("static", sequences, placement, cost, capacity);
}

}  // namespace loom
