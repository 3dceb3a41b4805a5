// The StepPlan's data: JSON round trip, the Chrome trace, zigzag shares and the cost model.
#include "parallel/step_plan.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <set>
#include <string>

#include "nlohmann/json.hpp"
#include "parallel/balance_scheduler.h"
#include "parallel/chrome_trace.h"
#include "parallel/chunk_planner.h"
#include "parallel/cost_model.h"
#include "parallel/plan_json.h"
#include "parallel/ring_share.h"
#include "parallel/static_planner.h"

namespace loom {
namespace {

CostModel SmallCost() {
  CostModel cost;
  cost.attention_s = 1e-9;
  cost.linear_s = 1e-6;
  cost.overhead_s = 1e-5;
  cost.n_layers = 2;
  cost.activation_bytes_per_token = 100;
  cost.kv_bytes_per_token = 16;
  cost.gradient_bytes = 4000;
  cost.ranks_per_node = 2;
  cost.intra_node = {1e-6, 1e9};
  cost.inter_node = {5e-6, 1e8};
  return cost;
}

// Long and short sequences over 4 ranks with C = 16: rings, local documents, several micro-batches.
StepPlan SamplePlan() {
  const std::vector<SequenceSpec> batch = {{10, 40}, {11, 3}, {12, 16}, {13, 1}, {14, 20},
                                           {15, 7},  {16, 9}, {17, 2},  {18, 30}};
  absl::StatusOr<StepPlan> plan = PlanBalancedHdp(batch, {4, 16}, SmallCost());
  EXPECT_TRUE(plan.ok()) << plan.status();
  return *plan;
}

TEST(StepPlan, JsonRoundTripKeepsEveryField) {
  const StepPlan plan = SamplePlan();
  const std::string text = PlanToJson(plan).dump();
  absl::StatusOr<StepPlan> back = PlanFromJson(nlohmann::json::parse(text));
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(*back, plan);
  EXPECT_EQ(PlanToJson(*back).dump(), text);

  absl::StatusOr<StepPlan> statik = PlanStatic(plan.sequences, {4, 4, 16}, SmallCost());
  ASSERT_TRUE(statik.ok()) << statik.status();
  absl::StatusOr<StepPlan> statik_back = PlanFromJson(PlanToJson(*statik));
  ASSERT_TRUE(statik_back.ok()) << statik_back.status();
  EXPECT_EQ(*statik_back, *statik);

  // Chunks: contexts, dropped activations and recomputes survive the round trip.
  absl::StatusOr<StepPlan> chunks = PlanChunkFlow(plan.sequences, {3, 8, 1}, SmallCost());
  ASSERT_TRUE(chunks.ok()) << chunks.status();
  absl::StatusOr<StepPlan> chunks_back = PlanFromJson(PlanToJson(*chunks));
  ASSERT_TRUE(chunks_back.ok()) << chunks_back.status();
  EXPECT_EQ(*chunks_back, *chunks);
  EXPECT_NE(PlanToJson(*chunks).dump().find("\"recompute\""), std::string::npos);
}

TEST(StepPlan, JsonErrorsNameTheAction) {
  nlohmann::json json = PlanToJson(SamplePlan());
  json["ranks"][1]["actions"][0]["kind"] = "teleport";
  absl::StatusOr<StepPlan> plan = PlanFromJson(json);
  ASSERT_FALSE(plan.ok());
  EXPECT_NE(plan.status().message().find("rank 1 action 0"), std::string::npos) << plan.status();
  EXPECT_NE(plan.status().message().find("teleport"), std::string::npos) << plan.status();

  json = PlanToJson(SamplePlan());
  json["ranks"][2]["actions"][0].erase("micro_batch");
  plan = PlanFromJson(json);
  ASSERT_FALSE(plan.ok());
  EXPECT_NE(plan.status().message().find("rank 2 action 0"), std::string::npos) << plan.status();
}

TEST(ChromeTrace, IsJsonWithOneRowPerRank) {
  const StepPlan plan = SamplePlan();
  const std::filesystem::path dir =
      std::filesystem::temp_directory_path() / ("loom_trace_test_" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  const std::string path = (dir / "plan.trace.json").string();
  ASSERT_TRUE(WriteChromeTrace(plan, SmallCost(), path).ok());

  std::ifstream in(path);
  const nlohmann::json trace = nlohmann::json::parse(in);
  std::set<int> named_rows;
  std::set<int> rows_with_slices;
  size_t slices = 0;
  for (const nlohmann::json& e : trace.at("traceEvents")) {
    if (e.at("ph") == "M" && e.at("name") == "thread_name") named_rows.insert(e.at("tid").get<int>());
    if (e.at("ph") != "X") continue;
    ++slices;
    rows_with_slices.insert(e.at("tid").get<int>());
    EXPECT_GE(e.at("dur").get<double>(), 0.0);
  }
  std::set<int> all_ranks;
  size_t actions = 0;
  for (int r = 0; r < plan.world_size(); ++r) {
    all_ranks.insert(r);
    actions += plan.ranks[static_cast<size_t>(r)].actions.size();
  }
  EXPECT_EQ(named_rows, all_ranks);
  EXPECT_EQ(rows_with_slices, all_ranks);
  EXPECT_EQ(slices, actions);
  // Only the finished file is left: the temporary one was renamed over it.
  EXPECT_EQ(std::distance(std::filesystem::directory_iterator(dir),
                          std::filesystem::directory_iterator()),
            1);
  std::filesystem::remove_all(dir);
}

TEST(RingShare, ZigzagCoversTheSequenceWithBalancedWork) {
  for (const int64_t length : {1, 5, 7, 64, 1001}) {
    for (const int members : {1, 2, 3, 5, 8}) {
      std::vector<int> owner(static_cast<size_t>(length), -1);
      int64_t min_tokens = length;
      int64_t max_tokens = 0;
      for (int m = 0; m < members; ++m) {
        const std::vector<TokenRange> share = ZigzagShare(9, length, members, m);
        EXPECT_LE(share.size(), 2u);
        for (const TokenRange& r : share) {
          EXPECT_EQ(r.sequence_id, 9);
          for (int64_t t = r.begin; t < r.end; ++t) {
            EXPECT_EQ(owner[static_cast<size_t>(t)], -1) << "token " << t << " held twice";
            owner[static_cast<size_t>(t)] = m;
          }
        }
        min_tokens = std::min(min_tokens, TokenCount(share));
        max_tokens = std::max(max_tokens, TokenCount(share));
      }
      for (int64_t t = 0; t < length; ++t) EXPECT_NE(owner[static_cast<size_t>(t)], -1);
      if (length >= 2 * members) {
        EXPECT_LE(max_tokens - min_tokens, 2);
      }
    }
  }
  // Member 0 holds the first and the last piece.
  EXPECT_EQ(ZigzagShare(3, 8, 2, 0), (std::vector<TokenRange>{{3, 0, 2}, {3, 6, 8}}));
  EXPECT_EQ(ZigzagShare(3, 8, 2, 1), (std::vector<TokenRange>{{3, 2, 4}, {3, 4, 6}}));
}

TEST(CostModel, QuadraticAttentionSplitsEvenlyOverAZigzagRing) {
  const CostModel cost = SmallCost();
  EXPECT_DOUBLE_EQ(cost.LayerSeconds(1000), 1e-9 * 1e6 + 1e-6 * 1000 + 1e-5);
  EXPECT_DOUBLE_EQ(cost.DocumentSeconds(1000), 2 * (1e-9 * 1e6 + 1e-6 * 1000));
  EXPECT_DOUBLE_EQ(cost.MicroBatchSeconds({{0, 0, 1000}}), 2 * cost.LayerSeconds(1000));
  const int64_t length = 100000;
  const int members = 5;
  double sum = 0.0;
  for (int m = 0; m < members; ++m) {
    const double share = cost.MicroBatchSeconds(ZigzagShare(0, length, members, m)) -
                         cost.n_layers * cost.overhead_s;
    EXPECT_NEAR(share, cost.DocumentSeconds(length) / members, 1e-3 * share);
    sum += share;
  }
  EXPECT_NEAR(sum, cost.DocumentSeconds(length), 1e-9 * sum);
}

TEST(CostModel, DefaultsFollowTheModelShape) {
  ModelConfig model;
  model.d_model = 4096;
  model.n_layers = 32;
  model.n_heads = 32;
  model.n_kv_heads = 32;
  model.ffn_dim = 11008;
  model.vocab_size = 32000;
  HardwareSpec hardware;
  const CostModel cost = CostModel::FromModelConfig(model, hardware);
  const double rate = hardware.peak_flops * hardware.efficiency;
  EXPECT_DOUBLE_EQ(cost.attention_s, 6.0 * 4096 / rate);
  // About 6 * 7e9 FLOPs per token over all layers for a 7B model.
  EXPECT_NEAR(cost.linear_s * model.n_layers * rate / 6.0, 6.7e9, 0.3e9);
  EXPECT_EQ(cost.kv_bytes_per_token, 2 * 4096 * 2);
  EXPECT_GT(cost.activation_bytes_per_token, 0);
  EXPECT_NEAR(static_cast<double>(cost.gradient_bytes) / 4, 6.7e9, 0.3e9);
  EXPECT_EQ(&cost.Link(0, 7), &cost.intra_node);
  EXPECT_EQ(&cost.Link(7, 8), &cost.inter_node);
  EXPECT_EQ(cost.RingBytesSent(4, 10), 3 * 32 * 3 * 10);
}

}  // namespace
}  // namespace loom
