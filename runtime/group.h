// An ordered list of distinct world ranks. Making a group is a local, free operation with no
// communication: the dynamic mesh forms new rings every step, addressed through groups, while
// messages always travel on the world communicator. Backends that need resources for collectives
// over a group (an MPI or NCCL communicator) create them on first use and cache them by the
// ordered rank list.
#ifndef LOOM_RUNTIME_GROUP_H_
#define LOOM_RUNTIME_GROUP_H_

#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace loom {

class Group {
 public:
  // Ranks 0..size-1 in order.
  static Group World(int size);
  // Fails on an empty list, a negative rank or a repeated rank.
  static absl::StatusOr<Group> Make(std::vector<int> ranks);

  int size() const { return static_cast<int>(ranks_.size()); }
  const std::vector<int>& ranks() const { return ranks_; }
  // The world rank at position `index` of the group.
  int world_rank(int index) const { return ranks_[static_cast<size_t>(index)]; }
  // Position of `world_rank` in the group, if it is a member.
  std::optional<int> IndexOf(int world_rank) const;
  bool Contains(int world_rank) const { return IndexOf(world_rank).has_value(); }
  // Ring neighbours of the member at `index`: the next and previous positions, wrapping around.
  int NextOf(int index) const { return ranks_[static_cast<size_t>((index + 1) % size())]; }
  int PrevOf(int index) const { return ranks_[static_cast<size_t>((index + size() - 1) % size())]; }
  // "[3 0 5]".
  std::string ToString() const;

  friend bool operator==(const Group& a, const Group& b) { return a.ranks_ == b.ranks_; }

 private:
  explicit Group(std::vector<int> ranks) : ranks_(std::move(ranks)) {}
  std::vector<int> ranks_;
};

}  // namespace loom

#endif  // LOOM_RUNTIME_GROUP_H_
