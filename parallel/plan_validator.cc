#include "parallel/plan_validator.h"

#include <algorithm>
#include <cstdint>
#include <limits>
#include <map>
#include <numeric>
#include <optional>
#include <set>
#include <string>
#include <tuple>
#include <unordered_map>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "parallel/plan_metrics.h"

namespace loom {
namespace {

std::string Where(int rank, size_t index, const Action& a) {
  if (a.stage != 0 || a.prev_rank >= 0 || a.next_rank >= 0) {
    return absl::StrFormat("rank %d action %d (%s, micro-batch %d, stage %d)", rank, index,
                           ActionKindName(a.kind), a.micro_batch, a.stage);
  }
  return absl::StrFormat("rank %d action %d (%s, micro-batch %d)", rank, index,
                         ActionKindName(a.kind), a.micro_batch);
}

// A micro-batch on one stage: what Forward, Recompute, Backward and WeightGrad pair up by.
using SlotStage = std::pair<int, int>;
SlotStage KeyOf(const Action& a) { return {a.micro_batch, a.stage}; }

std::string Members(const std::vector<int>& ring) {
  return "[" + absl::StrJoin(ring, " ") + "]";
}

std::string Range(const TokenRange& r) {
  return absl::StrFormat("sequence %d tokens [%d, %d)", r.sequence_id, r.begin, r.end);
}

// Sequence id -> its place in the batch. The validator looks up the sequence of every token range
// of the plan (about 100 million of them for 12,288 GPUs), so ids that fill a short span, as the
// planners' 0, 1, 2, ... do, are looked up in a table indexed by id rather than hashed; sparse
// ids fall back to a hash map.
class SequenceIndex {
 public:
  explicit SequenceIndex(const std::vector<SequenceSpec>& sequences) {
    if (sequences.empty()) return;
    const auto [lowest, highest] = std::minmax_element(
        sequences.begin(), sequences.end(),
        [](const SequenceSpec& x, const SequenceSpec& y) { return x.id < y.id; });
    // Unsigned, so that the span of any two int64 ids is exact.
    const uint64_t span = static_cast<uint64_t>(highest->id) - static_cast<uint64_t>(lowest->id);
    if (span < 4 * static_cast<uint64_t>(sequences.size())) {
      lowest_ = lowest->id;
      table_.assign(span + 1, kAbsent);
    }
  }

  // Records that `id` sits at `place`; false if the id was recorded before.
  bool Add(int64_t id, size_t place) {
    if (table_.empty()) return sparse_.emplace(id, place).second;
    size_t& slot = table_[Offset(id)];
    if (slot != kAbsent) return false;
    slot = place;
    return true;
  }

  // The place of `id`, or nullopt for an id not in the batch.
  std::optional<size_t> Find(int64_t id) const {
    if (table_.empty()) {
      auto it = sparse_.find(id);
      return it == sparse_.end() ? std::nullopt : std::optional<size_t>(it->second);
    }
    const uint64_t offset = Offset(id);
    if (offset >= table_.size() || table_[offset] == kAbsent) return std::nullopt;
    return table_[offset];
  }

  // The place of an id known to be in the batch (CheckShape has looked up every range's).
  size_t At(int64_t id) const { return *Find(id); }

 private:
  static constexpr size_t kAbsent = ~size_t{0};
  uint64_t Offset(int64_t id) const {
    return static_cast<uint64_t>(id) - static_cast<uint64_t>(lowest_);
  }

  int64_t lowest_ = 0;
  std::vector<size_t> table_;  // by id - lowest_; empty when the ids are sparse
  std::unordered_map<int64_t, size_t> sparse_;
};

absl::Status CheckShape(const StepPlan& plan, SequenceIndex* index) {
  if (plan.ranks.empty()) return absl::InvalidArgumentError("plan has no ranks");
  for (size_t i = 0; i < plan.sequences.size(); ++i) {
    const SequenceSpec& s = plan.sequences[i];
    if (s.length < 1) {
      return absl::InvalidArgumentError(
          absl::StrFormat("sequence %d has length %d; every sequence needs a token", s.id,
                          s.length));
    }
    if (!index->Add(s.id, i)) {
      return absl::InvalidArgumentError(absl::StrFormat("sequence id %d appears twice", s.id));
    }
  }
  const int world = plan.world_size();
  const int64_t targets = TotalTargets(plan.sequences);
  const int stages = plan.num_stages();
  for (int rank = 0; rank < world; ++rank) {
    const std::vector<Action>& actions = plan.ranks[static_cast<size_t>(rank)].actions;
    std::map<SlotStage, size_t> open_forwards;  // micro-batch and stage -> index of its Forward
    std::set<SlotStage> seen_forwards;
    std::set<SlotStage> recomputes;  // micro-batches whose activations were made again
    std::map<SlotStage, size_t> deferred;  // backwards whose weight gradients are still to come
    std::optional<size_t> exchange;  // the first of the RingExchange actions waiting for a forward
    for (size_t i = 0; i < actions.size(); ++i) {
      const Action& a = actions[i];
      // A micro-batch's rings are the RingExchange actions right before its Forward.
      if (a.kind == ActionKind::kRingExchange) {
        if (exchange.has_value() && KeyOf(actions[*exchange]) != KeyOf(a)) {
          return absl::InvalidArgumentError(absl::StrFormat(
              "%s: the ring exchange at action %d is for another micro-batch, and the forward it "
              "waits for never comes",
              Where(rank, i, a), *exchange));
        }
        if (!exchange.has_value()) exchange = i;
      } else if (exchange.has_value()) {
        if (a.kind != ActionKind::kForward || KeyOf(a) != KeyOf(actions[*exchange])) {
          return absl::InvalidArgumentError(absl::StrFormat(
              "%s: a ring exchange (action %d) must be followed by the forward of its micro-batch "
              "and stage",
              Where(rank, *exchange, actions[*exchange]), *exchange));
        }
        exchange.reset();
      }
      if (a.kind != ActionKind::kGradSync) {
        if (a.stage < 0 || a.stage >= stages) {
          return absl::InvalidArgumentError(absl::StrFormat(
              "%s: stage %d is not one of the plan's %d stages", Where(rank, i, a), a.stage,
              stages));
        }
        if (!(a.offload_ratio >= 0.0 && a.offload_ratio <= 1.0)) {
          return absl::InvalidArgumentError(absl::StrFormat(
              "%s: offload ratio %g is not a share in [0, 1]", Where(rank, i, a),
              a.offload_ratio));
        }
        const bool passes = a.kind == ActionKind::kForward || a.kind == ActionKind::kBackward ||
                            a.kind == ActionKind::kRecompute || a.kind == ActionKind::kWeightGrad;
        const bool want_prev = passes && a.stage > 0;
        const bool want_next = passes && a.stage + 1 < stages;
        if ((a.prev_rank >= 0) != want_prev || (a.next_rank >= 0) != want_next ||
            a.prev_rank >= world || a.next_rank >= world) {
          return absl::InvalidArgumentError(absl::StrFormat(
              "%s: previous rank %d and next rank %d do not fit stage %d of %d (a rank of the "
              "world of %d where there is a neighbouring stage, -1 where there is none)",
              Where(rank, i, a), a.prev_rank, a.next_rank, a.stage, stages, world));
        }
      }
      // A Backward or Recompute pairs with the open Forward of its micro-batch and stage, whose
      // token ranges it must repeat.
      auto open = open_forwards.end();
      if (a.kind == ActionKind::kBackward || a.kind == ActionKind::kRecompute) {
        open = open_forwards.find(KeyOf(a));
      }
      const bool repeats_forward = open != open_forwards.end() &&
                                   actions[open->second].tokens == a.tokens &&
                                   actions[open->second].context == a.context;
      // Ranges that repeat the Forward's were checked with it; looking them up again would add
      // half again to the largest plans' work.
      if (!repeats_forward) {
        for (const std::vector<TokenRange>* ranges : {&a.tokens, &a.context}) {
          for (const TokenRange& r : *ranges) {
            const std::optional<size_t> s = index->Find(r.sequence_id);
            if (!s.has_value()) {
              return absl::InvalidArgumentError(absl::StrFormat(
                  "%s: sequence %d is not in the batch", Where(rank, i, a), r.sequence_id));
            }
            const int64_t length = plan.sequences[*s].length;
            if (r.begin < 0 || r.begin >= r.end || r.end > length) {
              return absl::InvalidArgumentError(absl::StrFormat(
                  "%s: %s is not a non-empty range of its %d tokens", Where(rank, i, a), Range(r),
                  length));
            }
          }
        }
      }
      switch (a.kind) {
        case ActionKind::kForward:
          if (!seen_forwards.insert(KeyOf(a)).second) {
            return absl::InvalidArgumentError(
                absl::StrFormat("%s: a second forward for this micro-batch", Where(rank, i, a)));
          }
          open_forwards[KeyOf(a)] = i;
          break;
        case ActionKind::kBackward:
        case ActionKind::kRecompute: {
          if (open == open_forwards.end()) {
            return absl::InvalidArgumentError(absl::StrFormat(
                "%s: %s without an earlier forward", Where(rank, i, a), ActionKindName(a.kind)));
          }
          const Action& forward = actions[open->second];
          if (!repeats_forward || forward.prev_rank != a.prev_rank ||
              forward.next_rank != a.next_rank) {
            return absl::InvalidArgumentError(absl::StrFormat(
                "%s: tokens, context or neighbouring ranks differ from those of its forward "
                "(action %d)",
                Where(rank, i, a), open->second));
          }
          // Dropped activations come back by exactly one Recompute, kept ones need none.
          const bool recomputed = recomputes.contains(KeyOf(a));
          if (a.kind == ActionKind::kRecompute) {
            if (forward.keep_activations || recomputed) {
              return absl::InvalidArgumentError(absl::StrFormat(
                  "%s: recomputes activations that are %s", Where(rank, i, a),
                  recomputed ? "already recomputed" : "kept by its forward"));
            }
            recomputes.insert(KeyOf(a));
            break;
          }
          if (!forward.keep_activations && !recomputed) {
            return absl::InvalidArgumentError(absl::StrFormat(
                "%s: its forward dropped the activations and no recompute made them again",
                Where(rank, i, a)));
          }
          if (a.defer_weight_grads) deferred[KeyOf(a)] = i;
          open_forwards.erase(open);
          break;
        }
        case ActionKind::kWeightGrad: {
          auto it = deferred.find(KeyOf(a));
          if (it == deferred.end() || actions[it->second].tokens != a.tokens ||
              actions[it->second].context != a.context) {
            return absl::InvalidArgumentError(absl::StrFormat(
                "%s: a weight gradient needs an earlier backward of the same micro-batch, stage "
                "and tokens that defers it",
                Where(rank, i, a)));
          }
          deferred.erase(it);
          break;
        }
        case ActionKind::kRingExchange: {
          // Sorted, so that a repeated member sits next to itself (rings have up to thousands of
          // members, and this runs for every member's exchange).
          std::vector<int> members = a.ring;
          std::sort(members.begin(), members.end());
          const bool repeated =
              std::adjacent_find(members.begin(), members.end()) != members.end();
          if (members.empty() || members.front() < 0 || members.back() >= world || repeated) {
            return absl::InvalidArgumentError(absl::StrFormat(
                "%s: ring %d members %s must be distinct ranks of the world of %d",
                Where(rank, i, a), a.ring_id, Members(a.ring), world));
          }
          if (!std::binary_search(members.begin(), members.end(), rank)) {
            return absl::InvalidArgumentError(absl::StrFormat(
                "%s: ring %d members %s do not include the rank itself", Where(rank, i, a),
                a.ring_id, Members(a.ring)));
          }
          if (a.ring_id < 0 || a.bytes_per_step < 0) {
            return absl::InvalidArgumentError(absl::StrFormat(
                "%s: ring id %d and bytes per step %d must not be negative", Where(rank, i, a),
                a.ring_id, a.bytes_per_step));
          }
          break;
        }
        case ActionKind::kGradSync:
          if (i + 1 != actions.size()) {
            return absl::InvalidArgumentError(
                absl::StrFormat("%s: gradient sync must be the rank's last action",
                                Where(rank, i, a)));
          }
          if (a.total_targets != targets) {
            return absl::InvalidArgumentError(absl::StrFormat(
                "%s: scales the gradient by 1/%d but the batch has %d target tokens",
                Where(rank, i, a), a.total_targets, targets));
          }
          if (a.gradient_bytes != plan.ranks[0].actions.back().gradient_bytes) {
            return absl::InvalidArgumentError(absl::StrFormat(
                "%s: all-reduces %d gradient bytes but rank 0 all-reduces %d; the sizes must "
                "match",
                Where(rank, i, a), a.gradient_bytes, plan.ranks[0].actions.back().gradient_bytes));
          }
          break;
      }
    }
    if (!open_forwards.empty()) {
      const size_t i = open_forwards.begin()->second;
      return absl::InvalidArgumentError(
          absl::StrFormat("%s: forward without a backward", Where(rank, i, actions[i])));
    }
    if (!deferred.empty()) {
      const size_t i = deferred.begin()->second;
      return absl::InvalidArgumentError(absl::StrFormat(
          "%s: defers its weight gradients but no weight_grad action follows",
          Where(rank, i, actions[i])));
    }
    if (actions.empty() || actions.back().kind != ActionKind::kGradSync) {
      return absl::InvalidArgumentError(
          absl::StrFormat("rank %d has no gradient sync; every rank must join it", rank));
    }
  }
  return absl::OkStatus();
}

// Where a ring was first seen, and the members that have an action for it.
struct RingRecord {
  int rank;
  size_t index;
  std::map<int, size_t> present;  // member rank -> action index
};

absl::Status CheckRings(const StepPlan& plan, std::map<int, RingRecord>* rings) {
  for (int rank = 0; rank < plan.world_size(); ++rank) {
    const std::vector<Action>& actions = plan.ranks[static_cast<size_t>(rank)].actions;
    for (size_t i = 0; i < actions.size(); ++i) {
      const Action& a = actions[i];
      if (a.kind != ActionKind::kRingExchange) continue;
      auto [it, fresh] = rings->try_emplace(a.ring_id, RingRecord{rank, i, {}});
      const Action& first = plan.ranks[static_cast<size_t>(it->second.rank)]
                                .actions[it->second.index];
      if (!it->second.present.emplace(rank, i).second) {
        return absl::InvalidArgumentError(absl::StrFormat(
            "%s: ring %d appears a second time on this rank (first at action %d)",
            Where(rank, i, a), a.ring_id, it->second.present[rank]));
      }
      if (fresh) continue;
      const std::string other = Where(it->second.rank, it->second.index, first);
      if (a.ring != first.ring) {
        return absl::InvalidArgumentError(absl::StrFormat(
            "%s: ring %d members %s differ from %s's %s", Where(rank, i, a), a.ring_id,
            Members(a.ring), other, Members(first.ring)));
      }
      if (a.bytes_per_step != first.bytes_per_step) {
        return absl::InvalidArgumentError(absl::StrFormat(
            "%s: ring %d sends %d bytes per step but %s expects %d", Where(rank, i, a), a.ring_id,
            a.bytes_per_step, other, first.bytes_per_step));
      }
      if (a.micro_batch != first.micro_batch || a.stage != first.stage) {
        return absl::InvalidArgumentError(absl::StrFormat(
            "%s: ring %d meets in micro-batch %d stage %d here but in micro-batch %d stage %d at "
            "%s",
            Where(rank, i, a), a.ring_id, a.micro_batch, a.stage, first.micro_batch, first.stage,
            other));
      }
    }
  }
  for (const auto& [id, record] : *rings) {
    const Action& first = plan.ranks[static_cast<size_t>(record.rank)].actions[record.index];
    for (size_t m = 0; m < first.ring.size(); ++m) {
      const int member = first.ring[m];
      if (record.present.contains(member)) continue;
      const int prev = first.ring[(m + first.ring.size() - 1) % first.ring.size()];
      return absl::InvalidArgumentError(absl::StrFormat(
          "ring %d members %s (from %s): rank %d has no ring_exchange for it, so rank %d's "
          "send to it is never received",
          id, Members(first.ring), Where(record.rank, record.index, first), member, prev));
    }
  }
  return absl::OkStatus();
}

// Pipeline stages: contiguous, non-empty layer ranges covering the model.
absl::Status CheckStages(const StepPlan& plan, const CostModel& cost) {
  int next = 0;
  for (size_t s = 0; s < plan.stages.size(); ++s) {
    const StageSpec& st = plan.stages[s];
    if (st.first_layer != next || st.last_layer <= st.first_layer) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "stage %d holds layers [%d, %d); stages must be non-empty and follow each other from "
          "layer 0 (the previous one ends at %d)",
          s, st.first_layer, st.last_layer, next));
    }
    next = st.last_layer;
  }
  if (!plan.stages.empty() && next != cost.n_layers) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "the stages end at layer %d but the model has %d layers", next, cost.n_layers));
  }
  return absl::OkStatus();
}

// Every pipeline Forward that sends has a Forward of the next stage, on the rank it names, that
// receives from it with the same tokens, and the other way round. (Backwards have their forwards'
// neighbours, CheckShape makes sure, so their messages match too.)
absl::Status CheckStageMessages(const StepPlan& plan) {
  std::map<std::tuple<int, int, int>, size_t> forwards;  // (rank, slot, stage) -> action index
  for (int rank = 0; rank < plan.world_size(); ++rank) {
    const std::vector<Action>& actions = plan.ranks[static_cast<size_t>(rank)].actions;
    for (size_t i = 0; i < actions.size(); ++i) {
      if (actions[i].kind == ActionKind::kForward) {
        forwards[{rank, actions[i].micro_batch, actions[i].stage}] = i;
      }
    }
  }
  for (const auto& [key, i] : forwards) {
    const auto [rank, slot, stage] = key;
    const Action& a = plan.ranks[static_cast<size_t>(rank)].actions[i];
    for (const int step : {+1, -1}) {
      const int peer = step > 0 ? a.next_rank : a.prev_rank;
      if (peer < 0) continue;
      auto it = forwards.find({peer, slot, stage + step});
      const Action* other =
          it == forwards.end() ? nullptr : &plan.ranks[static_cast<size_t>(peer)].actions[it->second];
      if (other == nullptr || (step > 0 ? other->prev_rank : other->next_rank) != rank ||
          other->tokens != a.tokens) {
        return absl::InvalidArgumentError(absl::StrFormat(
            "%s: %s stage %d on rank %d, but rank %d has no forward of micro-batch %d stage %d "
            "%s rank %d with the same tokens",
            Where(rank, i, a), step > 0 ? "sends its activations to" : "receives its input from",
            stage + step, peer, peer, slot, stage + step, step > 0 ? "receiving from" : "sending to",
            rank));
      }
    }
  }
  return absl::OkStatus();
}

// Replays the plan without times: a rank runs its actions in order; a pipeline Forward waits for
// its input from the previous stage's Forward and a Backward for its gradient from the next
// stage's Backward (sends never wait); a RingExchange waits until every member of the ring has
// reached it, and the Backward of a micro-batch with rings until every member has reached its own
// Backward of them. Each action is visited a bounded number of times, so the replay is linear in
// the plan's size. When ranks remain stuck, the "waits for" edges lead to the cycle, which the
// error names.
absl::Status CheckDeadlock(const StepPlan& plan) {
  const int world = plan.world_size();
  struct RankState {
    size_t pc = 0;
    bool arrived = false;      // counted at the meeting of the action at pc
    std::vector<int> pending;  // ring ids of the next Forward
    std::map<SlotStage, std::vector<int>> rings_of;  // ring ids each forwarded micro-batch met
  };
  std::vector<RankState> state(static_cast<size_t>(world));
  std::set<std::tuple<int, int, int, int, int>> sent;  // from, to, slot, receiver's stage, pass
  std::map<std::pair<int, int>, size_t> arrivals;     // (ring id, pass) -> members arrived
  std::map<int, const std::vector<int>*> members;     // ring id -> members
  std::vector<int> work;
  for (int r = world - 1; r >= 0; --r) work.push_back(r);
  // What the rank at pc waits for: a peer whose message or arrival is missing, or -1 (it can go).
  auto blocker = [&](int rank) -> int {
    const RankState& st = state[static_cast<size_t>(rank)];
    const Action& a = plan.ranks[static_cast<size_t>(rank)].actions[st.pc];
    const bool forward = a.kind == ActionKind::kForward;
    const bool backward = a.kind == ActionKind::kBackward;
    const int from = forward ? a.prev_rank : backward ? a.next_rank : -1;
    if (from >= 0 && !sent.contains({from, rank, a.micro_batch, a.stage, backward ? 1 : 0})) {
      return from;
    }
    std::vector<int> rings;
    if (a.kind == ActionKind::kRingExchange) rings = {a.ring_id};
    if (backward) {
      auto it = st.rings_of.find(KeyOf(a));
      if (it != st.rings_of.end()) rings = it->second;
    }
    const int pass = backward ? 1 : 0;
    for (const int id : rings) {
      const std::vector<int>& ring = *members.at(id);
      if (arrivals[{id, pass}] == ring.size()) continue;
      for (const int m : ring) {
        const RankState& other = state[static_cast<size_t>(m)];
        const std::vector<Action>& theirs = plan.ranks[static_cast<size_t>(m)].actions;
        const bool there = other.pc < theirs.size() && other.arrived &&
                           theirs[other.pc].kind == a.kind &&
                           KeyOf(theirs[other.pc]) == KeyOf(a) &&
                           (a.kind != ActionKind::kRingExchange || theirs[other.pc].ring_id == id);
        if (!there) return m;
      }
    }
    return -1;
  };
  for (int rank = 0; rank < world; ++rank) {
    for (const Action& a : plan.ranks[static_cast<size_t>(rank)].actions) {
      if (a.kind == ActionKind::kRingExchange) members[a.ring_id] = &a.ring;
    }
  }
  while (!work.empty()) {
    const int rank = work.back();
    work.pop_back();
    RankState& st = state[static_cast<size_t>(rank)];
    const std::vector<Action>& actions = plan.ranks[static_cast<size_t>(rank)].actions;
    while (st.pc < actions.size()) {
      const Action& a = actions[st.pc];
      const bool backward = a.kind == ActionKind::kBackward;
      // Arrive at this action's meetings once.
      if (!st.arrived) {
        st.arrived = true;
        std::vector<int> rings;
        if (a.kind == ActionKind::kRingExchange) rings = {a.ring_id};
        if (backward) {
          auto it = st.rings_of.find(KeyOf(a));
          if (it != st.rings_of.end()) rings = it->second;
        }
        for (const int id : rings) {
          const int pass = backward ? 1 : 0;
          if (++arrivals[{id, pass}] == members.at(id)->size()) {
            for (const int m : *members.at(id)) work.push_back(m);
          }
        }
      }
      if (blocker(rank) >= 0) break;
      if (a.kind == ActionKind::kRingExchange) st.pending.push_back(a.ring_id);
      if (a.kind == ActionKind::kForward) {
        if (!st.pending.empty()) st.rings_of[KeyOf(a)] = std::move(st.pending);
        st.pending.clear();
      }
      const int to = a.kind == ActionKind::kForward ? a.next_rank : backward ? a.prev_rank : -1;
      if (to >= 0) {
        sent.insert({rank, to, a.micro_batch, backward ? a.stage - 1 : a.stage + 1,
                     backward ? 1 : 0});
        work.push_back(to);
      }
      st.arrived = false;
      ++st.pc;
    }
  }
  for (int rank = 0; rank < world; ++rank) {
    if (state[static_cast<size_t>(rank)].pc == plan.ranks[static_cast<size_t>(rank)].actions.size()) {
      continue;
    }
    // Follow "waits for" edges to a cycle.
    std::vector<int> path;
    std::map<int, size_t> on_path;
    int r = rank;
    while (r >= 0 && !on_path.contains(r)) {
      on_path[r] = path.size();
      path.push_back(r);
      const RankState& st = state[static_cast<size_t>(r)];
      r = st.pc < plan.ranks[static_cast<size_t>(r)].actions.size() ? blocker(r) : -1;
    }
    if (r < 0) {
      return absl::FailedPreconditionError(absl::StrFormat(
          "deadlock: rank %d waits for rank %d, which has finished its actions", path.back(),
          path.size() > 1 ? path[path.size() - 2] : rank));
    }
    std::vector<std::string> steps;
    for (size_t k = on_path[r]; k < path.size(); ++k) {
      const int w = path[k];
      const size_t pc = state[static_cast<size_t>(w)].pc;
      const Action& a = plan.ranks[static_cast<size_t>(w)].actions[pc];
      const int next = path[(k + 1) < path.size() ? k + 1 : on_path[r]];
      if (a.kind == ActionKind::kRingExchange) {
        steps.push_back(absl::StrFormat("%s waits in ring %d (members %s) for rank %d",
                                        Where(w, pc, a), a.ring_id, Members(a.ring), next));
      } else {
        steps.push_back(absl::StrFormat("%s waits for rank %d", Where(w, pc, a), next));
      }
    }
    return absl::FailedPreconditionError(
        "deadlock: ranks wait for each other in a cycle: " + absl::StrJoin(steps, "; "));
  }
  return absl::OkStatus();
}

// Names the first fault in the forward pieces of `sequence` on `stage`, which CheckCoverage found
// not to cover it exactly once: the plan is scanned again for them, this time with the ranks and
// actions that compute them, and walked in order of their first tokens (ties in plan order).
absl::Status CoverageError(const StepPlan& plan, int stage, size_t sequence) {
  struct Placed {
    int64_t begin;
    int64_t end;
    int rank;
    size_t action;
  };
  const SequenceSpec& seq = plan.sequences[sequence];
  std::vector<Placed> pieces;
  for (int rank = 0; rank < plan.world_size(); ++rank) {
    const std::vector<Action>& actions = plan.ranks[static_cast<size_t>(rank)].actions;
    for (size_t i = 0; i < actions.size(); ++i) {
      if (actions[i].kind != ActionKind::kForward || actions[i].stage != stage) continue;
      for (const TokenRange& r : actions[i].tokens) {
        if (r.sequence_id == seq.id) pieces.push_back({r.begin, r.end, rank, i});
      }
    }
  }
  std::stable_sort(pieces.begin(), pieces.end(),
                   [](const Placed& x, const Placed& y) { return x.begin < y.begin; });
  const std::string pass =
      plan.stages.empty() ? std::string(ActionKindName(ActionKind::kForward))
                          : absl::StrFormat("%s of stage %d", ActionKindName(ActionKind::kForward),
                                            stage);
  int64_t covered = 0;
  for (size_t p = 0; p < pieces.size(); ++p) {
    const Placed& piece = pieces[p];
    if (piece.begin < covered) {
      // Not the first piece: ranges begin at token 0 or later (CheckShape).
      const Placed& last = pieces[p - 1];
      return absl::InvalidArgumentError(absl::StrFormat(
          "sequence %d tokens [%d, %d) are computed twice in the %s: by rank %d action %d and "
          "rank %d action %d",
          seq.id, piece.begin, std::min(covered, piece.end), pass, last.rank, last.action,
          piece.rank, piece.action));
    }
    if (piece.begin > covered) {
      return absl::InvalidArgumentError(
          absl::StrFormat("sequence %d tokens [%d, %d) are never computed in the %s", seq.id,
                          covered, piece.begin, pass));
    }
    covered = piece.end;
  }
  return absl::InvalidArgumentError(absl::StrFormat(
      "sequence %d tokens [%d, %d) are never computed in the %s", seq.id, covered, seq.length,
      pass));
}

// Every token of the batch is computed exactly once by the Forwards of each stage. (A Backward
// repeats the tokens of its Forward, one for one, as CheckShape made sure, so the backward pass
// computes each token once exactly when the forward does.)
//
// A large plan has tens of millions of pieces but only a handful per sequence: they are grouped by
// sequence with a counting sort into one buffer, which is reused by every stage, and sorted within
// a sequence only. At that size the buffer's fresh memory costs more than the check, so a piece
// holds its bounds only, as `Token`: uint32_t when every sequence of the batch is shorter than
// 2^32 tokens (any real batch), halving it; int64_t otherwise. Which rank and action hold a piece
// is looked up again only to name a fault.
template <typename Token>
absl::Status CheckCoverage(const StepPlan& plan, const SequenceIndex& index) {
  struct Piece {
    Token begin;
    Token end;
  };
  const size_t sequences = plan.sequences.size();
  std::vector<size_t> first(sequences + 1);  // sequence s's pieces: [first[s], first[s + 1])
  std::vector<size_t> next(sequences);       // where its next piece goes while grouping
  std::vector<Piece> pieces;
  for (int stage = 0; stage < plan.num_stages(); ++stage) {
    // Calls visit(sequence, range) for every piece of the stage's Forwards, in plan order.
    auto for_each_piece = [&](auto&& visit) {
      for (const RankPlan& rank : plan.ranks) {
        for (const Action& a : rank.actions) {
          if (a.kind != ActionKind::kForward || a.stage != stage) continue;
          for (const TokenRange& r : a.tokens) visit(index.At(r.sequence_id), r);
        }
      }
    };
    std::fill(first.begin(), first.end(), 0);
    for_each_piece([&](size_t s, const TokenRange&) { ++first[s + 1]; });
    std::partial_sum(first.begin(), first.end(), first.begin());
    std::copy(first.begin(), first.end() - 1, next.begin());
    pieces.resize(first.back());
    for_each_piece([&](size_t s, const TokenRange& r) {
      pieces[next[s]++] = {static_cast<Token>(r.begin), static_cast<Token>(r.end)};
    });
    for (size_t s = 0; s < sequences; ++s) {
      // Exactly once: in order of their first tokens, each piece begins where the one before
      // ends, the first at token 0, and the last ends at the sequence's end. (Two pieces that
      // begin together fail whichever comes first, so ties need no order here.)
      const auto begin = pieces.begin() + static_cast<std::ptrdiff_t>(first[s]);
      const auto end = pieces.begin() + static_cast<std::ptrdiff_t>(first[s + 1]);
      std::sort(begin, end, [](const Piece& x, const Piece& y) { return x.begin < y.begin; });
      int64_t covered = 0;
      auto p = begin;
      for (; p != end && static_cast<int64_t>(p->begin) == covered; ++p) covered = p->end;
      if (p != end || covered != plan.sequences[s].length) return CoverageError(plan, stage, s);
    }
  }
  return absl::OkStatus();
}

// The ring shares of a Forward's micro-batch: the tokens of the RingExchange actions right before
// it (CheckShape made sure of that), to tell the Forward's ring pieces from a chunk.
class RingShares {
 public:
  RingShares(const std::vector<Action>& actions, size_t forward)
      : actions_(actions), end_(forward), first_(forward) {
    while (first_ > 0 && actions[first_ - 1].kind == ActionKind::kRingExchange) --first_;
    exchange_ = first_;
    SkipEmptyExchanges();
  }

  // Whether `r` is the share after the last one matched, in the exchanges' order. The planners
  // list a Forward's ring pieces in that order, so this answers for nearly every piece without a
  // search (a large plan has tens of millions of them).
  bool MatchesNext(const TokenRange& r) {
    if (exchange_ == end_ || actions_[exchange_].tokens[share_] != r) return false;
    ++share_;
    SkipEmptyExchanges();
    return true;
  }

  // Whether `r` is any of the shares.
  bool Contains(const TokenRange& r) {
    auto less = [](const TokenRange& x, const TokenRange& y) {
      return std::tie(x.sequence_id, x.begin, x.end) < std::tie(y.sequence_id, y.begin, y.end);
    };
    if (!sorted_ready_) {
      for (size_t e = first_; e < end_; ++e) {
        sorted_.insert(sorted_.end(), actions_[e].tokens.begin(), actions_[e].tokens.end());
      }
      std::sort(sorted_.begin(), sorted_.end(), less);
      sorted_ready_ = true;
    }
    return std::binary_search(sorted_.begin(), sorted_.end(), r, less);
  }

 private:
  void SkipEmptyExchanges() {
    while (exchange_ < end_ && share_ == actions_[exchange_].tokens.size()) {
      ++exchange_;
      share_ = 0;
    }
  }

  const std::vector<Action>& actions_;
  size_t end_;       // the Forward
  size_t first_;     // its first RingExchange (end_ when it has none)
  size_t exchange_;  // the next share to match: actions_[exchange_].tokens[share_]
  size_t share_ = 0;
  std::vector<TokenRange> sorted_;  // made on the first search
  bool sorted_ready_ = false;
};

// A sequence held by more than one rank needs its K/V to reach every holder: all of its pieces must
// travel one ring.
absl::Status CheckSplitSequences(const StepPlan& plan, const SequenceIndex& index) {
  // Every stage has rings of its own: (sequence, stage) -> ring id, at sequence * stages + stage;
  // -1 until a ring carries it (ring ids are not negative: CheckShape).
  const size_t stages = static_cast<size_t>(plan.num_stages());
  std::vector<int> carrier(plan.sequences.size() * stages, -1);
  for (int rank = 0; rank < plan.world_size(); ++rank) {
    for (const Action& a : plan.ranks[static_cast<size_t>(rank)].actions) {
      if (a.kind != ActionKind::kRingExchange) continue;
      int64_t previous = -1;
      for (const TokenRange& r : a.tokens) {
        if (r.sequence_id == previous) continue;  // a sequence's pieces sit side by side
        previous = r.sequence_id;
        int& ring = carrier[index.At(r.sequence_id) * stages + static_cast<size_t>(a.stage)];
        if (ring < 0) {
          ring = a.ring_id;
        } else if (ring != a.ring_id) {
          return absl::InvalidArgumentError(absl::StrFormat(
              "sequence %d travels two rings (%d and %d); its pieces must share one ring",
              r.sequence_id, ring, a.ring_id));
        }
      }
    }
  }
  // A piece outside every ring is a chunk (ChunkFlow): the rank that holds it also holds every
  // earlier token of its sequence, computed by its earlier chunks, forward in order with the
  // earlier tokens as context, and runs the backwards in reverse order, so that each chunk's
  // K/V gradient is complete (every later chunk's backward has added to it) before its own.
  // Each stage of a pipeline holds its own K/V state, so the rules hold per stage.
  for (int rank = 0; rank < plan.world_size(); ++rank) {
    const std::vector<Action>& actions = plan.ranks[static_cast<size_t>(rank)].actions;
    for (int stage = 0; stage < plan.num_stages(); ++stage) {
      // A Forward's one chunk, if any, checked against its context.
      auto chunk_of = [&](size_t i) -> absl::StatusOr<std::optional<TokenRange>> {
        const Action& a = actions[i];
        RingShares shares(actions, i);
        std::optional<TokenRange> chunk;
        bool more = false;  // a second chunk
        for (const TokenRange& r : a.tokens) {
          if (shares.MatchesNext(r)) continue;
          const int64_t length = plan.sequences[index.At(r.sequence_id)].length;
          if (r.size() == length || shares.Contains(r)) continue;
          if (chunk.has_value()) {
            more = true;
          } else {
            chunk = r;
          }
        }
        if (!chunk.has_value()) {
          if (!a.context.empty()) {
            return absl::InvalidArgumentError(
                absl::StrFormat("%s: has a context but no chunk", Where(rank, i, a)));
          }
          return std::nullopt;
        }
        const TokenRange& r = *chunk;
        const std::vector<TokenRange> want =
            r.begin == 0 ? std::vector<TokenRange>{} : std::vector<TokenRange>{{r.sequence_id, 0, r.begin}};
        if (more || a.context != want) {
          return absl::InvalidArgumentError(absl::StrFormat(
              "%s: computes %s of %d outside any ring, so it must be the micro-batch's one chunk "
              "with the sequence's earlier tokens [0, %d) as its context",
              Where(rank, i, a), Range(r), plan.sequences[index.At(r.sequence_id)].length,
              r.begin));
        }
        return chunk;
      };
      // Micro-batch -> its Forward's chunk on this stage. Its Backward has the same tokens and
      // context (CheckShape), hence the same chunk.
      std::map<int, std::optional<TokenRange>> chunk_in_slot;
      std::unordered_map<int64_t, int64_t> forwarded;    // sequence id -> forwarded up to token
      std::unordered_map<int64_t, size_t> first, last;   // sequence id -> first, last chunk forward
      std::unordered_map<int64_t, TokenRange> first_range;
      for (size_t i = 0; i < actions.size(); ++i) {
        if (actions[i].kind != ActionKind::kForward || actions[i].stage != stage) continue;
        absl::StatusOr<std::optional<TokenRange>> chunk = chunk_of(i);
        if (!chunk.ok()) return chunk.status();
        chunk_in_slot[actions[i].micro_batch] = *chunk;
        if (!chunk->has_value()) continue;
        const TokenRange& r = **chunk;
        int64_t& done = forwarded[r.sequence_id];
        if (r.begin != done) {
          return absl::InvalidArgumentError(absl::StrFormat(
              "%s: computes %s of %d outside any ring, but this rank's earlier chunks of it end at "
              "token %d",
              Where(rank, i, actions[i]), Range(r), plan.sequences[index.At(r.sequence_id)].length,
              done));
        }
        if (r.begin == 0) {
          first[r.sequence_id] = i;
          first_range[r.sequence_id] = r;
        }
        last[r.sequence_id] = i;
        done = r.end;
      }
      for (const auto& [sequence, done] : forwarded) {
        const int64_t length = plan.sequences[index.At(sequence)].length;
        if (done != length) {
          const size_t i = first.at(sequence);
          return absl::InvalidArgumentError(absl::StrFormat(
              "%s: computes %s of %d outside any ring, and this rank never computes the rest of it "
              "as chunks (done up to token %d)",
              Where(rank, i, actions[i]), Range(first_range.at(sequence)), length, done));
        }
      }
      std::unordered_map<int64_t, int64_t> backward;  // sequence id -> backwards done down to token
      for (size_t i = 0; i < actions.size(); ++i) {
        if (actions[i].kind != ActionKind::kBackward || actions[i].stage != stage) continue;
        const std::optional<TokenRange>& chunk = chunk_in_slot.at(actions[i].micro_batch);
        if (!chunk.has_value()) continue;
        const TokenRange& r = *chunk;
        const int64_t length = plan.sequences[index.At(r.sequence_id)].length;
        if (i < last.at(r.sequence_id)) {
          return absl::InvalidArgumentError(absl::StrFormat(
              "%s: the backward of chunk %s of %d comes before this rank has run every chunk of the "
              "sequence forward",
              Where(rank, i, actions[i]), Range(r), length));
        }
        auto [it, fresh] = backward.try_emplace(r.sequence_id, length);
        if (r.end != it->second) {
          return absl::InvalidArgumentError(absl::StrFormat(
              "%s: the backward of chunk %s of %d must wait for the later chunks' backwards (done "
              "down to token %d)",
              Where(rank, i, actions[i]), Range(r), length, it->second));
        }
        it->second = r.begin;
      }
    }
  }
  return absl::OkStatus();
}

absl::Status CheckMemory(const StepPlan& plan, const CostModel& cost) {
  for (int rank = 0; rank < plan.world_size(); ++rank) {
    const std::vector<Action>& actions = plan.ranks[static_cast<size_t>(rank)].actions;
    const std::vector<RankMemory> timeline = RankMemoryTimeline(plan, rank, cost);
    for (size_t i = 0; i < actions.size(); ++i) {
      const RankMemory& m = timeline[i];
      if (m.bytes() > plan.activation_budget_bytes) {
        return absl::ResourceExhaustedError(absl::StrFormat(
            "%s: %d tokens of activations alive%s need %d bytes, over the rank's budget of %d "
            "bytes",
            Where(rank, i, actions[i]), m.activation_tokens,
            m.context_tokens > 0
                ? absl::StrFormat(" and K/V state of %d earlier chunk tokens", m.context_tokens)
                : "",
            m.bytes(), plan.activation_budget_bytes));
      }
    }
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status ValidatePlan(const StepPlan& plan, const CostModel& cost) {
  SequenceIndex index(plan.sequences);
  if (absl::Status s = CheckStages(plan, cost); !s.ok()) return s;
  if (absl::Status s = CheckShape(plan, &index); !s.ok()) return s;
  std::map<int, RingRecord> rings;
  if (absl::Status s = CheckRings(plan, &rings); !s.ok()) return s;
  if (absl::Status s = CheckStageMessages(plan); !s.ok()) return s;
  if (absl::Status s = CheckDeadlock(plan); !s.ok()) return s;
  int64_t longest = 0;
  for (const SequenceSpec& s : plan.sequences) longest = std::max(longest, s.length);
  const absl::Status coverage =
      longest <= std::numeric_limits<uint32_t>::max() ? CheckCoverage<uint32_t>(plan, index)
                                                       : CheckCoverage<int64_t>(plan, index);
  if (!coverage.ok()) return coverage;
  if (absl::Status s = CheckSplitSequences(plan, index); !s.ok()) return s;
  return CheckMemory(plan, cost);
}

}  // namespace loom
