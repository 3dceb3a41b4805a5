// Every strategy `loom simulate` compares, on a 1,024-rank cluster (128 nodes of 8 H100s, LLaMA
// 7B) and batches drawn from the published length presets: each plans every batch, each plan
// passes the validator, and each keeps to its own rules (power-of-two rings for
// megatron-hybrid-cp, one CP size for static, no rings for chunkflow).
#include "parallel/strategy.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <chrono>
#include <cstdio>
#include <string>

#include "data/length_batch.h"
#include "data/length_distribution.h"
#include "parallel/cluster_cost.h"
#include "parallel/plan_validator.h"
#include "src/model_presets.h"

namespace loom {
namespace {

using ::testing::HasSubstr;

std::vector<SequenceSpec> Batch(const std::string& preset, int64_t tokens, int64_t context,
                                uint64_t seed) {
  const LengthDistribution dist = *LengthDistribution::Preset(preset);
  std::vector<SequenceSpec> batch;
  for (const int64_t length : DrawLengthBatch(dist, tokens, context, seed)) {
    batch.push_back({static_cast<int64_t>(batch.size()), length});
  }
  return batch;
}

bool PowerOfTwo(size_t n) { return n > 0 && (n & (n - 1)) == 0; }

TEST(Strategies, EveryStrategyPlansValidPlansAt1024Ranks) {
  const ModelConfig model = *ModelPreset("llama-7b");
  const ClusterCost cc = *MakeClusterCost(model, DefaultCluster(*GpuPreset("h100-80g"), 128), 1);
  ASSERT_EQ(cc.world_size, 1024);
  const int64_t capacity = CapacityFromMemory(cc);
  ASSERT_GE(capacity, 4096);
  for (const auto& [preset, context] :
       {std::pair<std::string, int64_t>{"byted", 512 * capacity}, {"github", 256 * capacity},
        {"chunkflow", 32 * capacity}}) {
    // About two micro-batches of C per rank.
    const std::vector<SequenceSpec> batch = Batch(preset, 2 * 1024 * capacity, context, 7);
    const StrategyContext ctx{1024, capacity, context, cc.activation_budget_bytes};
    std::vector<std::string> names = StrategyKindNames();
    names.push_back("best-pp4");  // best as a pipeline of 4 stages
    for (const std::string& name : names) {
      SCOPED_TRACE(preset + " " + name);
      StrategySpec spec;
      spec.kind = name == "best-pp4" ? StrategyKind::kBest : *ParseStrategyKind(name);
      if (spec.kind == StrategyKind::kBest) spec.chunk_size = capacity;
      if (name == "best-pp4") {
        // 256 replicas of C tokens must hold the longest sequence (a pipelined best does not
        // offload); one preset is enough (its `auto` simulates a dozen candidates).
        if (preset != "github") continue;
        spec.pipeline_size = 4;
      }
      const auto start = std::chrono::steady_clock::now();
      absl::StatusOr<StepPlan> plan = PlanWithStrategy(batch, spec, ctx, cc.cost);
      ASSERT_TRUE(plan.ok()) << plan.status();
      const auto planned = std::chrono::steady_clock::now();
      const absl::Status valid = ValidatePlan(*plan, cc.cost);
      ASSERT_TRUE(valid.ok()) << valid;
      const auto validated = std::chrono::steady_clock::now();
      std::printf("%-9s %-18s %6zu sequences: plan %.1f ms, validate %.1f ms\n", preset.c_str(),
                  name.c_str(), batch.size(),
                  std::chrono::duration<double, std::milli>(planned - start).count(),
                  std::chrono::duration<double, std::milli>(validated - planned).count());
      const int cp = *StrategyCpSize(spec, ctx);
      for (const RankPlan& rank : plan->ranks) {
        for (const Action& a : rank.actions) {
          if (a.kind != ActionKind::kRingExchange) continue;
          if (spec.kind == StrategyKind::kMegatronHybridCp) {
            ASSERT_TRUE(PowerOfTwo(a.ring.size())) << "ring " << a.ring_id;
          }
          if (spec.kind == StrategyKind::kStatic) {
            ASSERT_EQ(static_cast<int>(a.ring.size()), cp);
          }
          ASSERT_NE(spec.kind, StrategyKind::kChunkFlow) << "chunkflow plans have no rings";
        }
      }
    }
  }
}

TEST(Strategies, NamesAndErrors) {
  EXPECT_EQ(*ParseStrategyKind("megatron-hybrid-cp"), StrategyKind::kMegatronHybridCp);
  EXPECT_THAT(std::string(ParseStrategyKind("hdp_naive").status().message()),
              HasSubstr("known: static, megatron-hybrid-cp, hdp-naive, hdp, chunkflow, best"));
  StrategySpec spec;
  spec.kind = StrategyKind::kStatic;
  spec.cp_size = 3;
  EXPECT_THAT(std::string(StrategyCpSize(spec, {8, 100, 400, 0}).status().message()),
              HasSubstr("cp_size 3 does not divide the world of 8 ranks"));
  spec.cp_size = 0;
  EXPECT_EQ(*StrategyCpSize(spec, {8, 100, 400, 0}), 4);
}

}  // namespace
}  // namespace loom
