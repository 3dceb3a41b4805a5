// The three planners on randomized batches from published length distributions: every plan
// validates, rings appear only where they must, and the balance scheduler beats naive HDP and the
// static mesh on the slowest rank.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdio>
#include <string>
#include <vector>

#include "data/length_distribution.h"
#include "parallel/balance_scheduler.h"
#include "parallel/hdp_planner.h"
#include "parallel/plan_metrics.h"
#include "parallel/plan_validator.h"
#include "parallel/static_planner.h"

namespace loom {
namespace {

using ::testing::HasSubstr;

constexpr int64_t kCapacity = 4096;

// The default small model: attention overtakes the linear layers at a few thousand tokens, so
// batches scaled to C = 4096 still feel the quadratic term.
const CostModel& Cost() {
  static const CostModel* cost = new CostModel(CostModel::FromModelConfig(ModelConfig{}));
  return *cost;
}

// About 8 micro-batches of C tokens per rank, lengths scaled so that the preset's longest
// sequence fills the whole world.
std::vector<SequenceSpec> RandomBatch(const std::string& preset, int world, uint64_t seed) {
  absl::StatusOr<LengthDistribution> dist = LengthDistribution::Preset(preset);
  EXPECT_TRUE(dist.ok()) << dist.status();
  const double scale =
      static_cast<double>(world * kCapacity) / static_cast<double>(dist->max_length());
  std::vector<SequenceSpec> batch;
  int64_t tokens = 0;
  uint64_t draw = seed * 1000;
  while (tokens < 8 * world * kCapacity) {
    for (const int64_t length : dist->Sample(256, draw++)) {
      const int64_t scaled = std::clamp<int64_t>(static_cast<int64_t>(length * scale), 1,
                                                 world * kCapacity);
      batch.push_back({static_cast<int64_t>(batch.size()) * 3 + 7, scaled});
      tokens += scaled;
      if (tokens >= 8 * world * kCapacity) break;
    }
  }
  return batch;
}

// Smallest power-of-two CP size dividing the world whose groups hold the longest sequence, as a
// static mesh sized for the longest context is; the whole world when none is.
int StaticCpSize(const std::vector<SequenceSpec>& batch, int world) {
  int64_t longest = 0;
  for (const SequenceSpec& s : batch) longest = std::max(longest, s.length);
  for (int cp = 1; cp <= world; cp *= 2) {
    if (world % cp == 0 && cp * kCapacity >= longest + 2 * cp) return cp;
  }
  return world;
}

void ExpectRingsOnlyForLongSequences(const StepPlan& plan, bool ceil_sizes) {
  for (int r = 0; r < plan.world_size(); ++r) {
    for (const Action& a : plan.ranks[static_cast<size_t>(r)].actions) {
      if (a.kind != ActionKind::kRingExchange) continue;
      for (const TokenRange& t : a.tokens) {
        int64_t length = 0;
        for (const SequenceSpec& s : plan.sequences) {
          if (s.id == t.sequence_id) length = s.length;
        }
        ASSERT_GT(length, kCapacity) << "rank " << r << " ring " << a.ring_id;
        if (ceil_sizes) {
          EXPECT_EQ(static_cast<int64_t>(a.ring.size()), (length + kCapacity - 1) / kCapacity)
              << "ring " << a.ring_id << " for sequence " << t.sequence_id;
        }
      }
    }
  }
}

TEST(Planners, RandomBatchesValidateAndBalancedBeatsTheOthers) {
  double balanced_sum = 0.0;
  int batches = 0;
  for (const std::string preset : {"byted", "github", "chunkflow"}) {
    double preset_balanced = 0.0;
    double preset_naive = 0.0;
    double preset_static = 0.0;
    int preset_batches = 0;
    for (const int world : {1, 2, 3, 4, 5, 8}) {
      for (uint64_t seed = 1; seed <= 4; ++seed) {
        const std::vector<SequenceSpec> batch = RandomBatch(preset, world, seed);
        SCOPED_TRACE(preset + " world " + std::to_string(world) + " seed " +
                     std::to_string(seed));
        absl::StatusOr<StepPlan> naive = PlanNaiveHdp(batch, {world, kCapacity}, Cost());
        absl::StatusOr<StepPlan> balanced = PlanBalancedHdp(batch, {world, kCapacity}, Cost());
        absl::StatusOr<StepPlan> statik =
            PlanStatic(batch, {world, StaticCpSize(batch, world), kCapacity}, Cost());
        ASSERT_TRUE(naive.ok()) << naive.status();
        ASSERT_TRUE(balanced.ok()) << balanced.status();
        ASSERT_TRUE(statik.ok()) << statik.status();
        for (const StepPlan* plan : {&*naive, &*balanced, &*statik}) {
          const absl::Status valid = ValidatePlan(*plan, Cost());
          ASSERT_TRUE(valid.ok()) << plan->planner << ": " << valid;
        }
        ExpectRingsOnlyForLongSequences(*naive, /*ceil_sizes=*/true);
        ExpectRingsOnlyForLongSequences(*balanced, /*ceil_sizes=*/false);
        const double b = MeasurePlan(*balanced, Cost()).balance();
        const double n = MeasurePlan(*naive, Cost()).balance();
        const double s = MeasurePlan(*statik, Cost()).balance();
        EXPECT_LE(b, n * (1 + 1e-9));
        preset_balanced += b;
        preset_naive += n;
        preset_static += s;
        balanced_sum += b;
        ++preset_batches;
        ++batches;
      }
    }
    std::printf("%-10s mean max/mean over %d batches: balanced %.4f  naive hdp %.4f  static %.4f\n",
                preset.c_str(), preset_batches, preset_balanced / preset_batches,
                preset_naive / preset_batches, preset_static / preset_batches);
    EXPECT_LE(preset_balanced, preset_static * (1 + 1e-9)) << preset;
  }
  EXPECT_LE(balanced_sum / batches, 1.05);
}

TEST(Planners, NaiveHdpPacksInOrder) {
  // C = 4 on 3 ranks: sequence 0 (10 tokens) spans ceil(10/4) = 3 ranks, leaving 1, 1, 0 tokens
  // free; the short ones go first fit into micro-batch 1.
  const std::vector<SequenceSpec> batch = {{0, 10}, {1, 3}, {2, 2}, {3, 4}};
  absl::StatusOr<StepPlan> plan = PlanNaiveHdp(batch, {3, 4}, Cost());
  ASSERT_TRUE(plan.ok()) << plan.status();
  ASSERT_TRUE(ValidatePlan(*plan, Cost()).ok()) << ValidatePlan(*plan, Cost());
  const std::vector<Action>& rank0 = plan->ranks[0].actions;
  ASSERT_EQ(rank0.size(), 6u);
  EXPECT_EQ(rank0[0].ring, (std::vector<int>{0, 1, 2}));
  EXPECT_EQ(rank0[0].tokens, (std::vector<TokenRange>{{0, 0, 2}, {0, 9, 10}}));
  EXPECT_EQ(rank0[3].tokens, (std::vector<TokenRange>{{1, 0, 3}}));
  EXPECT_EQ(rank0[3].micro_batch, 1);
  EXPECT_EQ(plan->ranks[1].actions[3].tokens, (std::vector<TokenRange>{{2, 0, 2}}));
  EXPECT_EQ(plan->ranks[2].actions[3].tokens, (std::vector<TokenRange>{{3, 0, 4}}));
}

TEST(Planners, BalancedHdpGivesLoadedRanksFewerMicroBatches) {
  // One sequence of 4C on 8 ranks with many short ones: its ring members run fewer micro-batches.
  std::vector<SequenceSpec> batch = {{1000, 4 * kCapacity}};
  for (int i = 0; i < 200; ++i) batch.push_back({i, 512 + 37 * (i % 11)});
  absl::StatusOr<StepPlan> plan = PlanBalancedHdp(batch, {8, kCapacity}, Cost());
  ASSERT_TRUE(plan.ok()) << plan.status();
  ASSERT_TRUE(ValidatePlan(*plan, Cost()).ok()) << ValidatePlan(*plan, Cost());
  const PlanMetrics metrics = MeasurePlan(*plan, Cost());
  int fewest = 1 << 30;
  int most = 0;
  for (const RankLoad& load : metrics.ranks) {
    fewest = std::min(fewest, load.micro_batches);
    most = std::max(most, load.micro_batches);
  }
  EXPECT_LT(fewest, most);
  EXPECT_LT(metrics.balance(), 1.05);
}

TEST(Planners, OverlongSequenceIsAnErrorNamingIt) {
  const std::vector<SequenceSpec> batch = {{5, 100}, {42, 4 * kCapacity + 1}};
  for (const auto& status : {PlanNaiveHdp(batch, {4, kCapacity}, Cost()).status(),
                             PlanBalancedHdp(batch, {4, kCapacity}, Cost()).status()}) {
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(std::string(status.message()), HasSubstr("sequence 42 (index 1)"));
    EXPECT_THAT(std::string(status.message()), HasSubstr("capacity of 16384 tokens"));
  }
  const absl::Status statik = PlanStatic(batch, {4, 2, kCapacity}, Cost()).status();
  EXPECT_THAT(std::string(statik.message()), HasSubstr("sequence 42 (index 1)"));
  EXPECT_FALSE(PlanStatic(batch, {4, 3, kCapacity}, Cost()).ok()) << "cp must divide the world";
}

}  // namespace
}  // namespace loom
