#include "runtime/group.h"

#include <algorithm>
#include <numeric>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace loom {

Group Group::World(int size) {
  std::vector<int> ranks(static_cast<size_t>(std::max(size, 0)));
  std::iota(ranks.begin(), ranks.end(), 0);
  return Group(std::move(ranks));
}

absl::StatusOr<Group> Group::Make(std::vector<int> ranks) {
  if (ranks.empty()) return absl::InvalidArgumentError("a group needs at least one rank");
  std::vector<int> sorted = ranks;
  std::sort(sorted.begin(), sorted.end());
  if (sorted.front() < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("group [", absl::StrJoin(ranks, " "), "] has negative rank ", sorted.front()));
  }
  const auto repeat = std::adjacent_find(sorted.begin(), sorted.end());
  if (repeat != sorted.end()) {
    return absl::InvalidArgumentError(
        absl::StrCat("group [", absl::StrJoin(ranks, " "), "] lists rank ", *repeat, " twice"));
  }
  return Group(std::move(ranks));
}

std::optional<int> Group::IndexOf(int world_rank) const {
  const auto it = std::find(ranks_.begin(), ranks_.end(), world_rank);
  if (it == ranks_.end()) return std::nullopt;
  return static_cast<int>(it - ranks_.begin());
}

std::string Group::ToString() const { return absl::StrCat("[", absl::StrJoin(ranks_, " "), "]"); }

}  // namespace loom
