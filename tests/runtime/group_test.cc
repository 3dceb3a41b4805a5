// Groups: ordered lists of distinct world ranks, made locally.
#include "runtime/group.h"

#include <gtest/gtest.h>

namespace loom {
namespace {

TEST(Group, WorldListsRanksInOrder) {
  const Group world = Group::World(4);
  EXPECT_EQ(world.ranks(), (std::vector<int>{0, 1, 2, 3}));
  EXPECT_EQ(world.ToString(), "[0 1 2 3]");
}

TEST(Group, KeepsTheGivenOrder) {
  absl::StatusOr<Group> ring = Group::Make({5, 2, 7});
  ASSERT_TRUE(ring.ok()) << ring.status();
  EXPECT_EQ(ring->size(), 3);
  EXPECT_EQ(ring->world_rank(0), 5);
  EXPECT_EQ(ring->IndexOf(7), 2);
  EXPECT_EQ(ring->IndexOf(3), std::nullopt);
  EXPECT_TRUE(ring->Contains(2));
  EXPECT_FALSE(ring->Contains(0));
  EXPECT_EQ(ring->NextOf(2), 5);
  EXPECT_EQ(ring->PrevOf(0), 7);
  EXPECT_EQ(ring->NextOf(0), 2);
  EXPECT_FALSE(*ring == *Group::Make({2, 5, 7})) << "order matters";
}

TEST(Group, RejectsEmptyNegativeAndRepeatedRanks) {
  EXPECT_EQ(Group::Make({}).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(Group::Make({1, -3}).status().code(), absl::StatusCode::kInvalidArgument);
  absl::Status repeated = Group::Make({4, 1, 4}).status();
  EXPECT_EQ(repeated.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(repeated.message(), "group [4 1 4] lists rank 4 twice");
}

TEST(Group, SingleMemberRingIsItsOwnNeighbour) {
  const Group one = *Group::Make({3});
  EXPECT_EQ(one.NextOf(0), 3);
  EXPECT_EQ(one.PrevOf(0), 3);
}

}  // namespace
}  // namespace loom
