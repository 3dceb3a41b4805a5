// Pipeline schedules: golden action lists for small shapes, and a dry run over a grid of shapes
// (the pipeline planner's plans through the validator and the simulator) against the textbook
// bubble formulas.
#include "parallel/pipeline_schedule.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "absl/strings/str_join.h"
#include "parallel/pipeline_planner.h"
#include "parallel/plan_validator.h"
#include "parallel/simulator.h"

namespace loom {
namespace {

using ::testing::HasSubstr;

// Rank k's operations as "F0 F1 B0 ...".
std::vector<std::string> Names(PipelineScheduleKind kind, const PipelineShape& shape) {
  absl::StatusOr<std::vector<std::vector<PipeOp>>> schedule = MakePipelineSchedule(kind, shape);
  EXPECT_TRUE(schedule.ok()) << schedule.status();
  std::vector<std::string> out;
  if (!schedule.ok()) return out;
  for (const std::vector<PipeOp>& rank : *schedule) {
    std::vector<std::string> ops;
    for (const PipeOp& op : rank) ops.push_back(PipeOpName(op));
    out.push_back(absl::StrJoin(ops, " "));
  }
  return out;
}

TEST(PipelineSchedule, GPipe) {
  EXPECT_EQ(Names(PipelineScheduleKind::kGpipe, {2, 1, 3, {}}),
            (std::vector<std::string>{"F0 F1 F2 B0 B1 B2", "F0 F1 F2 B0 B1 B2"}));
}

TEST(PipelineSchedule, OneFOneB) {
  EXPECT_EQ(Names(PipelineScheduleKind::k1f1b, {3, 1, 4, {}}),
            (std::vector<std::string>{"F0 F1 F2 B0 F3 B1 B2 B3", "F0 F1 B0 F2 B1 F3 B2 B3",
                                      "F0 B0 F1 B1 F2 B2 F3 B3"}));
  // Fewer micro-batches than stages: the warm-up is all of them.
  EXPECT_EQ(Names(PipelineScheduleKind::k1f1b, {4, 1, 2, {}}),
            (std::vector<std::string>{"F0 F1 B0 B1", "F0 F1 B0 B1", "F0 F1 B0 B1",
                                      "F0 B0 F1 B1"}));
}

TEST(PipelineSchedule, InterleavedIsMegatronsOrder) {
  // p = 2, v = 2, m = 4: rank 0 warms up with 2 (p - 1) + (v - 1) p = 4 forwards, rank 1 with 2;
  // forwards go by groups of p micro-batches, chunk by chunk; backwards chunks last first.
  EXPECT_EQ(Names(PipelineScheduleKind::kInterleaved, {2, 2, 4, {}}),
            (std::vector<std::string>{
                "F0 F1 F0.1 F1.1 F2 B0.1 F3 B1.1 F2.1 B0 F3.1 B1 B2.1 B3.1 B2 B3",
                "F0 F1 F0.1 B0.1 F1.1 B1.1 F2 B0 F3 B1 F2.1 B2.1 F3.1 B3.1 B2 B3"}));
  // m = 5: the first group takes the remainder (micro-batches 0-2), and the warm-up counts it:
  // 2 (p - 1) + (v - 1) 3 = 5 forwards on rank 0, 3 on rank 1, before they alternate.
  EXPECT_EQ(Names(PipelineScheduleKind::kInterleaved, {2, 2, 5, {}}),
            (std::vector<std::string>{
                "F0 F1 F2 F0.1 F1.1 F2.1 B0.1 F3 B1.1 F4 B2.1 F3.1 B0 F4.1 B1 B2 B3.1 B4.1 B3 B4",
                "F0 F1 F2 F0.1 B0.1 F1.1 B1.1 F2.1 B2.1 F3 B0 F4 B1 F3.1 B2 F4.1 B3.1 B4.1 B3 B4"}));
}

TEST(PipelineSchedule, ZeroBubbleDefersLaterRanksWeightGradients) {
  // Rank k runs a micro-batch's W k backwards after its B.
  EXPECT_EQ(Names(PipelineScheduleKind::kZbh1, {3, 1, 4, {}}),
            (std::vector<std::string>{
                "F0 F1 F2 B0 W0 F3 B1 W1 B2 W2 B3 W3",
                "F0 F1 B0 F2 B1 W0 F3 B2 W1 B3 W2 W3",
                "F0 B0 F1 B1 F2 B2 W0 F3 B3 W1 W2 W3"}));
}

TEST(PipelineSchedule, DependentChunksRunBackwardLastFirst) {
  // Micro-batches 1..3 are chunks of one sequence: their backwards run 3, 2, 1, and a backward
  // whose forward has not run yet on a rank first runs the forwards up to it.
  EXPECT_EQ(Names(PipelineScheduleKind::k1f1b, {2, 1, 5, {{1, 3}}}),
            (std::vector<std::string>{"F0 F1 B0 F2 F3 B3 F4 B2 B1 B4",
                                      "F0 B0 F1 F2 F3 B3 F4 B2 B1 B4"}));
}

TEST(PipelineSchedule, RejectsShapesThatDoNotFit) {
  EXPECT_THAT(MakePipelineSchedule(PipelineScheduleKind::kInterleaved, {4, 1, 8, {}})
                  .status()
                  .message(),
              HasSubstr("at least 2 model chunks"));
  EXPECT_THAT(
      MakePipelineSchedule(PipelineScheduleKind::k1f1b, {4, 2, 8, {}}).status().message(),
      HasSubstr("use interleaved"));
  EXPECT_THAT(
      MakePipelineSchedule(PipelineScheduleKind::k1f1b, {2, 1, 4, {{2, 3}}}).status().message(),
      HasSubstr("[2, 5) must be non-empty, within the 4 micro-batches"));
  EXPECT_FALSE(ParsePipelineScheduleKind("zb").ok());
}

// --- Dry runs ---------------------------------------------------------------------------------

// One layer per stage, 1 s per token and layer forward, 2 s backward (with equal-thirds W), free
// links: every micro-batch of one token costs F = 1, B = 2 (B = 1 + W = 1 with zero bubble).
CostModel UnitCost(int stages) {
  CostModel cost;
  cost.linear_s = 3.0;
  cost.n_layers = stages;
  cost.activation_bytes_per_token = stages;
  cost.ranks_per_node = 1 << 20;
  return cost;
}

// One replica running m one-token micro-batches, as the data-parallel planners hand it over.
StepPlan OneReplica(int m) {
  StepPlan plan;
  plan.planner = "hand";
  plan.capacity_tokens = 1;
  plan.ranks.resize(1);
  for (int i = 0; i < m; ++i) {
    plan.sequences.push_back({i, 1});
    Action f;
    f.kind = ActionKind::kForward;
    f.micro_batch = i;
    f.tokens = {{i, 0, 1}};
    plan.ranks[0].actions.push_back(f);
    f.kind = ActionKind::kBackward;
    plan.ranks[0].actions.push_back(f);
  }
  Action sync;
  sync.kind = ActionKind::kGradSync;
  plan.ranks[0].actions.push_back(sync);
  return plan;
}

double DryRunBubble(PipelineScheduleKind kind, int p, int v, int m) {
  const CostModel cost = UnitCost(p * v);
  absl::StatusOr<StepPlan> plan = PlanPipeline(OneReplica(m), {p, v, kind}, cost);
  EXPECT_TRUE(plan.ok()) << plan.status();
  if (!plan.ok()) return -1.0;
  const absl::Status valid = ValidatePlan(*plan, cost);
  EXPECT_TRUE(valid.ok()) << PipelineScheduleName(kind) << " p " << p << " v " << v << " m " << m
                          << ": " << valid;
  absl::StatusOr<SimResult> sim = SimulateStep(*plan, cost);
  EXPECT_TRUE(sim.ok()) << sim.status();
  return sim.ok() ? sim->bubble_fraction() : -1.0;
}

TEST(PipelineDryRun, OneFOneBAndGPipeBubbleIsPMinusOneOverM) {
  for (int p : {1, 2, 3, 4, 6, 8}) {
    for (int m : {1, 2, 3, 4, 8, 16, 32}) {
      const double want = static_cast<double>(p - 1) / m;
      EXPECT_NEAR(DryRunBubble(PipelineScheduleKind::k1f1b, p, 1, m), want, 1e-9)
          << "p " << p << " m " << m;
      EXPECT_NEAR(DryRunBubble(PipelineScheduleKind::kGpipe, p, 1, m), want, 1e-9)
          << "p " << p << " m " << m;
    }
  }
}

TEST(PipelineDryRun, InterleavedBubbleIsPMinusOneOverVM) {
  for (int p : {2, 3, 4, 8}) {
    for (int v : {2, 3, 4}) {
      for (int m : {1, 2, 3, 4, 5, 6, 8, 12, 16, 24, 32}) {
        const double bubble = DryRunBubble(PipelineScheduleKind::kInterleaved, p, v, m);
        // The formula holds whenever there are p micro-batches or more (Megatron-LM requires a
        // multiple of p; here the first group takes the remainder). Fewer are padded to p, whose
        // placeholders' time stays idle, but never more bubble than 1F1B's.
        if (m >= p) {
          EXPECT_NEAR(bubble, static_cast<double>(p - 1) / (v * m), 1e-9)
              << "p " << p << " v " << v << " m " << m;
        }
        EXPECT_LE(bubble, static_cast<double>(p - 1) / m + 1e-9)
            << "p " << p << " v " << v << " m " << m;
      }
    }
  }
}

TEST(PipelineDryRun, ZeroBubbleBeatsOneFOneBWithEqualFBW) {
  for (int p : {2, 3, 4, 8}) {
    for (int m : {1, 2, 4, 8, 16, 32}) {
      const double zb = DryRunBubble(PipelineScheduleKind::kZbh1, p, 1, m);
      const double one_f_one_b = static_cast<double>(p - 1) / m;
      EXPECT_LE(zb, one_f_one_b + 1e-9) << "p " << p << " m " << m;
      if (p > 1 && m >= p) {
        // ZB-H1's bubble (p - 1)(F + B - W) over m (F + B + W): a third of 1F1B's.
        EXPECT_NEAR(zb, one_f_one_b / 3.0, 1e-9) << "p " << p << " m " << m;
      }
    }
  }
}

}  // namespace
}  // namespace loom
