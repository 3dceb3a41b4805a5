// The executor against single-rank training (DESIGN.md section 4): for randomized global batches
// drawn from the Byted, GitHub and ChunkFlow length presets (lengths divided by 64, capped so the
// world holds them), world sizes 1, 2, 3, 4, 5 and 8, and the hdp, naive_hdp and static planners,
// the loss (relative <= 1e-6) and every parameter's gradient (relative <= 1e-5) on every rank
// equal those of one rank computing the whole batch. Also: a rank in two rings and holding whole
// documents in one micro-batch, and plans that do not fit the batch or the world.
#include "parallel/step_executor.h"

#include <gtest/gtest.h>
#include <omp.h>

#include <cstdio>
#include <string>
#include <vector>

#include "parallel/plan_builder.h"
#include "parallel/plan_metrics.h"
#include "parallel/plan_validator.h"
#include "parallel/planner.h"
#include "runtime/local_world.h"
#include "tests/parallel/plan_equivalence.h"

namespace loom {
namespace {

constexpr int64_t kCapacity = 40;

struct RankResult {
  double loss_sum = 0.0;
  std::vector<float> grads;
  int micro_batches = 0;
};

// Runs `plan` on a local world with every rank's model initialised from `seed`.
std::vector<RankResult> RunPlan(const StepPlan& plan, const PackedBatch& batch,
                                const ModelConfig& config, uint64_t seed) {
  std::vector<RankResult> results(static_cast<size_t>(plan.world_size()));
  std::unique_ptr<LocalWorld> world = *LocalWorld::Create(plan.world_size(), absl::Seconds(60));
  const absl::Status status = world->Run([&](Communicator& comm) -> absl::Status {
    omp_set_num_threads(1);
    absl::StatusOr<std::unique_ptr<Model>> model = Model::Create(config);
    if (!model.ok()) return model.status();
    (*model)->InitWeights(seed);
    absl::StatusOr<StepOutcome> outcome = ExecuteStep(comm, plan, batch, **model);
    if (!outcome.ok()) return outcome.status();
    RankResult& r = results[static_cast<size_t>(comm.rank())];
    r.loss_sum = outcome->loss_sum;
    r.micro_batches = outcome->micro_batches;
    r.grads.assign((*model)->grads(), (*model)->grads() + (*model)->num_params());
    return absl::OkStatus();
  });
  EXPECT_TRUE(status.ok()) << status;
  return results;
}

struct Case {
  std::string preset;
  int world_size;
  PlannerKind planner;
};

class StepExecutorTest : public ::testing::TestWithParam<Case> {};

TEST_P(StepExecutorTest, MatchesSingleRankTraining) {
  const Case& k = GetParam();
  const ModelConfig config = test::PlanTestModel();
  const CostModel cost = CostModel::FromModelConfig(config);
  const int64_t longest = std::min<int64_t>(k.world_size * kCapacity, 4 * kCapacity);
  int rings = 0;
  for (uint64_t seed : {1u, 2u}) {
    const uint64_t batch_seed = seed * 1000 + static_cast<uint64_t>(k.world_size);
    const std::vector<SequenceSpec> sequences =
        test::PresetBatch(k.preset, 64, longest, 2 * k.world_size * kCapacity, batch_seed);
    PlannerOptions options{k.planner, k.world_size, kCapacity, 1};
    if (k.planner == PlannerKind::kStatic) {
      int64_t max_len = 0;
      for (const SequenceSpec& s : sequences) max_len = std::max(max_len, s.length);
      options.cp_size = *StaticCpSize(k.world_size, kCapacity, max_len);
    }
    absl::StatusOr<StepPlan> plan = PlanStep(sequences, options, cost);
    ASSERT_TRUE(plan.ok()) << plan.status();
    ASSERT_TRUE(ValidatePlan(*plan, cost).ok()) << ValidatePlan(*plan, cost);
    const PackedBatch batch = test::RandomPackedBatch(sequences, config.vocab_size, batch_seed);
    const test::Reference want = test::SingleRank(config, seed, batch);
    const std::vector<RankResult> got = RunPlan(*plan, batch, config, seed);
    ASSERT_EQ(got.size(), static_cast<size_t>(k.world_size));
    const PlanMetrics metrics = MeasurePlan(*plan, cost);
    rings += metrics.rings;
    for (int r = 0; r < k.world_size; ++r) {
      const RankResult& g = got[static_cast<size_t>(r)];
      ASSERT_EQ(g.grads.size(), want.grads.size()) << "rank " << r;
      test::ExpectMatches(want, g.loss_sum, g.grads.data(),
                          "seed " + std::to_string(seed) + " rank " + std::to_string(r) + " of " +
                              std::to_string(sequences.size()) + " sequences, largest ring " +
                              std::to_string(metrics.largest_ring));
      EXPECT_EQ(g.micro_batches, metrics.ranks[static_cast<size_t>(r)].micro_batches);
    }
  }
  // The batches are long-tailed enough that every multi-rank world runs rings: ring attention is
  // part of what this test checks, not an accident of the draw.
  if (k.world_size > 1) {
    EXPECT_GT(rings, 0);
  }
  std::printf("%s world %d %s: %d rings\n", k.preset.c_str(), k.world_size,
              PlannerKindName(k.planner), rings);
}

std::vector<Case> AllCases() {
  std::vector<Case> cases;
  for (const char* preset : {"byted", "github", "chunkflow"}) {
    for (int world : {1, 2, 3, 4, 5, 8}) {
      for (PlannerKind p : {PlannerKind::kHdp, PlannerKind::kNaiveHdp, PlannerKind::kStatic}) {
        cases.push_back({preset, world, p});
      }
    }
  }
  return cases;
}

INSTANTIATE_TEST_SUITE_P(Presets, StepExecutorTest, ::testing::ValuesIn(AllCases()),
                         [](const auto& info) {
                           return info.param.preset + "_world" +
                                  std::to_string(info.param.world_size) + "_" +
                                  PlannerKindName(info.param.planner);
                         });

// Rank 1 joins two rings in one micro-batch and also keeps a document whole: the attention of the
// three parts must not mix, and the rings must meet in one order.
TEST(StepExecutorTest, RankInTwoRingsAndLocalDocumentsInOneMicroBatch) {
  const ModelConfig config = test::PlanTestModel();
  const CostModel cost = CostModel::FromModelConfig(config);
  const std::vector<SequenceSpec> sequences = {{0, 45}, {1, 23}, {2, 9}, {3, 1}, {4, 30}};
  Placement placement;
  placement.local = {{{}}, {{2, 3}}, {{4}}};
  placement.rings = {RingPlacement{{0, 1}, 0, {0}}, RingPlacement{{2, 1}, 0, {1}}};
  const StepPlan plan = BuildStepPlan("hand-made", sequences, placement, cost, 64);
  const PackedBatch batch = test::RandomPackedBatch(sequences, config.vocab_size, 5);
  const test::Reference want = test::SingleRank(config, 5, batch);
  const std::vector<RankResult> got = RunPlan(plan, batch, config, 5);
  ASSERT_EQ(got.size(), 3u);
  for (int r = 0; r < 3; ++r) {
    test::ExpectMatches(want, got[static_cast<size_t>(r)].loss_sum,
                        got[static_cast<size_t>(r)].grads.data(), "rank " + std::to_string(r));
  }
}

// The static mesh splits every sequence over its CP group, so a micro-batch of sequences shorter
// than the group leaves some members with no tokens at all. They still run the micro-batch: their
// layers pass the others' K/V along the ring (before, they had no forward, and their ring
// partners waited for them until the timeout).
TEST(StepExecutorTest, RingMembersWithoutTokensRelayTheRing) {
  const ModelConfig config = test::PlanTestModel();
  const CostModel cost = CostModel::FromModelConfig(config);
  // 160 tokens fill every member (2 pieces of 20 each); the 3-token sequence needs a micro-batch
  // of its own, where member 3 gets nothing.
  const std::vector<SequenceSpec> sequences = {{0, 160}, {1, 3}};
  PlannerOptions options{PlannerKind::kStatic, 4, 40, 4};
  absl::StatusOr<StepPlan> plan = PlanStep(sequences, options, cost);
  ASSERT_TRUE(plan.ok()) << plan.status();
  ASSERT_TRUE(ValidatePlan(*plan, cost).ok()) << ValidatePlan(*plan, cost);
  int empty_forwards = 0;
  for (const RankPlan& r : plan->ranks) {
    for (const Action& a : r.actions) empty_forwards += a.kind == ActionKind::kForward && a.tokens.empty();
  }
  EXPECT_GT(empty_forwards, 0) << "the 3-token sequence leaves a member of the ring of 4 empty";
  const PackedBatch batch = test::RandomPackedBatch(sequences, config.vocab_size, 9);
  const test::Reference want = test::SingleRank(config, 9, batch);
  const std::vector<RankResult> got = RunPlan(*plan, batch, config, 9);
  for (int r = 0; r < 4; ++r) {
    test::ExpectMatches(want, got[static_cast<size_t>(r)].loss_sum,
                        got[static_cast<size_t>(r)].grads.data(), "rank " + std::to_string(r));
  }
}

TEST(StepExecutorTest, RejectsPlansThatDoNotFitTheBatchOrTheWorld) {
  const ModelConfig config = test::PlanTestModel();
  const CostModel cost = CostModel::FromModelConfig(config);
  const std::vector<SequenceSpec> sequences = {{0, 20}, {1, 7}};
  const StepPlan plan = *PlanStep(sequences, {PlannerKind::kHdp, 2, 16, 1}, cost);
  const PackedBatch other = test::RandomPackedBatch({{0, 20}, {1, 8}}, config.vocab_size, 1);
  std::unique_ptr<LocalWorld> world = *LocalWorld::Create(3, absl::Seconds(10));
  const absl::Status wrong_world = world->Run([&](Communicator& comm) -> absl::Status {
    std::unique_ptr<Model> model = *Model::Create(config);
    return ExecuteStep(comm, plan, other, *model).status();
  });
  EXPECT_EQ(wrong_world.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(wrong_world.message().find("the plan is for 2 ranks, the world has 3"),
            std::string::npos)
      << wrong_world;
  std::unique_ptr<LocalWorld> pair = *LocalWorld::Create(2, absl::Seconds(10));
  const absl::Status wrong_batch = pair->Run([&](Communicator& comm) -> absl::Status {
    std::unique_ptr<Model> model = *Model::Create(config);
    return ExecuteStep(comm, plan, other, *model).status();
  });
  EXPECT_NE(wrong_batch.message().find("plan sequence 1 (id 1, 7 tokens) does not match batch "
                                       "sequence 1 (8 tokens)"),
            std::string::npos)
      << wrong_batch;
}

}  // namespace
}  // namespace loom
