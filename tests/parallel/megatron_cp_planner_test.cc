// The megatron-hybrid-cp baseline: power-of-two CP sizes, groups of consecutive ranks, rounds
// that begin when nothing more has a place, free ranks filled by doubling a group, and plans the
// validator accepts.
#include "parallel/megatron_cp_planner.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <map>
#include <vector>

#include "parallel/plan_validator.h"

namespace loom {
namespace {

using ::testing::HasSubstr;

const CostModel& Cost() {
  static const CostModel* cost = new CostModel(CostModel::FromModelConfig(ModelConfig{}));
  return *cost;
}

// Every ring of the plan: ring id -> (members, micro-batch, sequence ids it carries).
struct RingSeen {
  std::vector<int> members;
  int micro_batch = 0;
  std::vector<int64_t> sequences;
};
std::map<int, RingSeen> Rings(const StepPlan& plan) {
  std::map<int, RingSeen> rings;
  for (const RankPlan& rank : plan.ranks) {
    for (const Action& a : rank.actions) {
      if (a.kind != ActionKind::kRingExchange || rings.contains(a.ring_id)) continue;
      RingSeen& r = rings[a.ring_id];
      r.members = a.ring;
      r.micro_batch = a.micro_batch;
      for (const TokenRange& t : a.tokens) {
        if (r.sequences.empty() || r.sequences.back() != t.sequence_id) {
          r.sequences.push_back(t.sequence_id);
        }
      }
    }
  }
  return rings;
}

TEST(MegatronCpSize, NextPowerOfTwoOfLengthOverCapacity) {
  EXPECT_EQ(MegatronCpSize(1, 100), 1);
  EXPECT_EQ(MegatronCpSize(100, 100), 1);
  EXPECT_EQ(MegatronCpSize(101, 100), 2);
  EXPECT_EQ(MegatronCpSize(200, 100), 2);
  EXPECT_EQ(MegatronCpSize(201, 100), 4);  // 3 ranks would do; Megatron has groups of 4
  EXPECT_EQ(MegatronCpSize(500, 100), 8);
}

TEST(MegatronHybridCp, LongestFirstIntoPowerOfTwoGroupsOfConsecutiveRanks) {
  // World 8, C = 100. Sequence 0 (350 tokens) needs 4 ranks and opens a group on ranks 0-3,
  // sequence 1 (150) a group of 2 on ranks 4-5; the short ones open single-rank groups on 6 and
  // 7 and then join the least-loaded group of size 1 (by L^2).
  const std::vector<SequenceSpec> batch = {{0, 350}, {1, 150}, {2, 90}, {3, 80}, {4, 20}};
  absl::StatusOr<StepPlan> plan = PlanMegatronHybridCp(batch, {8, 100}, Cost());
  ASSERT_TRUE(plan.ok()) << plan.status();
  ASSERT_TRUE(ValidatePlan(*plan, Cost()).ok()) << ValidatePlan(*plan, Cost());
  const std::map<int, RingSeen> rings = Rings(*plan);
  ASSERT_EQ(rings.size(), 2u);
  EXPECT_EQ(rings.at(0).members, (std::vector<int>{0, 1, 2, 3}));
  EXPECT_EQ(rings.at(0).sequences, (std::vector<int64_t>{0}));
  EXPECT_EQ(rings.at(1).members, (std::vector<int>{4, 5}));
  EXPECT_EQ(rings.at(1).sequences, (std::vector<int64_t>{1}));
  // 90 -> rank 6, 80 -> rank 7, 20 -> the lighter of the two (rank 7: 80^2 < 90^2), after 80.
  const std::vector<Action>& rank6 = plan->ranks[6].actions;
  const std::vector<Action>& rank7 = plan->ranks[7].actions;
  ASSERT_EQ(rank6.size(), 3u);  // forward, backward, gradient sync
  EXPECT_EQ(rank6[0].tokens, (std::vector<TokenRange>{{2, 0, 90}}));
  ASSERT_EQ(rank7.size(), 5u);
  EXPECT_EQ(rank7[0].tokens, (std::vector<TokenRange>{{3, 0, 80}}));
  EXPECT_EQ(rank7[2].tokens, (std::vector<TokenRange>{{4, 0, 20}}));
  EXPECT_EQ(rank7[2].micro_batch, 1) << "one sequence per micro-batch";
}

TEST(MegatronHybridCp, FreeRanksWidenTheSmallestGroup) {
  // One short sequence on 4 ranks: its group of 1 doubles to 2 and then to 4.
  absl::StatusOr<StepPlan> plan = PlanMegatronHybridCp({{0, 100}}, {4, 100}, Cost());
  ASSERT_TRUE(plan.ok()) << plan.status();
  ASSERT_TRUE(ValidatePlan(*plan, Cost()).ok()) << ValidatePlan(*plan, Cost());
  const std::map<int, RingSeen> rings = Rings(*plan);
  ASSERT_EQ(rings.size(), 1u);
  EXPECT_EQ(rings.at(0).members, (std::vector<int>{0, 1, 2, 3}));
}

TEST(MegatronHybridCp, AGroupWidensOnlyWhileEveryMemberGetsATokenOfEachSequence) {
  // A 3-token sequence on 8 ranks: one member each of 2 holds 1 or 2 tokens, but 4 members would
  // leave one without any (Megatron would pad), so ranks 2-7 stay idle.
  absl::StatusOr<StepPlan> plan = PlanMegatronHybridCp({{0, 3}}, {8, 100}, Cost());
  ASSERT_TRUE(plan.ok()) << plan.status();
  ASSERT_TRUE(ValidatePlan(*plan, Cost()).ok()) << ValidatePlan(*plan, Cost());
  const std::map<int, RingSeen> rings = Rings(*plan);
  ASSERT_EQ(rings.size(), 1u);
  EXPECT_EQ(rings.at(0).members, (std::vector<int>{0, 1}));
  EXPECT_EQ(plan->ranks[2].actions.size(), 1u) << "only the gradient sync";
}

TEST(MegatronHybridCp, ASequenceWithNoPlaceWaitsForTheNextRound) {
  // World 2, C = 100: the 200-token sequence takes both ranks, so the short ones (CP 1) have no
  // group of their size and no free rank: they run in the next round, after the ring's slot.
  absl::StatusOr<StepPlan> plan =
      PlanMegatronHybridCp({{0, 60}, {1, 200}, {2, 50}}, {2, 100}, Cost());
  ASSERT_TRUE(plan.ok()) << plan.status();
  ASSERT_TRUE(ValidatePlan(*plan, Cost()).ok()) << ValidatePlan(*plan, Cost());
  const std::map<int, RingSeen> rings = Rings(*plan);
  ASSERT_EQ(rings.size(), 1u);
  EXPECT_EQ(rings.at(0).sequences, (std::vector<int64_t>{1}));
  EXPECT_EQ(rings.at(0).micro_batch, 0);
  for (int r = 0; r < 2; ++r) {
    const std::vector<Action>& actions = plan->ranks[static_cast<size_t>(r)].actions;
    ASSERT_EQ(actions.size(), 6u) << "rank " << r;
    EXPECT_EQ(actions[3].micro_batch, 1);
    EXPECT_EQ(actions[3].tokens.size(), 1u);
    EXPECT_EQ(actions[3].tokens[0].sequence_id, r == 0 ? 0 : 2);
  }
}

TEST(MegatronHybridCp, RefusesASequenceTooLongForTheWorldNamingIt) {
  const absl::Status s =
      PlanMegatronHybridCp({{0, 10}, {7, 301}}, {3, 100}, Cost()).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(s.message()), HasSubstr("sequence 7 (index 1) of 301 tokens"));
  EXPECT_THAT(std::string(s.message()), HasSubstr("group of 4 ranks"));
  EXPECT_FALSE(PlanMegatronHybridCp({{0, 10}}, {0, 100}, Cost()).ok());
}

}  // namespace
}  // namespace loom
