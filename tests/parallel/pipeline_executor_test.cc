// Pipelines against single-rank training (DESIGN.md section 4): for randomized global batches from
// the Byted and ChunkFlow length presets, pipelines of 2, 3 and 4 stages under every schedule
// (gpipe, 1f1b, zb-h1, interleaved with 2 chunks per rank, auto), combined with balanced HDP over
// 2 replicas (rings at every stage), HDP with rings and chunks in one plan, and ChunkFlow
// (dependent chunks with K = 1, so most are recomputed), give every rank the loss (relative <= 1e-6) and every parameter's
// gradient (relative <= 1e-5) of one rank computing the whole batch. Runs on the local backend.
#include <gtest/gtest.h>
#include <omp.h>

#include <cstdio>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "parallel/plan_metrics.h"
#include "parallel/plan_validator.h"
#include "parallel/planner.h"
#include "parallel/simulator.h"
#include "parallel/step_executor.h"
#include "runtime/local_world.h"
#include "tests/parallel/plan_equivalence.h"

namespace loom {
namespace {

constexpr int64_t kCapacity = 40;

struct Case {
  std::string preset;
  int pp = 2;
  int vpp = 1;
  std::string schedule;  // "auto" or a schedule's name
  std::string base;      // "hdp", "hdp+chunks", "chunkflow"
};

std::string Name(const Case& k) {
  std::string name = k.preset + "_pp" + std::to_string(k.pp) + "_vpp" + std::to_string(k.vpp) +
                     "_" + k.schedule + "_" + k.base;
  for (char& c : name) {
    if (c == '-' || c == '+') c = '_';
  }
  return name;
}

class PipelineExecutorTest : public ::testing::TestWithParam<Case> {};

TEST_P(PipelineExecutorTest, MatchesSingleRankTraining) {
  const Case& k = GetParam();
  const ModelConfig config = test::PipelineTestModel();
  const CostModel cost = CostModel::FromModelConfig(config);
  const int replicas = k.base == "chunkflow" ? 1 : 2;
  const int world = k.pp * replicas;
  PlannerOptions options;
  options.world_size = world;
  options.capacity_tokens = kCapacity;
  options.pipeline.pp = k.pp;
  options.pipeline.vpp = k.vpp;
  if (k.schedule != "auto") options.pipeline.schedule = *ParsePipelineScheduleKind(k.schedule);
  if (k.base == "chunkflow") {
    options.kind = PlannerKind::kChunkFlow;
    options.capacity_tokens = 16;
    options.chunk_keep = 1;
  } else {
    options.kind = PlannerKind::kHdp;
    if (k.base == "hdp+chunks") options.chunk_size = 20;  // K = 0: every chunk keeps activations
  }
  const uint64_t seed = 7 + static_cast<uint64_t>(k.pp * 10 + k.vpp);
  // HDP with chunks chunks a long sequence only where that costs less than the step's mean load
  // (here the per-micro-batch overhead decides): this batch of 270 tokens is made so that the
  // 80-token sequence (4 chunks) rings and the 41-token one (3 chunks) is chunked. The other
  // cases draw from the preset.
  const std::vector<SequenceSpec> sequences =
      k.base == "hdp+chunks"
          ? std::vector<SequenceSpec>{{0, 80}, {1, 41}, {2, 30}, {3, 30}, {4, 25}, {5, 20},
                                      {6, 20}, {7, 10}, {8, 8}, {9, 3}, {10, 2}, {11, 1}}
          : test::PresetBatch(k.preset, 64, replicas * kCapacity, 4 * replicas * kCapacity, seed);
  absl::StatusOr<StepPlan> plan = PlanStep(sequences, options, cost);
  ASSERT_TRUE(plan.ok()) << plan.status();
  ASSERT_TRUE(ValidatePlan(*plan, cost).ok()) << ValidatePlan(*plan, cost);
  ASSERT_EQ(plan->num_stages(), k.pp * k.vpp);
  const PlanMetrics metrics = MeasurePlan(*plan, cost);
  // Rings (HDP over two replicas) and chunks are part of what is checked.
  if (k.base != "chunkflow") {
    EXPECT_GT(metrics.rings, 0);
  }
  if (k.base != "hdp") {
    EXPECT_GT(metrics.chunks, 0);
  }

  const PackedBatch batch = test::RandomPackedBatch(sequences, config.vocab_size, seed);
  const test::Reference want = test::SingleRank(config, seed, batch);
  std::unique_ptr<LocalWorld> local = *LocalWorld::Create(world, absl::Seconds(60));
  const absl::Status status = local->Run([&](Communicator& comm) -> absl::Status {
    omp_set_num_threads(1);
    absl::StatusOr<std::unique_ptr<Model>> model = Model::Create(config);
    if (!model.ok()) return model.status();
    (*model)->InitWeights(seed);
    absl::StatusOr<StepOutcome> outcome = ExecuteStep(comm, *plan, batch, **model);
    if (!outcome.ok()) return outcome.status();
    test::ExpectMatches(want, outcome->loss_sum, (*model)->grads(),
                        Name(k) + " rank " + std::to_string(comm.rank()));
    return absl::OkStatus();
  });
  EXPECT_TRUE(status.ok()) << status;
  std::printf("%s: schedule %s, %zu sequences, %d rings, %d chunks\n", Name(k).c_str(),
              plan->schedule.c_str(), sequences.size(), metrics.rings, metrics.chunks);
}

std::vector<Case> AllCases() {
  std::vector<Case> cases;
  for (const char* preset : {"byted", "chunkflow", "handmade"}) {
    // The hand-made batch is for HDP with rings and chunks, which the presets are for the others.
    for (const char* base : {"hdp", "hdp+chunks", "chunkflow"}) {
      if ((std::string(preset) == "handmade") != (std::string(base) == "hdp+chunks")) continue;
      for (int pp : {2, 3, 4}) {
        for (const char* schedule : {"gpipe", "1f1b", "zb-h1", "auto"}) {
          cases.push_back({preset, pp, 1, schedule, base});
        }
      }
      cases.push_back({preset, 2, 2, "interleaved", base});
      cases.push_back({preset, 2, 2, "auto", base});
    }
  }
  return cases;
}

INSTANTIATE_TEST_SUITE_P(Schedules, PipelineExecutorTest, ::testing::ValuesIn(AllCases()),
                         [](const auto& info) { return Name(info.param); });

// auto may cut a long sequence's dependent chunks anew by cost (token_slicing.h). With a cost
// model of a CPU rank (slow arithmetic, small fixed cost per micro-batch), a batch that one long
// sequence dominates is sliced: more micro-batches than the planned chunks, the last slice
// shorter than the first, the step shorter than the chunks as planned under the schedule auto
// chose. The sliced plan then runs with loss and every gradient equal to one rank's, for ChunkFlow
// (K = 1: slices over dropped chunks are recomputed) and for HDP with chunks over 2 replicas,
// where the other replica's ring slots must keep their places.
TEST(PipelineExecutorTest, AutoSlicesLongSequencesByCostAndMatchesSingleRank) {
  const ModelConfig config = test::PipelineTestModel();
  HardwareSpec cpu;
  cpu.peak_flops = 2e9;
  cpu.efficiency = 1.0;
  cpu.layer_overhead_s = 2e-6;
  const CostModel cost = CostModel::FromModelConfig(config, cpu);
  struct Sliced {
    const char* base;
    int pp;
    int replicas;
    int64_t chunk_size;
  };
  int sliced_plans = 0;
  for (const Sliced k : {Sliced{"chunkflow", 2, 1, 40}, Sliced{"chunkflow", 4, 1, 40},
                         Sliced{"hdp+chunks", 2, 2, 20}, Sliced{"hdp+chunks", 2, 2, 40}}) {
    const bool chunkflow = std::string(k.base) == "chunkflow";
    // HDP with chunks: the 80-token sequence is the costlier half of the batch and rings over the
    // two replicas; the 64-token one runs as chunks on one of them after its ring slots.
    const std::vector<SequenceSpec> sequences =
        chunkflow ? std::vector<SequenceSpec>{{0, 240}, {1, 12}, {2, 7}, {3, 30}}
                  : std::vector<SequenceSpec>{{0, 80}, {1, 64}, {2, 10}, {3, 5}, {4, 1}};
    PlannerOptions options;
    options.world_size = k.pp * k.replicas;
    options.capacity_tokens = 40;
    if (chunkflow) {
      options.kind = PlannerKind::kChunkFlow;
      options.chunk_keep = 1;
    } else {
      options.kind = PlannerKind::kHdp;
      options.chunk_size = k.chunk_size;
    }
    options.pipeline = {k.pp, 1, std::nullopt};
    const StepPlan plan = *PlanStep(sequences, options, cost);
    ASSERT_TRUE(ValidatePlan(plan, cost).ok()) << ValidatePlan(plan, cost);
    // The same schedule over the chunks as planned.
    options.pipeline.schedule = *ParsePipelineScheduleKind(plan.schedule);
    const StepPlan planned = *PlanStep(sequences, options, cost);
    auto forwards = [](const StepPlan& p) {
      int n = 0;
      for (const RankPlan& r : p.ranks) {
        for (const Action& a : r.actions) n += a.kind == ActionKind::kForward && a.stage == 0;
      }
      return n;
    };
    const std::string what = std::string(k.base) + " pp " + std::to_string(k.pp) + " chunk size " +
                             std::to_string(k.chunk_size);
    const double step_s = SimulateStep(plan, cost)->step_s;
    const double planned_s = SimulateStep(planned, cost)->step_s;
    std::printf("%s: %s, %d micro-batches (planned %d), step %.4f s (planned %.4f s), %d rings\n",
                what.c_str(), plan.schedule.c_str(), forwards(plan), forwards(planned), step_s,
                planned_s, MeasurePlan(plan, cost).rings);
    EXPECT_GT(forwards(plan), forwards(planned)) << what << ": the long sequence was not sliced";
    EXPECT_LT(step_s, planned_s) << what;
    if (!chunkflow) {
      EXPECT_GT(MeasurePlan(plan, cost).rings, 0) << what;
    }
    // Each chunked sequence's slices after its first, at stage 0 in forward order (those with a
    // context; the first slice ends where the second's context does): toward the end of the
    // sequence they are shorter, and none is longer than a planned chunk.
    std::map<int64_t, std::vector<TokenRange>> slices;
    for (const RankPlan& r : plan.ranks) {
      for (const Action& a : r.actions) {
        if (a.kind != ActionKind::kForward || a.stage != 0 || a.context.empty()) continue;
        slices[a.context.front().sequence_id].push_back(a.tokens.front());
      }
    }
    ASSERT_FALSE(slices.empty()) << what;
    for (const auto& [sequence, ranges] : slices) {
      const int64_t first_size = ranges.front().begin;
      EXPECT_GT(first_size, ranges.back().size()) << what << " sequence " << sequence;
      EXPECT_LE(first_size, k.chunk_size) << what;
      for (const TokenRange& t : ranges) {
        EXPECT_EQ(t.sequence_id, sequence) << what;
        EXPECT_LE(t.size(), k.chunk_size) << what;
      }
    }
    ++sliced_plans;

    const PackedBatch batch = test::RandomPackedBatch(sequences, config.vocab_size, 5);
    const test::Reference want = test::SingleRank(config, 5, batch);
    std::unique_ptr<LocalWorld> local = *LocalWorld::Create(plan.world_size(), absl::Seconds(60));
    const absl::Status status = local->Run([&](Communicator& comm) -> absl::Status {
      omp_set_num_threads(1);
      absl::StatusOr<std::unique_ptr<Model>> model = Model::Create(config);
      if (!model.ok()) return model.status();
      (*model)->InitWeights(5);
      absl::StatusOr<StepOutcome> outcome = ExecuteStep(comm, plan, batch, **model);
      if (!outcome.ok()) return outcome.status();
      test::ExpectMatches(want, outcome->loss_sum, (*model)->grads(),
                          what + " rank " + std::to_string(comm.rank()));
      return absl::OkStatus();
    });
    EXPECT_TRUE(status.ok()) << what << ": " << status;
  }
  EXPECT_EQ(sliced_plans, 4);
}

// Memory on every pipeline rank: the allocator's peak during the step (above the weights and
// gradients held before) against the plan's prediction (MeasurePlan, what the validator checks
// against the budget), for ChunkFlow chunks (K = 1) through 2 and 4 stages under GPipe, 1F1B and
// ZB-H1. The prediction counts the message an action sends until that action ends; messages still
// waiting for their receiver after that depend on timing and are not counted: up to 11% more was
// measured (GPipe over 4 stages, whose ranks send their forwards back to back; with d_model 32 a
// message is large next to a stage's activations). Seen: 0.97-1.11.
TEST(PipelineExecutorTest, MeasuredMemoryStaysWithinThePrediction) {
  const ModelConfig config = test::PipelineTestModel();
  HardwareSpec fp32;
  fp32.bytes_per_element = 4;
  const CostModel cost = CostModel::FromModelConfig(config, fp32);
  const std::vector<SequenceSpec> sequences = {{0, 200}, {1, 30}, {2, 45}, {3, 12}, {4, 60}};
  for (const int pp : {2, 4}) {
    for (const auto kind : {PipelineScheduleKind::kGpipe, PipelineScheduleKind::k1f1b,
                            PipelineScheduleKind::kZbh1}) {
      PlannerOptions options;
      options.kind = PlannerKind::kChunkFlow;
      options.world_size = pp;
      options.capacity_tokens = 40;
      options.chunk_keep = 1;
      options.pipeline = {pp, 1, kind};
      const StepPlan plan = *PlanStep(sequences, options, cost);
      ASSERT_TRUE(ValidatePlan(plan, cost).ok()) << ValidatePlan(plan, cost);
      const PlanMetrics metrics = MeasurePlan(plan, cost);
      const PackedBatch batch = test::RandomPackedBatch(sequences, config.vocab_size, 4);
      std::vector<int64_t> measured(static_cast<size_t>(pp));
      std::unique_ptr<LocalWorld> local = *LocalWorld::Create(pp, absl::Seconds(60));
      const absl::Status status = local->Run([&](Communicator& comm) -> absl::Status {
        omp_set_num_threads(1);
        Allocator allocator;
        absl::StatusOr<std::unique_ptr<Model>> model = Model::Create(config, &allocator);
        if (!model.ok()) return model.status();
        (*model)->InitWeights(4);
        const size_t before = allocator.current_bytes();
        allocator.ResetPeak();
        absl::StatusOr<StepOutcome> outcome = ExecuteStep(comm, plan, batch, **model);
        measured[static_cast<size_t>(comm.rank())] =
            static_cast<int64_t>(allocator.peak_bytes() - before);
        return outcome.status();
      });
      ASSERT_TRUE(status.ok()) << status;
      for (int r = 0; r < pp; ++r) {
        const int64_t predicted = metrics.ranks[static_cast<size_t>(r)].peak_activation_bytes;
        const int64_t got = measured[static_cast<size_t>(r)];
        std::printf("pp %d %s rank %d: measured %lld bytes, predicted %lld (%.2f)\n", pp,
                    PipelineScheduleName(kind), r, static_cast<long long>(got),
                    static_cast<long long>(predicted), static_cast<double>(got) / predicted);
        EXPECT_LE(got, predicted * 115 / 100) << "pp " << pp << " rank " << r;
        EXPECT_GE(got, predicted * 9 / 10) << "pp " << pp << " rank " << r;
      }
    }
  }
}

}  // namespace
}  // namespace loom
