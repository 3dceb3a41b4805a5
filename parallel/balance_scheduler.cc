#include "parallel/balance_scheduler.h"

#include <algorithm>
#include <functional>
#include <numeric>
#include <set>
#include <utility>

#include "parallel/hdp_placement.h"
#include "parallel/plan_builder.h"
#include "parallel/ring_share.h"

namespace loom {
namespace {

// A whole sequence placed on a rank.
struct Placed {
  int64_t sequence;
  int slot;
};

// A sequence kept whole, with what placing it reads, so that LPT walks memory in order.
struct Whole {
  int64_t length;
  double seconds;
  int64_t sequence;
};

struct RankState {
  double load = 0.0;
  std::vector<int64_t> free;    // per slot
  std::vector<Placed> placed;   // whole sequences
};

class Scheduler {
 public:
  Scheduler(const std::vector<SequenceSpec>& sequences, const HdpOptions& options,
            const CostModel& cost)
      : sequences_(sequences),
        world_(options.world_size),
        capacity_(options.capacity_tokens),
        cost_(cost),
        micro_batch_s_(cost.n_layers * cost.overhead_s),
        ranks_(static_cast<size_t>(options.world_size)) {
    doc_s_.reserve(sequences.size());
    for (const SequenceSpec& s : sequences) doc_s_.push_back(cost.DocumentSeconds(s.length));
  }

  Placement Run() {
    std::vector<int64_t> rings;
    std::vector<Whole> wholes;
    wholes.reserve(sequences_.size());
    double total = 0.0;
    int64_t tokens = 0;
    for (size_t i = 0; i < sequences_.size(); ++i) {
      const int64_t length = sequences_[i].length;
      if (length > capacity_) {
        rings.push_back(static_cast<int64_t>(i));
      } else {
        wholes.push_back({length, doc_s_[i], static_cast<int64_t>(i)});
      }
      total += doc_s_[i];
      tokens += length;
    }
    // Every micro-batch costs its overhead; the batch needs about tokens / C of them.
    total += micro_batch_s_ * static_cast<double>((tokens + capacity_ - 1) / capacity_);
    target_ = total / world_;

    // Ranks start equally idle, so in rank order they already form a heap.
    heap_.reserve(static_cast<size_t>(world_));
    for (int r = 0; r < world_; ++r) heap_.push_back({0.0, r});
    PlaceRings(std::move(rings));
    PlaceWholes(std::move(wholes));
    Refine();

    Placement placement;
    placement.local.resize(static_cast<size_t>(world_));
    std::vector<size_t> per_slot;
    for (int r = 0; r < world_; ++r) {
      const RankState& state = ranks_[static_cast<size_t>(r)];
      auto& slots = placement.local[static_cast<size_t>(r)];
      slots.resize(state.free.size());
      per_slot.assign(state.free.size(), 0);
      for (const Placed& p : state.placed) ++per_slot[static_cast<size_t>(p.slot)];
      for (size_t slot = 0; slot < slots.size(); ++slot) slots[slot].reserve(per_slot[slot]);
      for (const Placed& p : state.placed) slots[static_cast<size_t>(p.slot)].push_back(p.sequence);
    }
    placement.rings = std::move(ring_placements_);
    return placement;
  }

 private:
  using Entry = std::pair<double, int>;  // load, rank

  // heap_ is a binary min-heap of every rank's (load, rank) but those taken out while a ring
  // picks its members. (load, rank) orders ranks totally, so the least loaded is well defined.
  const Entry& Top() const { return heap_.front(); }
  void Push(Entry entry) {
    heap_.push_back(entry);
    std::push_heap(heap_.begin(), heap_.end(), std::greater<Entry>());
  }
  Entry Pop() {
    std::pop_heap(heap_.begin(), heap_.end(), std::greater<Entry>());
    const Entry top = heap_.back();
    heap_.pop_back();
    return top;
  }
  // Pop then Push in one sift-down: LPT does this once per sequence.
  void ReplaceTop(Entry entry) {
    const size_t n = heap_.size();
    size_t at = 0;
    for (size_t child = 1; child < n; child = 2 * at + 1) {
      if (child + 1 < n && heap_[child + 1] < heap_[child]) ++child;
      if (!(heap_[child] < entry)) break;
      heap_[at] = heap_[child];
      at = child;
    }
    heap_[at] = entry;
  }

  void PlaceRings(std::vector<int64_t> rings) {
    std::vector<int> min_members(sequences_.size(), 0);
    for (const int64_t i : rings) {
      const int64_t length = sequences_[static_cast<size_t>(i)].length;
      min_members[static_cast<size_t>(i)] =
          static_cast<int>((length + capacity_ - 1) / capacity_);
    }
    std::sort(rings.begin(), rings.end(), [&](int64_t x, int64_t y) {
      return doc_s_[static_cast<size_t>(x)] / min_members[static_cast<size_t>(x)] >
             doc_s_[static_cast<size_t>(y)] / min_members[static_cast<size_t>(y)];
    });
    std::vector<Entry> candidates;
    for (const int64_t i : rings) {
      const double seq_s = doc_s_[static_cast<size_t>(i)];
      const int k_min = min_members[static_cast<size_t>(i)];
      // At most one member per token, so that no member's share is empty.
      const int k_max = static_cast<int>(
          std::min<int64_t>(world_, sequences_[static_cast<size_t>(i)].length));
      // Pop ranks in increasing load until the k least loaded can take a 1/k share each and stay
      // under the target; failing that, the k with the lowest resulting maximum.
      candidates.clear();
      int chosen = -1;
      int best = k_min;
      double best_peak = 0.0;
      while (!heap_.empty() && static_cast<int>(candidates.size()) < k_max) {
        candidates.push_back(Pop());
        const int k = static_cast<int>(candidates.size());
        if (k < k_min) continue;
        const double peak = candidates.back().first + seq_s / k + micro_batch_s_;
        if (k == k_min || peak < best_peak) {
          best = k;
          best_peak = peak;
        }
        if (peak <= target_) {
          chosen = k;
          break;
        }
      }
      if (chosen < 0) chosen = best;
      for (size_t c = static_cast<size_t>(chosen); c < candidates.size(); ++c) {
        Push(candidates[c]);
      }
      std::vector<int> members;
      for (int c = 0; c < chosen; ++c) members.push_back(candidates[static_cast<size_t>(c)].second);
      // Ring neighbours in rank order keep most hops inside a node.
      std::sort(members.begin(), members.end());
      int slot = 0;
      for (const int r : members) {
        slot = std::max(slot, static_cast<int>(ranks_[static_cast<size_t>(r)].free.size()));
      }
      const SequenceSpec& seq = sequences_[static_cast<size_t>(i)];
      for (int m = 0; m < chosen; ++m) {
        RankState& state = ranks_[static_cast<size_t>(members[static_cast<size_t>(m)])];
        state.free.resize(static_cast<size_t>(slot + 1), capacity_);
        const std::vector<TokenRange> share = ZigzagShare(seq.id, seq.length, chosen, m);
        state.free[static_cast<size_t>(slot)] -= TokenCount(share);
        state.load += cost_.MicroBatchSeconds(share);
        Push({state.load, members[static_cast<size_t>(m)]});
      }
      RingPlacement ring;
      ring.members = std::move(members);
      ring.micro_batch = slot;
      ring.sequences = {i};
      ring_placements_.push_back(std::move(ring));
    }
  }

  // First slot of `state` with room for `length` tokens (a new one if none); returns the slot and
  // whether it was empty.
  std::pair<int, bool> FirstFit(RankState& state, int64_t length) const {
    for (size_t s = 0; s < state.free.size(); ++s) {
      if (state.free[s] >= length) return {static_cast<int>(s), state.free[s] == capacity_};
    }
    state.free.push_back(capacity_);
    return {static_cast<int>(state.free.size() - 1), true};
  }

  // Puts a whole sequence into `slot` of `state`; opening an empty slot adds a micro-batch.
  void Add(RankState& state, const Whole& whole, int slot, bool opens) const {
    state.free[static_cast<size_t>(slot)] -= whole.length;
    state.load += whole.seconds + (opens ? micro_batch_s_ : 0.0);
    state.placed.push_back({whole.sequence, slot});
  }

  // Longest first onto the least loaded rank (LPT), first fit into its micro-batches.
  // Ties in length go in batch order, so that the plan does not depend on the sort's internals.
  void PlaceWholes(std::vector<Whole> wholes) {
    std::sort(wholes.begin(), wholes.end(), [](const Whole& x, const Whole& y) {
      return x.length != y.length ? x.length > y.length : x.sequence < y.sequence;
    });
    // About as many per rank as the mean, plus room for LPT's spread, in one allocation.
    const size_t expected = wholes.size() / static_cast<size_t>(world_) + 8;
    for (RankState& state : ranks_) state.placed.reserve(expected);
    for (const Whole& w : wholes) {
      const int r = Top().second;
      RankState& state = ranks_[static_cast<size_t>(r)];
      const auto [slot, opens] = FirstFit(state, w.length);
      Add(state, w, slot, opens);
      ReplaceTop({state.load, r});
    }
  }

  // Takes the whole sequence at `p` off `state`; emptying its slot saves a micro-batch.
  Placed Remove(RankState& state, size_t p) {
    const Placed placed = state.placed[p];
    state.placed[p] = state.placed.back();
    state.placed.pop_back();
    const int64_t length = sequences_[static_cast<size_t>(placed.sequence)].length;
    int64_t& free = state.free[static_cast<size_t>(placed.slot)];
    free += length;
    state.load -= doc_s_[static_cast<size_t>(placed.sequence)] +
                  (free == capacity_ ? micro_batch_s_ : 0.0);
    return placed;
  }

  // Whether `to` would open a new micro-batch for `length` tokens.
  bool Opens(const RankState& to, int64_t length) const {
    for (const int64_t f : to.free) {
      if (f >= length) return f == capacity_;
    }
    return true;
  }

  // Evens out the most and the least loaded rank, while that lowers the larger of their loads:
  // either moves one whole sequence across, or swaps two sequences of the same slot sizes, picking
  // the change closest to half their gap. Ring shares stay where they are. Stops once the slowest
  // rank is within kGoodEnough of the mean, where further moves no longer pay for their time.
  void Refine() {
    constexpr double kGoodEnough = 1e-4;
    std::set<Entry> by_load;
    double total = 0.0;
    for (int r = 0; r < world_; ++r) {
      by_load.insert({ranks_[static_cast<size_t>(r)].load, r});
      total += ranks_[static_cast<size_t>(r)].load;
    }
    std::vector<size_t> by_cost;
    for (int round = 0; round < 4 * world_ && world_ > 1; ++round) {
      const auto [max_load, hi] = *by_load.rbegin();
      const auto [min_load, lo] = *by_load.begin();
      if (max_load <= (1 + kGoodEnough) * total / world_) break;
      RankState& from = ranks_[static_cast<size_t>(hi)];
      RankState& to = ranks_[static_cast<size_t>(lo)];
      const double eps = 1e-12 * max_load;
      double best_peak = max_load - eps;
      size_t move = from.placed.size();
      std::pair<size_t, size_t> swap = {from.placed.size(), 0};
      for (size_t p = 0; p < from.placed.size(); ++p) {
        const int64_t s = from.placed[p].sequence;
        const double moved = doc_s_[static_cast<size_t>(s)];
        const bool opens = Opens(to, sequences_[static_cast<size_t>(s)].length);
        const double peak =
            std::max(max_load - moved, min_load + moved + (opens ? micro_batch_s_ : 0.0));
        if (peak < best_peak) {
          move = p;
          best_peak = peak;
        }
      }
      // Swaps: for each sequence x on the busy rank, the sequences y on the idle one whose cost
      // is nearest cost(x) - gap/2, exchanged in place when both fit.
      by_cost.resize(to.placed.size());
      std::iota(by_cost.begin(), by_cost.end(), size_t{0});
      auto cost_of = [&](const RankState& state, size_t q) {
        return doc_s_[static_cast<size_t>(state.placed[q].sequence)];
      };
      std::sort(by_cost.begin(), by_cost.end(),
                [&](size_t x, size_t y) { return cost_of(to, x) < cost_of(to, y); });
      const double gap = max_load - min_load;
      for (size_t p = 0; p < from.placed.size() && !by_cost.empty(); ++p) {
        const double cx = cost_of(from, p);
        const auto at = std::lower_bound(
            by_cost.begin(), by_cost.end(), cx - gap / 2,
            [&](size_t q, double value) { return cost_of(to, q) < value; });
        const size_t centre = static_cast<size_t>(at - by_cost.begin());
        for (size_t k = centre > 2 ? centre - 2 : 0; k < std::min(by_cost.size(), centre + 2);
             ++k) {
          const size_t q = by_cost[k];
          const double d = cx - cost_of(to, q);
          if (d <= 0) continue;
          const int64_t lx = sequences_[static_cast<size_t>(from.placed[p].sequence)].length;
          const int64_t ly = sequences_[static_cast<size_t>(to.placed[q].sequence)].length;
          if (to.free[static_cast<size_t>(to.placed[q].slot)] + ly < lx ||
              from.free[static_cast<size_t>(from.placed[p].slot)] + lx < ly) {
            continue;
          }
          const double peak = std::max(max_load - d, min_load + d);
          if (peak < best_peak) {
            best_peak = peak;
            swap = {p, q};
            move = from.placed.size();
          }
        }
      }
      by_load.erase({max_load, hi});
      by_load.erase({min_load, lo});
      if (swap.first < from.placed.size()) {
        Placed& x = from.placed[swap.first];
        Placed& y = to.placed[swap.second];
        const int64_t lx = sequences_[static_cast<size_t>(x.sequence)].length;
        const int64_t ly = sequences_[static_cast<size_t>(y.sequence)].length;
        const double d = doc_s_[static_cast<size_t>(x.sequence)] -
                         doc_s_[static_cast<size_t>(y.sequence)];
        from.free[static_cast<size_t>(x.slot)] += lx - ly;
        to.free[static_cast<size_t>(y.slot)] += ly - lx;
        std::swap(x.sequence, y.sequence);
        from.load -= d;
        to.load += d;
      } else if (move < from.placed.size()) {
        const double before = from.load + to.load;
        const Placed moved = Remove(from, move);
        const size_t s = static_cast<size_t>(moved.sequence);
        const Whole whole = {sequences_[s].length, doc_s_[s], moved.sequence};
        const auto [slot, opens] = FirstFit(to, whole.length);
        Add(to, whole, slot, opens);
        total += from.load + to.load - before;  // micro-batches opened or emptied
      }
      by_load.insert({from.load, hi});
      by_load.insert({to.load, lo});
      if (swap.first == from.placed.size() && move == from.placed.size()) break;
    }
  }

  const std::vector<SequenceSpec>& sequences_;
  const int world_;
  const int64_t capacity_;
  const CostModel& cost_;
  const double micro_batch_s_;
  std::vector<double> doc_s_;
  std::vector<RankState> ranks_;
  std::vector<RingPlacement> ring_placements_;
  std::vector<Entry> heap_;
  double target_ = 0.0;
};

}  // namespace

absl::StatusOr<StepPlan> PlanBalancedHdp(const std::vector<SequenceSpec>& sequences,
                                         const HdpOptions& options, const CostModel& cost) {
  if (absl::Status s = CheckHdpBatch(sequences, options); !s.ok()) return s;
  Placement balanced = Scheduler(sequences, options, cost).Run();
  // Packing in batch order occasionally lands on a slightly better quantisation of micro-batches
  // (each costs the fixed overhead); the cheaper of the two is kept, so balancing never loses.
  Placement in_order = PlaceInOrder(sequences, options);
  if (SlowestRankSeconds(sequences, in_order, cost) <
      SlowestRankSeconds(sequences, balanced, cost)) {
    balanced = std::move(in_order);
  }
  return BuildStepPlan("balanced", sequences, balanced, cost, options.capacity_tokens);
}

}  // namespace loom
