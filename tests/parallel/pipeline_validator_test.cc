// The validator on pipeline plans: a good plan from the pipeline planner passes, and plans broken
// in the ways a pipeline can break are rejected with messages that name the culprit: an
// activation sent to the wrong rank, a stage out of range, stages that do not cover the model, a
// weight gradient without its deferring backward (and the reverse), a token missing on one stage,
// and schedules whose orders wait on each other in a cycle.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <string>
#include <utility>

#include "parallel/pipeline_planner.h"
#include "parallel/plan_validator.h"
#include "parallel/planner.h"

namespace loom {
namespace {

using ::testing::HasSubstr;

CostModel Cost() {
  CostModel cost;
  cost.attention_s = 1e-9;
  cost.linear_s = 1e-6;
  cost.overhead_s = 1e-5;
  cost.n_layers = 4;
  cost.activation_bytes_per_token = 400;
  cost.kv_bytes_per_token = 16;
  cost.gradient_bytes = 4000;
  return cost;
}

// Two replicas x 2 stages, balanced HDP with a ring over both replicas at each stage.
StepPlan GoodPlan(std::optional<PipelineScheduleKind> schedule) {
  PlannerOptions options;
  options.world_size = 4;
  options.capacity_tokens = 12;
  options.pipeline = {2, 1, schedule};
  const std::vector<SequenceSpec> batch = {{0, 20}, {1, 4}, {2, 6}, {3, 10}, {4, 3}, {5, 9}};
  absl::StatusOr<StepPlan> plan = PlanStep(batch, options, Cost());
  EXPECT_TRUE(plan.ok()) << plan.status();
  return *plan;
}

size_t Find(const StepPlan& plan, int rank, ActionKind kind) {
  const std::vector<Action>& actions = plan.ranks[static_cast<size_t>(rank)].actions;
  for (size_t i = 0; i < actions.size(); ++i) {
    if (actions[i].kind == kind) return i;
  }
  ADD_FAILURE() << "no such action";
  return 0;
}

std::string Message(const absl::Status& status) {
  EXPECT_FALSE(status.ok());
  return std::string(status.message());
}

TEST(PipelineValidator, AcceptsPlannedPipelines) {
  for (const auto kind : {PipelineScheduleKind::kGpipe, PipelineScheduleKind::k1f1b,
                          PipelineScheduleKind::kZbh1}) {
    const StepPlan plan = GoodPlan(kind);
    EXPECT_TRUE(ValidatePlan(plan, Cost()).ok()) << ValidatePlan(plan, Cost());
    int rings = 0;
    for (const RankPlan& r : plan.ranks) {
      for (const Action& a : r.actions) rings += a.kind == ActionKind::kRingExchange;
    }
    EXPECT_GT(rings, 0) << "the plan should hold rings at every stage";
  }
}

TEST(PipelineValidator, RejectsActivationsSentToTheWrongRank) {
  StepPlan plan = GoodPlan(PipelineScheduleKind::k1f1b);
  // Rank 0 (replica 0, stage 0) sends to rank 2 (replica 0, stage 1); point it at rank 3.
  Action& f = plan.ranks[0].actions[Find(plan, 0, ActionKind::kForward)];
  ASSERT_EQ(f.next_rank, 2);
  f.next_rank = 3;
  const std::string message = Message(ValidatePlan(plan, Cost()));
  EXPECT_THAT(message, HasSubstr("rank 0 action"));
  EXPECT_THAT(message, HasSubstr("neighbouring ranks differ from those of its forward"));
  // Its backward too: now the forward's message has no receiver.
  for (Action& a : plan.ranks[0].actions) {
    if (a.micro_batch == f.micro_batch && a.next_rank == 2) a.next_rank = 3;
  }
  EXPECT_THAT(Message(ValidatePlan(plan, Cost())),
              HasSubstr("sends its activations to stage 1 on rank 3, but rank 3 has no forward of "
                        "micro-batch"));
}

TEST(PipelineValidator, RejectsAStageOutOfRangeAndStagesThatMissLayers) {
  StepPlan plan = GoodPlan(PipelineScheduleKind::k1f1b);
  StepPlan stage = plan;
  std::vector<Action>& r2 = stage.ranks[2].actions;
  for (size_t i = 0; i < r2.size(); ++i) {
    // A forward without rings (with rings, its exchanges would no longer match it first).
    if (r2[i].kind == ActionKind::kForward && (i == 0 || r2[i - 1].kind != ActionKind::kRingExchange)) {
      r2[i].stage = 2;
      break;
    }
  }
  EXPECT_THAT(Message(ValidatePlan(stage, Cost())),
              HasSubstr("stage 2 is not one of the plan's 2 stages"));
  StepPlan layers = plan;
  layers.stages.back().last_layer = 3;
  EXPECT_THAT(Message(ValidatePlan(layers, Cost())),
              HasSubstr("the stages end at layer 3 but the model has 4 layers"));
}

TEST(PipelineValidator, RejectsWeightGradientsThatDoNotPairUp) {
  StepPlan plan = GoodPlan(PipelineScheduleKind::kZbh1);
  ASSERT_TRUE(ValidatePlan(plan, Cost()).ok());
  StepPlan orphan = plan;
  std::vector<Action>& actions = orphan.ranks[1].actions;
  actions.erase(actions.begin() + static_cast<ptrdiff_t>(Find(orphan, 1, ActionKind::kWeightGrad)));
  EXPECT_THAT(Message(ValidatePlan(orphan, Cost())),
              HasSubstr("defers its weight gradients but no weight_grad action follows"));
  StepPlan early = plan;
  std::vector<Action>& r1 = early.ranks[1].actions;
  const size_t w = Find(early, 1, ActionKind::kWeightGrad);
  const Action moved = r1[w];
  r1.erase(r1.begin() + static_cast<ptrdiff_t>(w));
  r1.insert(r1.begin(), moved);
  EXPECT_THAT(Message(ValidatePlan(early, Cost())),
              HasSubstr("a weight gradient needs an earlier backward of the same micro-batch"));
}

TEST(PipelineValidator, RejectsATokenMissingOnOneStage) {
  StepPlan plan = GoodPlan(PipelineScheduleKind::k1f1b);
  // Drop one of rank 3's (replica 1, stage 1) micro-batches without rings entirely: stage 1
  // never computes it, and replica 1's stage 0 (rank 1) sends to a forward that is not there.
  std::vector<Action>& actions = plan.ranks[3].actions;
  int slot = -1;
  for (const Action& a : actions) {
    const bool ringed = std::any_of(actions.begin(), actions.end(), [&](const Action& r) {
      return r.kind == ActionKind::kRingExchange && r.micro_batch == a.micro_batch;
    });
    if (a.kind == ActionKind::kForward && !ringed) slot = a.micro_batch;
  }
  ASSERT_GE(slot, 0);
  std::erase_if(actions, [&](const Action& a) {
    return a.kind != ActionKind::kGradSync && a.micro_batch == slot;
  });
  const std::string message = Message(ValidatePlan(plan, Cost()));
  EXPECT_THAT(message, HasSubstr("rank 1"));
  EXPECT_THAT(message, HasSubstr("has no forward of micro-batch"));
}

TEST(PipelineValidator, FindsACycleOfStageWaits) {
  StepPlan plan = GoodPlan(PipelineScheduleKind::k1f1b);
  // Replica 0's two stages: rank 0 (stage 0) and rank 2 (stage 1). Take their first two
  // micro-batches, `first` and `second`.
  std::vector<Action>& r2 = plan.ranks[2].actions;
  std::vector<Action>& r0 = plan.ranks[0].actions;
  const int first = r2[Find(plan, 2, ActionKind::kForward)].micro_batch;
  int second = -1;
  for (const Action& a : r2) {
    if (a.kind == ActionKind::kForward && a.micro_batch != first) {
      second = a.micro_batch;
      break;
    }
  }
  ASSERT_GE(second, 0);
  // Make rank 0 forward `second` only after the backward of `first`, and rank 2 forward `second`
  // before `first`'s backward: rank 0 waits at B(first) for rank 2, rank 2 at F(second) for 0.
  auto take = [](std::vector<Action>& v, ActionKind kind, int slot) {
    auto it = std::find_if(v.begin(), v.end(), [&](const Action& a) {
      return a.kind == kind && a.micro_batch == slot;
    });
    Action out = *it;
    v.erase(it);
    return out;
  };
  std::vector<Action> r0_rings;
  Action f_second = take(r0, ActionKind::kForward, second);
  while (std::any_of(r0.begin(), r0.end(), [&](const Action& a) {
    return a.kind == ActionKind::kRingExchange && a.micro_batch == second;
  })) {
    r0_rings.push_back(take(r0, ActionKind::kRingExchange, second));
  }
  const size_t b0 = static_cast<size_t>(std::find_if(r0.begin(), r0.end(), [&](const Action& a) {
                                           return a.kind == ActionKind::kBackward &&
                                                  a.micro_batch == first;
                                         }) - r0.begin());
  r0.insert(r0.begin() + static_cast<ptrdiff_t>(b0) + 1, f_second);
  r0.insert(r0.begin() + static_cast<ptrdiff_t>(b0) + 1, r0_rings.begin(), r0_rings.end());
  std::vector<Action> r2_rings;
  Action f2_second = take(r2, ActionKind::kForward, second);
  while (std::any_of(r2.begin(), r2.end(), [&](const Action& a) {
    return a.kind == ActionKind::kRingExchange && a.micro_batch == second;
  })) {
    r2_rings.push_back(take(r2, ActionKind::kRingExchange, second));
  }
  const size_t b2 = static_cast<size_t>(std::find_if(r2.begin(), r2.end(), [&](const Action& a) {
                                           return a.kind == ActionKind::kBackward &&
                                                  a.micro_batch == first;
                                         }) - r2.begin());
  r2.insert(r2.begin() + static_cast<ptrdiff_t>(b2), f2_second);
  r2.insert(r2.begin() + static_cast<ptrdiff_t>(b2), r2_rings.begin(), r2_rings.end());
  const absl::Status status = ValidatePlan(plan, Cost());
  EXPECT_EQ(status.code(), absl::StatusCode::kFailedPrecondition) << status;
  const std::string message = Message(status);
  EXPECT_THAT(message, HasSubstr("deadlock"));
  EXPECT_THAT(message, HasSubstr("waits for rank 2"));
  EXPECT_THAT(message, HasSubstr("waits for rank 0"));
}

}  // namespace
}  // namespace loom
