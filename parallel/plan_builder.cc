#include "parallel/plan_builder.h"

#include <algorithm>
#include <numeric>
#include <utility>

#include "parallel/ring_share.h"

namespace loom {
namespace {

using Local = FlatPlacement::Local;
using Ring = FlatPlacement::Ring;

// A rank's part in one ring.
struct Membership {
  int micro_batch;
  int ring_id;
  int member;
};

}  // namespace

void FlatPlacement::AddRing(int micro_batch, std::span<const int> members,
                            std::span<const SequenceSpec> sequences) {
  Ring ring;
  ring.micro_batch = micro_batch;
  ring.member_begin = ring_members.size();
  ring_members.insert(ring_members.end(), members.begin(), members.end());
  ring.member_end = ring_members.size();
  ring.sequence_begin = ring_sequences.size();
  ring_sequences.insert(ring_sequences.end(), sequences.begin(), sequences.end());
  ring.sequence_end = ring_sequences.size();
  rings.push_back(ring);
}

double SlowestRankSeconds(const FlatPlacement& placement, const CostModel& cost) {
  const double micro_batch_s = cost.n_layers * cost.overhead_s;
  const size_t world = static_cast<size_t>(placement.world_size());
  // Slots each rank runs (those with whole sequences or ring shares), as a bitmap per rank laid
  // end to end: used[used_begin[r] + slot].
  std::vector<size_t> used_begin(world + 1, 0);
  for (size_t r = 0; r < world; ++r) {
    if (placement.rank_begin[r + 1] > placement.rank_begin[r]) {
      used_begin[r + 1] =
          static_cast<size_t>(placement.local[placement.rank_begin[r + 1] - 1].slot) + 1;
    }
  }
  for (const Ring& ring : placement.rings) {
    for (size_t m = ring.member_begin; m < ring.member_end; ++m) {
      size_t& slots = used_begin[static_cast<size_t>(placement.ring_members[m]) + 1];
      slots = std::max(slots, static_cast<size_t>(ring.micro_batch) + 1);
    }
  }
  std::partial_sum(used_begin.begin(), used_begin.end(), used_begin.begin());
  std::vector<char> used(used_begin.back(), 0);
  std::vector<double> load(world, 0.0);
  for (size_t r = 0; r < world; ++r) {
    for (size_t i = placement.rank_begin[r]; i < placement.rank_begin[r + 1]; ++i) {
      const Local& l = placement.local[i];
      load[r] += cost.DocumentSeconds(l.sequence.length);
      used[used_begin[r] + static_cast<size_t>(l.slot)] = 1;
    }
  }
  TokenRange pieces[2];
  for (const Ring& ring : placement.rings) {
    const int size = static_cast<int>(ring.member_end - ring.member_begin);
    for (int m = 0; m < size; ++m) {
      const size_t r = static_cast<size_t>(placement.ring_members[ring.member_begin + m]);
      for (size_t s = ring.sequence_begin; s < ring.sequence_end; ++s) {
        const SequenceSpec& seq = placement.ring_sequences[s];
        const int count = ZigzagShareInto(seq.id, seq.length, size, m, pieces);
        for (int p = 0; p < count; ++p) {
          load[r] += cost.RangeSeconds(pieces[p].begin, pieces[p].end);
        }
      }
      used[used_begin[r] + static_cast<size_t>(ring.micro_batch)] = 1;
    }
  }
  double slowest = 0.0;
  for (size_t r = 0; r < world; ++r) {
    for (size_t u = used_begin[r]; u < used_begin[r + 1]; ++u) {
      if (used[u]) load[r] += micro_batch_s;
    }
    slowest = std::max(slowest, load[r]);
  }
  return slowest;
}

StepPlan BuildStepPlan(std::string planner, const std::vector<SequenceSpec>& sequences,
                       const FlatPlacement& placement, const CostModel& cost,
                       int64_t capacity_tokens) {
  const size_t world = static_cast<size_t>(placement.world_size());
  const std::vector<Local>& local = placement.local;
  const std::vector<Ring>& rings = placement.rings;
  StepPlan plan;
  plan.planner = std::move(planner);
  plan.capacity_tokens = capacity_tokens;
  plan.activation_budget_bytes = cost.MicroBatchBytes(capacity_tokens);
  plan.sequences = sequences;
  plan.ranks.resize(world);

  // Ring ids in slot order (ties in placement order) give every rank the same global ring order.
  std::vector<size_t> order(rings.size());
  std::iota(order.begin(), order.end(), size_t{0});
  std::stable_sort(order.begin(), order.end(), [&](size_t x, size_t y) {
    return rings[x].micro_batch < rings[y].micro_batch;
  });
  // Every rank's memberships in ring id order, hence in slot order, in one array.
  std::vector<size_t> member_begin(world + 1, 0);
  for (const int r : placement.ring_members) ++member_begin[static_cast<size_t>(r) + 1];
  std::partial_sum(member_begin.begin(), member_begin.end(), member_begin.begin());
  std::vector<Membership> memberships(member_begin.back());
  std::vector<size_t> next_member(member_begin.begin(), member_begin.end() - 1);
  std::vector<int64_t> ring_bytes(rings.size());
  TokenRange pieces[2];
  for (size_t id = 0; id < order.size(); ++id) {
    const Ring& ring = rings[order[id]];
    const int size = static_cast<int>(ring.member_end - ring.member_begin);
    int64_t largest_share = 0;
    for (int m = 0; m < size; ++m) {
      int64_t share = 0;
      for (size_t s = ring.sequence_begin; s < ring.sequence_end; ++s) {
        const SequenceSpec& seq = placement.ring_sequences[s];
        const int count = ZigzagShareInto(seq.id, seq.length, size, m, pieces);
        for (int p = 0; p < count; ++p) share += pieces[p].size();
      }
      largest_share = std::max(largest_share, share);
      const size_t r = static_cast<size_t>(placement.ring_members[ring.member_begin + m]);
      memberships[next_member[r]++] = {ring.micro_batch, static_cast<int>(id), m};
    }
    ring_bytes[id] = largest_share * cost.kv_bytes_per_token;
  }

  const int64_t total_targets = TotalTargets(sequences);
  for (size_t rank = 0; rank < world; ++rank) {
    const Local* const local_end = local.data() + placement.rank_begin[rank + 1];
    const Membership* const mine_end = memberships.data() + member_begin[rank + 1];
    // One exchange per ring, Forward and Backward per slot (at most), GradSync: counted first so
    // that the actions are allocated once.
    size_t action_count = 1 + (member_begin[rank + 1] - member_begin[rank]);
    {
      const Local* l = local.data() + placement.rank_begin[rank];
      const Membership* m = memberships.data() + member_begin[rank];
      while (l != local_end || m != mine_end) {
        const int slot = std::min(l != local_end ? l->slot : m->micro_batch,
                                  m != mine_end ? m->micro_batch : l->slot);
        while (m != mine_end && m->micro_batch == slot) ++m;
        while (l != local_end && l->slot == slot) ++l;
        action_count += 2;
      }
    }
    std::vector<Action>& actions = plan.ranks[rank].actions;
    actions.reserve(action_count);
    const Local* l = local.data() + placement.rank_begin[rank];
    const Membership* m = memberships.data() + member_begin[rank];
    while (l != local_end || m != mine_end) {
      const int slot = std::min(l != local_end ? l->slot : m->micro_batch,
                                m != mine_end ? m->micro_batch : l->slot);
      const size_t first_exchange = actions.size();
      size_t tokens = 0;
      for (; m != mine_end && m->micro_batch == slot; ++m) {
        const Ring& ring = rings[order[static_cast<size_t>(m->ring_id)]];
        const int size = static_cast<int>(ring.member_end - ring.member_begin);
        Action& exchange = actions.emplace_back();
        exchange.kind = ActionKind::kRingExchange;
        exchange.micro_batch = slot;
        exchange.ring_id = m->ring_id;
        exchange.ring.assign(placement.ring_members.data() + ring.member_begin,
                             placement.ring_members.data() + ring.member_end);
        exchange.bytes_per_step = ring_bytes[static_cast<size_t>(exchange.ring_id)];
        exchange.tokens.reserve(2 * (ring.sequence_end - ring.sequence_begin));
        for (size_t s = ring.sequence_begin; s < ring.sequence_end; ++s) {
          const SequenceSpec& seq = placement.ring_sequences[s];
          const int count = ZigzagShareInto(seq.id, seq.length, size, m->member, pieces);
          exchange.tokens.insert(exchange.tokens.end(), pieces, pieces + count);
        }
        tokens += exchange.tokens.size();
      }
      const Local* const slot_end =
          std::find_if(l, local_end, [slot](const Local& x) { return x.slot != slot; });
      tokens += static_cast<size_t>(slot_end - l);
      // A ring member whose shares are all empty (sequences shorter than the ring) still runs
      // the micro-batch: its K/V blocks are empty, but it passes the others' along the ring.
      if (tokens == 0 && first_exchange == actions.size()) {
        l = slot_end;
        continue;
      }
      // Made in place: the actions were reserved in full, so references into them hold.
      Action& forward = actions.emplace_back();
      forward.micro_batch = slot;
      forward.tokens.reserve(tokens);
      for (size_t e = first_exchange; e + 1 < actions.size(); ++e) {
        forward.tokens.insert(forward.tokens.end(), actions[e].tokens.begin(),
                              actions[e].tokens.end());
      }
      for (; l != slot_end; ++l) {
        forward.tokens.push_back({l->sequence.id, 0, l->sequence.length});
      }
      actions.push_back(forward);
      actions.back().kind = ActionKind::kBackward;
    }
    Action& sync = actions.emplace_back();
    sync.kind = ActionKind::kGradSync;
    sync.gradient_bytes = cost.gradient_bytes;
    sync.total_targets = total_targets;
  }
  return plan;
}

StepPlan BuildStepPlan(std::string planner, const std::vector<SequenceSpec>& sequences,
                       const Placement& placement, const CostModel& cost,
                       int64_t capacity_tokens) {
  FlatPlacement flat;
  flat.rank_begin.reserve(placement.local.size() + 1);
  for (const auto& slots : placement.local) {
    for (size_t slot = 0; slot < slots.size(); ++slot) {
      for (const int64_t s : slots[slot]) {
        flat.local.push_back({static_cast<int>(slot), sequences[static_cast<size_t>(s)]});
      }
    }
    flat.rank_begin.push_back(flat.local.size());
  }
  std::vector<SequenceSpec> ring_sequences;
  for (const RingPlacement& ring : placement.rings) {
    ring_sequences.clear();
    for (const int64_t s : ring.sequences) {
      ring_sequences.push_back(sequences[static_cast<size_t>(s)]);
    }
    flat.AddRing(ring.micro_batch, ring.members, ring_sequences);
  }
  return BuildStepPlan(std::move(planner), sequences, flat, cost, capacity_tokens);
}

}  // namespace loom
