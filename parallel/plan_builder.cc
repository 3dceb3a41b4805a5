#include "parallel/plan_builder.h"

#include <algorithm>
#include <numeric>
#include <utility>

#include "parallel/ring_share.h"

namespace loom {
namespace {

// A rank's part in one ring.
struct Membership {
  int micro_batch;
  int ring_id;
  int member;
};

}  // namespace

double SlowestRankSeconds(const std::vector<SequenceSpec>& sequences, const Placement& placement,
                          const CostModel& cost) {
  const double micro_batch_s = cost.n_layers * cost.overhead_s;
  // Slots each rank runs: those with whole sequences or ring shares.
  std::vector<std::vector<bool>> used(placement.local.size());
  std::vector<double> load(placement.local.size(), 0.0);
  for (size_t r = 0; r < placement.local.size(); ++r) {
    used[r].assign(placement.local[r].size(), false);
    for (size_t slot = 0; slot < placement.local[r].size(); ++slot) {
      for (const int64_t s : placement.local[r][slot]) {
        load[r] += cost.DocumentSeconds(sequences[static_cast<size_t>(s)].length);
        used[r][slot] = true;
      }
    }
  }
  for (const RingPlacement& ring : placement.rings) {
    const int size = static_cast<int>(ring.members.size());
    for (int m = 0; m < size; ++m) {
      const size_t r = static_cast<size_t>(ring.members[static_cast<size_t>(m)]);
      for (const int64_t s : ring.sequences) {
        const SequenceSpec& seq = sequences[static_cast<size_t>(s)];
        for (const TokenRange& t : ZigzagShare(seq.id, seq.length, size, m)) {
          load[r] += cost.RangeSeconds(t.begin, t.end);
        }
      }
      if (used[r].size() <= static_cast<size_t>(ring.micro_batch)) {
        used[r].resize(static_cast<size_t>(ring.micro_batch + 1), false);
      }
      used[r][static_cast<size_t>(ring.micro_batch)] = true;
    }
  }
  double slowest = 0.0;
  for (size_t r = 0; r < load.size(); ++r) {
    for (const bool u : used[r]) load[r] += u ? micro_batch_s : 0.0;
    slowest = std::max(slowest, load[r]);
  }
  return slowest;
}

StepPlan BuildStepPlan(std::string planner, const std::vector<SequenceSpec>& sequences,
                       const Placement& placement, const CostModel& cost,
                       int64_t capacity_tokens) {
  const int world = static_cast<int>(placement.local.size());
  StepPlan plan;
  plan.planner = std::move(planner);
  plan.capacity_tokens = capacity_tokens;
  plan.activation_budget_bytes = cost.MicroBatchBytes(capacity_tokens);
  plan.sequences = sequences;
  plan.ranks.resize(static_cast<size_t>(world));

  // Ring ids in slot order (ties in placement order) give every rank the same global ring order.
  std::vector<size_t> order(placement.rings.size());
  std::iota(order.begin(), order.end(), size_t{0});
  std::stable_sort(order.begin(), order.end(), [&](size_t x, size_t y) {
    return placement.rings[x].micro_batch < placement.rings[y].micro_batch;
  });
  std::vector<std::vector<Membership>> memberships(static_cast<size_t>(world));
  std::vector<int64_t> ring_bytes(placement.rings.size());
  for (size_t id = 0; id < order.size(); ++id) {
    const RingPlacement& ring = placement.rings[order[id]];
    const int size = static_cast<int>(ring.members.size());
    int64_t largest_share = 0;
    for (int m = 0; m < size; ++m) {
      int64_t share = 0;
      for (const int64_t s : ring.sequences) {
        share += TokenCount(ZigzagShare(sequences[static_cast<size_t>(s)].id,
                                        sequences[static_cast<size_t>(s)].length, size, m));
      }
      largest_share = std::max(largest_share, share);
      memberships[static_cast<size_t>(ring.members[static_cast<size_t>(m)])].push_back(
          {ring.micro_batch, static_cast<int>(id), m});
    }
    ring_bytes[id] = largest_share * cost.kv_bytes_per_token;
  }

  const int64_t total_targets = TotalTargets(sequences);
  for (int rank = 0; rank < world; ++rank) {
    const auto& slots = placement.local[static_cast<size_t>(rank)];
    const std::vector<Membership>& mine = memberships[static_cast<size_t>(rank)];
    int slot_count = static_cast<int>(slots.size());
    for (const Membership& m : mine) slot_count = std::max(slot_count, m.micro_batch + 1);
    std::vector<Action>& actions = plan.ranks[static_cast<size_t>(rank)].actions;
    // Forward and Backward per slot, one exchange per ring, GradSync.
    actions.reserve(2 * static_cast<size_t>(slot_count) + mine.size() + 1);
    size_t next_ring = 0;  // memberships are already in ring id order, hence in slot order
    for (int slot = 0; slot < slot_count; ++slot) {
      Action forward;
      forward.micro_batch = slot;
      for (; next_ring < mine.size() && mine[next_ring].micro_batch == slot; ++next_ring) {
        const RingPlacement& ring = placement.rings[order[static_cast<size_t>(
            mine[next_ring].ring_id)]];
        Action exchange;
        exchange.kind = ActionKind::kRingExchange;
        exchange.micro_batch = slot;
        exchange.ring_id = mine[next_ring].ring_id;
        exchange.ring = ring.members;
        exchange.bytes_per_step = ring_bytes[static_cast<size_t>(exchange.ring_id)];
        for (const int64_t s : ring.sequences) {
          const SequenceSpec& seq = sequences[static_cast<size_t>(s)];
          for (const TokenRange& r : ZigzagShare(seq.id, seq.length,
                                                 static_cast<int>(ring.members.size()),
                                                 mine[next_ring].member)) {
            exchange.tokens.push_back(r);
          }
        }
        forward.tokens.insert(forward.tokens.end(), exchange.tokens.begin(),
                              exchange.tokens.end());
        actions.push_back(std::move(exchange));
      }
      if (slot < static_cast<int>(slots.size())) {
        forward.tokens.reserve(forward.tokens.size() + slots[static_cast<size_t>(slot)].size());
        for (const int64_t s : slots[static_cast<size_t>(slot)]) {
          const SequenceSpec& seq = sequences[static_cast<size_t>(s)];
          forward.tokens.push_back({seq.id, 0, seq.length});
        }
      }
      if (forward.tokens.empty()) continue;
      Action backward = forward;
      backward.kind = ActionKind::kBackward;
      actions.push_back(std::move(forward));
      actions.push_back(std::move(backward));
    }
    Action sync;
    sync.kind = ActionKind::kGradSync;
    sync.gradient_bytes = cost.gradient_bytes;
    sync.total_targets = total_targets;
    actions.push_back(std::move(sync));
  }
  return plan;
}

}  // namespace loom
