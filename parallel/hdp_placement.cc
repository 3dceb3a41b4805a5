#include "parallel/hdp_placement.h"

#include <algorithm>

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
    for (int r = 0; r < ranks; ++r) Set(r, capacity);
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
    Set(rank, Free(rank) - tokens);
  }
  // Ranks with nothing placed in this slot yet.
  int empty_ranks() const { return full_; }

 private:
  void Set(int rank, int64_t value) {
    size_t node = static_cast<size_t>(leaves_ + rank);
    tree_[node] = value;
    for (node /= 2; node >= 1; node /= 2) tree_[node] = std::max(tree_[2 * node], tree_[2 * node + 1]);
  }

  int64_t capacity_;
  int leaves_ = 1;
  int full_ = 0;
  std::vector<int64_t> tree_;
};

}  // namespace

Placement PlaceInOrder(const std::vector<SequenceSpec>& sequences, const HdpOptions& options) {
  const int world = options.world_size;
  const int64_t capacity = options.capacity_tokens;
  std::vector<SlotCapacity> slots;
  Placement placement;
  placement.local.resize(static_cast<size_t>(world));
  auto place_local = [&](int rank, int slot, int64_t index) {
    auto& rank_slots = placement.local[static_cast<size_t>(rank)];
    if (rank_slots.size() <= static_cast<size_t>(slot)) rank_slots.resize(slot + 1);
    rank_slots[static_cast<size_t>(slot)].push_back(index);
  };

  for (size_t i = 0; i < sequences.size(); ++i) {
    const SequenceSpec& seq = sequences[i];
    const int64_t index = static_cast<int64_t>(i);
    if (seq.length > capacity) {
      const int k = static_cast<int>((seq.length + capacity - 1) / capacity);
      size_t slot = 0;
      while (slot < slots.size() && slots[slot].empty_ranks() < k) ++slot;
      if (slot == slots.size()) slots.emplace_back(world, capacity);
      RingPlacement ring;
      ring.micro_batch = static_cast<int>(slot);
      ring.sequences = {index};
      for (int m = 0; m < k; ++m) {
        const int rank = slots[slot].FirstFit(capacity);
        slots[slot].Take(rank, TokenCount(ZigzagShare(seq.id, seq.length, k, m)));
        ring.members.push_back(rank);
      }
      placement.rings.push_back(std::move(ring));
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
    slots[slot].Take(rank, seq.length);
    place_local(rank, static_cast<int>(slot), index);
  }
  return placement;
}

}  // namespace loom
