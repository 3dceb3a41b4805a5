#include "parallel/hdp_placement.h"

#include <algorithm>
#include <numeric>

#include "parallel/ring_share.h"

namespace loom {
namespace {

// Free tokens of every rank in one micro-batch slot, as a max-tree so that first fit (the lowest
// rank with room) takes O(log world) instead of a scan.
class SlotCapacity {
 public:
  SlotCapacity(int ranks, int64_t capacity) : capacity_(capacity) {
    while (leaves_ < ranks) leaves_ *= 2;
    tree_.assign(2 * static_cast<size_t>(leaves_), 0);
    std::fill_n(tree_.begin() + leaves_, ranks, capacity);
    for (size_t node = static_cast<size_t>(leaves_) - 1; node >= 1; --node) {
      tree_[node] = std::max(tree_[2 * node], tree_[2 * node + 1]);
    }
    full_ = ranks;
  }

  // Lowest rank with at least `tokens` free, or -1.
  int FirstFit(int64_t tokens) const {
    if (tree_[1] < tokens) return -1;
    size_t node = 1;
    while (node < static_cast<size_t>(leaves_)) {
      node = tree_[2 * node] >= tokens ? 2 * node : 2 * node + 1;
    }
    return static_cast<int>(node) - leaves_;
  }
  int64_t Free(int rank) const { return tree_[static_cast<size_t>(leaves_ + rank)]; }
  void Take(int rank, int64_t tokens) {
    if (Free(rank) == capacity_) --full_;
    size_t node = static_cast<size_t>(leaves_ + rank);
    tree_[node] -= tokens;
    // Up to the first ancestor whose maximum stays as it was.
    for (node /= 2; node >= 1; node /= 2) {
      const int64_t value = std::max(tree_[2 * node], tree_[2 * node + 1]);
      if (tree_[node] == value) break;
      tree_[node] = value;
    }
  }
  // Ranks with nothing placed in this slot yet.
  int empty_ranks() const { return full_; }

 private:
  int64_t capacity_;
  int leaves_ = 1;
  int full_ = 0;
  std::vector<int64_t> tree_;
};

// Places the batch in order, telling `ring(index, slot, members)` where each long sequence went
// (members in ring order) and `whole(index, slot, rank, opens)` where each short one went and
// whether it opened the rank's micro-batch. Either returns false to stop early; so does this.
template <typename OnRing, typename OnWhole>
bool PackInOrder(const std::vector<SequenceSpec>& sequences, const HdpOptions& options,
                 OnRing ring, OnWhole whole) {
  const int world = options.world_size;
  const int64_t capacity = options.capacity_tokens;
  std::vector<SlotCapacity> slots;
  std::vector<int> members;
  TokenRange pieces[2];
  for (size_t i = 0; i < sequences.size(); ++i) {
    const SequenceSpec& seq = sequences[i];
    if (seq.length > capacity) {
      const int k = static_cast<int>((seq.length + capacity - 1) / capacity);
      size_t slot = 0;
      while (slot < slots.size() && slots[slot].empty_ranks() < k) ++slot;
      if (slot == slots.size()) slots.emplace_back(world, capacity);
      members.clear();
      for (int m = 0; m < k; ++m) {
        const int rank = slots[slot].FirstFit(capacity);
        const int count = ZigzagShareInto(seq.id, seq.length, k, m, pieces);
        int64_t tokens = 0;
        for (int p = 0; p < count; ++p) tokens += pieces[p].size();
        slots[slot].Take(rank, tokens);
        members.push_back(rank);
      }
      if (!ring(i, static_cast<int>(slot), members)) return false;
      continue;
    }
    size_t slot = 0;
    int rank = -1;
    for (; slot < slots.size(); ++slot) {
      rank = slots[slot].FirstFit(seq.length);
      if (rank >= 0) break;
    }
    if (slot == slots.size()) {
      slots.emplace_back(world, capacity);
      rank = 0;
    }
    const bool opens = slots[slot].Free(rank) == capacity;
    slots[slot].Take(rank, seq.length);
    if (!whole(i, static_cast<int>(slot), rank, opens)) return false;
  }
  return true;
}

}  // namespace

FlatPlacement PlaceInOrder(const std::vector<SequenceSpec>& sequences, const HdpOptions& options) {
  const int world = options.world_size;
  FlatPlacement placement;
  // Whole sequences as they are placed, in batch order; grouped by rank and slot at the end.
  std::vector<int> rank_of;
  std::vector<FlatPlacement::Local> placed;
  int slot_count = 0;
  PackInOrder(
      sequences, options,
      [&](size_t i, int slot, const std::vector<int>& members) {
        placement.AddRing(slot, members, std::span<const SequenceSpec>(&sequences[i], 1));
        return true;
      },
      [&](size_t i, int slot, int rank, bool) {
        rank_of.push_back(rank);
        placed.push_back({slot, sequences[i]});
        slot_count = std::max(slot_count, slot + 1);
        return true;
      });

  // Counting sorts, by slot and then by rank, both stable: every rank's sequences by slot, and
  // in a slot in batch order.
  std::vector<FlatPlacement::Local> by_slot(placed.size());
  std::vector<int> rank_by_slot(placed.size());
  std::vector<size_t> slot_begin(static_cast<size_t>(slot_count) + 1, 0);
  for (const FlatPlacement::Local& p : placed) ++slot_begin[static_cast<size_t>(p.slot) + 1];
  std::partial_sum(slot_begin.begin(), slot_begin.end(), slot_begin.begin());
  for (size_t j = 0; j < placed.size(); ++j) {
    const size_t at = slot_begin[static_cast<size_t>(placed[j].slot)]++;
    by_slot[at] = placed[j];
    rank_by_slot[at] = rank_of[j];
  }
  placement.rank_begin.assign(static_cast<size_t>(world) + 1, 0);
  for (const int r : rank_by_slot) ++placement.rank_begin[static_cast<size_t>(r) + 1];
  std::partial_sum(placement.rank_begin.begin(), placement.rank_begin.end(),
                   placement.rank_begin.begin());
  std::vector<size_t> next(placement.rank_begin.begin(), placement.rank_begin.end() - 1);
  placement.local.resize(placed.size());
  for (size_t j = 0; j < by_slot.size(); ++j) {
    placement.local[next[static_cast<size_t>(rank_by_slot[j])]++] = by_slot[j];
  }
  return placement;
}

bool InOrderReaches(const std::vector<SequenceSpec>& sequences, const HdpOptions& options,
                    const CostModel& cost, double seconds) {
  const int64_t capacity = options.capacity_tokens;
  const double micro_batch_s = cost.n_layers * cost.overhead_s;
  // The bound from single sequences first: it needs no placing at all. Of the short ones only
  // the longest can matter, a document's cost growing with its length.
  TokenRange pieces[2];
  int64_t longest_short = 0;
  for (const SequenceSpec& seq : sequences) {
    if (seq.length <= capacity) {
      longest_short = std::max(longest_short, seq.length);
      continue;
    }
    const int k = static_cast<int>((seq.length + capacity - 1) / capacity);
    bool every_member = true;
    for (int m = 0; m < k && every_member; ++m) {
      const int count = ZigzagShareInto(seq.id, seq.length, k, m, pieces);
      double share = micro_batch_s;
      for (int p = 0; p < count; ++p) share += cost.RangeSeconds(pieces[p].begin, pieces[p].end);
      every_member = share >= seconds;
    }
    if (every_member) return true;
  }
  if (longest_short > 0 && cost.DocumentSeconds(longest_short) + micro_batch_s >= seconds) {
    return true;
  }
  // Then the placement itself, which stops at the first rank that gets there: loads only grow.
  std::vector<double> load(static_cast<size_t>(options.world_size), 0.0);
  return !PackInOrder(
      sequences, options,
      [&](size_t i, int, const std::vector<int>& members) {
        const SequenceSpec& seq = sequences[i];
        const int k = static_cast<int>(members.size());
        bool below = true;
        for (int m = 0; m < k; ++m) {
          double& l = load[static_cast<size_t>(members[static_cast<size_t>(m)])];
          const int count = ZigzagShareInto(seq.id, seq.length, k, m, pieces);
          l += micro_batch_s;
          for (int p = 0; p < count; ++p) l += cost.RangeSeconds(pieces[p].begin, pieces[p].end);
          below = below && l < seconds;
        }
        return below;
      },
      [&](size_t i, int, int rank, bool opens) {
        double& l = load[static_cast<size_t>(rank)];
        l += cost.DocumentSeconds(sequences[i].length) + (opens ? micro_batch_s : 0.0);
        return l < seconds;
      });
}

}  // namespace loom
