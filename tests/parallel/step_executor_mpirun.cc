// The executor on the mpi backend, under `mpirun -np N` (N = 2, 3, 4, see tests.cmake): a subset
// of step_executor_test.cc and chunk_executor_test.cc with one process per rank. For batches drawn
// from the Byted and ChunkFlow presets, plans of every planner (hdp, naive_hdp, static, chunkflow
// with K = 1, and hdp with rings and chunks) give every rank the loss (relative <= 1e-6) and every
// gradient (relative <= 1e-5) of one rank training on the whole batch. Every rank computes the
// single-rank reference itself from the same seeds. Pipelines too: every rank a stage, and with
// 4 processes 2 stages x 2 replicas.
#include <gtest/gtest.h>
#include <omp.h>

#include <algorithm>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/strings/str_format.h"
#include "parallel/hybrid_planner.h"
#include "parallel/plan_metrics.h"
#include "parallel/plan_validator.h"
#include "parallel/planner.h"
#include "parallel/step_executor.h"
#include "runtime/mpi_communicator.h"
#include "tests/parallel/plan_equivalence.h"

namespace loom {
namespace {

// Generous: 4 processes share 2 cores in CI. A failing rank ends its test without waiting.
constexpr absl::Duration kTimeout = absl::Seconds(30);
constexpr int64_t kCapacity = 40;

class MpiEnvironment : public ::testing::Environment {
 public:
  void SetUp() override {
    omp_set_num_threads(1);
    absl::StatusOr<std::unique_ptr<Communicator>> comm = MakeMpiCommunicator(kTimeout);
    ASSERT_TRUE(comm.ok()) << comm.status();
    communicator = *std::move(comm);
  }
  // Before MPI_Finalize in main().
  void TearDown() override { communicator.reset(); }

  static inline std::unique_ptr<Communicator> communicator;
};

[[maybe_unused]] ::testing::Environment* const kEnvironment =
    ::testing::AddGlobalTestEnvironment(new MpiEnvironment);

Communicator& Comm() { return *MpiEnvironment::communicator; }

void ExpectPlanMatchesSingleRank(const StepPlan& plan, const std::vector<SequenceSpec>& sequences,
                                 uint64_t seed, const std::string& what,
                                 const ModelConfig& config = test::PlanTestModel()) {
  const CostModel cost = CostModel::FromModelConfig(config);
  const absl::Status valid = ValidatePlan(plan, cost);
  ASSERT_TRUE(valid.ok()) << what << ": " << valid;
  const PackedBatch batch = test::RandomPackedBatch(sequences, config.vocab_size, seed);
  const test::Reference want = test::SingleRank(config, seed, batch);
  std::unique_ptr<Model> model = *Model::Create(config);
  model->InitWeights(seed);
  absl::StatusOr<StepOutcome> outcome = ExecuteStep(Comm(), plan, batch, *model);
  ASSERT_TRUE(outcome.ok()) << what << ": " << outcome.status();
  test::ExpectMatches(want, outcome->loss_sum, model->grads(),
                      what + " on rank " + std::to_string(Comm().rank()));
}

TEST(StepExecutorMpirun, EveryPlannerMatchesSingleRankTraining) {
  const int world = Comm().size();
  const CostModel cost = CostModel::FromModelConfig(test::PlanTestModel());
  int rings = 0, chunks = 0;
  for (const char* preset : {"byted", "chunkflow"}) {
    const uint64_t seed = 100 + static_cast<uint64_t>(world);
    const std::vector<SequenceSpec> sequences =
        test::PresetBatch(preset, 64, world * kCapacity, 2 * world * kCapacity, seed);
    int64_t longest = 0;
    for (const SequenceSpec& s : sequences) longest = std::max(longest, s.length);
    std::vector<std::pair<std::string, StepPlan>> plans;
    for (PlannerKind kind : {PlannerKind::kHdp, PlannerKind::kNaiveHdp, PlannerKind::kStatic}) {
      PlannerOptions options{kind, world, kCapacity, 1};
      if (kind == PlannerKind::kStatic) options.cp_size = *StaticCpSize(world, kCapacity, longest);
      plans.emplace_back(PlannerKindName(kind), *PlanStep(sequences, options, cost));
    }
    plans.emplace_back("chunkflow",
                       *PlanStep(sequences, {PlannerKind::kChunkFlow, world, 16, 1, 1}, cost));
    plans.emplace_back("hdp+chunks",
                       *PlanHdpWithChunks(sequences, {{world, kCapacity}, kCapacity, 1}, cost));
    for (const auto& [name, plan] : plans) {
      const PlanMetrics m = MeasurePlan(plan, cost);
      rings += m.rings;
      chunks += m.chunks;
      ExpectPlanMatchesSingleRank(plan, sequences, seed, std::string(preset) + " " + name);
    }
  }
  EXPECT_GT(rings, 0);
  EXPECT_GT(chunks, 0);
}

// Pipelines across processes: every rank a stage of ChunkFlow's one replica (1F1B and ZB-H1,
// dependent chunks with K = 1), and with 4 processes 2 stages x 2 HDP replicas with rings at both
// stages (GPipe, interleaved with 2 chunks per rank, auto).
TEST(StepExecutorMpirun, PipelinesMatchSingleRankTraining) {
  const int world = Comm().size();
  const ModelConfig config = test::PipelineTestModel();
  const CostModel cost = CostModel::FromModelConfig(config);
  const uint64_t seed = 300 + static_cast<uint64_t>(world);
  struct Case {
    PlannerKind kind;
    int pp, vpp;
    std::optional<PipelineScheduleKind> schedule;
  };
  std::vector<Case> cases = {{PlannerKind::kChunkFlow, world, 1, PipelineScheduleKind::k1f1b},
                             {PlannerKind::kChunkFlow, world, 1, PipelineScheduleKind::kZbh1}};
  if (world == 4) {
    cases.push_back({PlannerKind::kHdp, 2, 1, PipelineScheduleKind::kGpipe});
    cases.push_back({PlannerKind::kHdp, 2, 2, PipelineScheduleKind::kInterleaved});
    cases.push_back({PlannerKind::kHdp, 2, 1, std::nullopt});
  }
  int rings = 0, chunks = 0;
  for (const Case& k : cases) {
    const int replicas = world / k.pp;
    const std::vector<SequenceSpec> sequences = test::PresetBatch(
        "byted", 64, std::max(replicas, 2) * kCapacity, 3 * std::max(replicas, 2) * kCapacity,
        seed);
    PlannerOptions options;
    options.kind = k.kind;
    options.world_size = world;
    options.capacity_tokens = k.kind == PlannerKind::kChunkFlow ? 16 : kCapacity;
    options.chunk_keep = 1;
    options.pipeline = {k.pp, k.vpp, k.schedule};
    absl::StatusOr<StepPlan> plan = PlanStep(sequences, options, cost);
    ASSERT_TRUE(plan.ok()) << plan.status();
    const PlanMetrics m = MeasurePlan(*plan, cost);
    rings += m.rings;
    chunks += m.chunks;
    ExpectPlanMatchesSingleRank(*plan, sequences, seed,
                                absl::StrFormat("pp %d vpp %d %s over %s", k.pp, k.vpp,
                                                plan->schedule, PlannerKindName(k.kind)),
                                config);
  }
  EXPECT_GT(chunks, 0);
  if (world == 4) {
    EXPECT_GT(rings, 0);
  }
}

}  // namespace
}  // namespace loom
