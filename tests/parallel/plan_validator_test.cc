// The validator accepts a good plan and rejects broken ones with messages that say what is wrong.
#include "parallel/plan_validator.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <string>
#include <utility>

#include "parallel/chunk_planner.h"
#include "parallel/plan_builder.h"

namespace loom {
namespace {

using ::testing::HasSubstr;

CostModel SmallCost() {
  CostModel cost;
  cost.attention_s = 1e-9;
  cost.linear_s = 1e-6;
  cost.overhead_s = 1e-5;
  cost.activation_bytes_per_token = 100;
  cost.kv_bytes_per_token = 16;
  cost.gradient_bytes = 4000;
  return cost;
}

const std::vector<SequenceSpec> kBatch = {{0, 12}, {1, 4}, {2, 6}, {3, 10}};

// Two ranks, C = 12: sequence 0 over ring [0 1] in micro-batch 0, sequences 1 and 2 whole beside it,
// sequence 3 over ring [0 1] in micro-batch 1.
StepPlan GoodPlan() {
  Placement placement;
  placement.local = {{{1}}, {{2}}};
  RingPlacement first;
  first.members = {0, 1};
  first.micro_batch = 0;
  first.sequences = {0};
  RingPlacement second = first;
  second.micro_batch = 1;
  second.sequences = {3};
  placement.rings = {first, second};
  return BuildStepPlan("hand", kBatch, placement, SmallCost(), 12);
}

// Index of rank `rank`'s first action of `kind` in `micro_batch`.
size_t Find(const StepPlan& plan, int rank, ActionKind kind, int micro_batch) {
  const std::vector<Action>& actions = plan.ranks[static_cast<size_t>(rank)].actions;
  for (size_t i = 0; i < actions.size(); ++i) {
    if (actions[i].kind == kind && actions[i].micro_batch == micro_batch) return i;
  }
  ADD_FAILURE() << "no such action";
  return 0;
}

std::string Message(const absl::Status& status) {
  EXPECT_FALSE(status.ok());
  return std::string(status.message());
}

TEST(PlanValidator, AcceptsAGoodPlan) {
  const StepPlan plan = GoodPlan();
  EXPECT_TRUE(ValidatePlan(plan, SmallCost()).ok()) << ValidatePlan(plan, SmallCost());
  // Rank 0: ring 0, F0, B0, ring 1, F1, B1, sync.
  ASSERT_EQ(plan.ranks[0].actions.size(), 7u);
  EXPECT_EQ(plan.ranks[0].actions[0].kind, ActionKind::kRingExchange);
  EXPECT_EQ(plan.ranks[0].actions[0].ring, (std::vector<int>{0, 1}));
  EXPECT_EQ(plan.ranks[0].actions.back().total_targets, 11 + 3 + 5 + 9);
}

TEST(PlanValidator, RejectsARingMemberWithoutTheRingAction) {
  StepPlan plan = GoodPlan();
  auto& actions = plan.ranks[1].actions;
  actions.erase(actions.begin() +
                static_cast<std::ptrdiff_t>(Find(plan, 1, ActionKind::kRingExchange, 1)));
  const std::string message = Message(ValidatePlan(plan, SmallCost()));
  EXPECT_THAT(message, HasSubstr("ring 1"));
  EXPECT_THAT(message, HasSubstr("rank 1 has no ring_exchange"));
  EXPECT_THAT(message, HasSubstr("rank 0's send to it is never received"));
}

TEST(PlanValidator, RejectsMismatchedRingSizes) {
  StepPlan plan = GoodPlan();
  plan.ranks[1].actions[Find(plan, 1, ActionKind::kRingExchange, 0)].bytes_per_step += 4;
  const std::string message = Message(ValidatePlan(plan, SmallCost()));
  EXPECT_THAT(message, HasSubstr("rank 1 action 0"));
  EXPECT_THAT(message, HasSubstr("ring 0 sends"));

  plan = GoodPlan();
  plan.ranks[1].actions[Find(plan, 1, ActionKind::kRingExchange, 0)].ring = {1, 0};
  EXPECT_THAT(Message(ValidatePlan(plan, SmallCost())), HasSubstr("members [1 0] differ"));
}

TEST(PlanValidator, RejectsTwoRingsMetInOppositeOrders) {
  // Both rings in micro-batch 0 on both ranks; rank 1 lists them the other way round.
  Placement placement;
  placement.local = {{}, {}};
  RingPlacement first;
  first.members = {0, 1};
  first.micro_batch = 0;
  first.sequences = {0};
  RingPlacement second = first;
  second.sequences = {1};
  placement.rings = {first, second};
  StepPlan plan = BuildStepPlan("hand", {kBatch[0], kBatch[3]}, placement, SmallCost(), 16);
  ASSERT_TRUE(ValidatePlan(plan, SmallCost()).ok()) << ValidatePlan(plan, SmallCost());
  std::swap(plan.ranks[1].actions[0], plan.ranks[1].actions[1]);
  const absl::Status status = ValidatePlan(plan, SmallCost());
  EXPECT_EQ(status.code(), absl::StatusCode::kFailedPrecondition);
  const std::string message = Message(status);
  EXPECT_THAT(message, HasSubstr("deadlock"));
  EXPECT_THAT(message, HasSubstr("rank 0 action 0 (ring_exchange, micro-batch 0) waits in ring 0"));
  EXPECT_THAT(message, HasSubstr("rank 1 action 0 (ring_exchange, micro-batch 0) waits in ring 1"));
}

TEST(PlanValidator, RejectsARingExchangeWithoutItsForward) {
  StepPlan plan = GoodPlan();
  // Rank 1's micro-batch 0 loses its forward and backward but keeps its ring exchange: its ring
  // would be joined to the next micro-batch's forward, or never.
  auto& actions = plan.ranks[1].actions;
  std::erase_if(actions, [](const Action& a) {
    return a.micro_batch == 0 &&
           (a.kind == ActionKind::kForward || a.kind == ActionKind::kBackward);
  });
  EXPECT_THAT(Message(ValidatePlan(plan, SmallCost())),
              HasSubstr("rank 1 action 1 (ring_exchange, micro-batch 1): the ring exchange at "
                        "action 0 is for another micro-batch, and the forward it waits for never "
                        "comes"));
  // And the last of a rank's actions before its gradient sync.
  StepPlan last = GoodPlan();
  auto& r0 = last.ranks[0].actions;
  std::erase_if(r0, [](const Action& a) {
    return a.micro_batch == 1 &&
           (a.kind == ActionKind::kForward || a.kind == ActionKind::kBackward);
  });
  EXPECT_THAT(Message(ValidatePlan(last, SmallCost())),
              HasSubstr("rank 0 action 3 (ring_exchange, micro-batch 1): a ring exchange (action "
                        "3) must be followed by the forward of its micro-batch and stage"));
}

TEST(PlanValidator, RejectsAnOffloadRatioOutsideZeroToOne) {
  for (const double ratio : {-0.1, 1.5}) {
    StepPlan plan = GoodPlan();
    plan.ranks[1].actions[Find(plan, 1, ActionKind::kForward, 0)].offload_ratio = ratio;
    EXPECT_THAT(Message(ValidatePlan(plan, SmallCost())),
                HasSubstr("is not a share in [0, 1]"));
  }
}

TEST(PlanValidator, RejectsATokenComputedTwice) {
  StepPlan plan = GoodPlan();
  for (const ActionKind kind : {ActionKind::kForward, ActionKind::kBackward}) {
    plan.ranks[1].actions[Find(plan, 1, kind, 0)].tokens.push_back({1, 2, 4});
  }
  const std::string message = Message(ValidatePlan(plan, SmallCost()));
  EXPECT_THAT(message, HasSubstr("sequence 1 tokens [2, 4) are computed twice in the forward"));
  EXPECT_THAT(message, HasSubstr("rank 0 action 1"));
  EXPECT_THAT(message, HasSubstr("rank 1 action 1"));
}

TEST(PlanValidator, RejectsATokenNeverComputed) {
  StepPlan plan = GoodPlan();
  for (const ActionKind kind : {ActionKind::kForward, ActionKind::kBackward}) {
    auto& tokens = plan.ranks[1].actions[Find(plan, 1, kind, 0)].tokens;
    tokens.back() = {2, 0, 5};  // sequence 2 has 6 tokens
  }
  EXPECT_THAT(Message(ValidatePlan(plan, SmallCost())),
              HasSubstr("sequence 2 tokens [5, 6) are never computed in the forward"));
}

TEST(PlanValidator, RejectsABackwardThatDiffersFromItsForward) {
  StepPlan plan = GoodPlan();
  plan.ranks[0].actions[Find(plan, 0, ActionKind::kBackward, 0)].tokens.pop_back();
  EXPECT_THAT(Message(ValidatePlan(plan, SmallCost())),
              HasSubstr("rank 0 action 2 (backward, micro-batch 0): tokens, context or neighbouring ranks differ"));
}

TEST(PlanValidator, RejectsASplitSequenceOutsideARing) {
  // Sequence 2 cut in two halves on two ranks with no ring between them.
  Placement placement;
  placement.local = {{{}}, {{}}};
  StepPlan plan = BuildStepPlan("hand", {kBatch[2]}, placement, SmallCost(), 8);
  for (int r = 0; r < 2; ++r) {
    Action forward;
    forward.tokens = {{2, 3 * r, 3 * r + 3}};
    Action backward = forward;
    backward.kind = ActionKind::kBackward;
    auto& actions = plan.ranks[static_cast<size_t>(r)].actions;
    actions.insert(actions.begin(), {forward, backward});
  }
  EXPECT_THAT(Message(ValidatePlan(plan, SmallCost())),
              HasSubstr("rank 0 action 0 (forward, micro-batch 0): computes sequence 2 tokens "
                        "[0, 3) of 6 outside any ring"));
}

TEST(PlanValidator, RejectsMemoryOverBudget) {
  StepPlan plan = GoodPlan();
  plan.activation_budget_bytes = 11 * 100;  // rank 1's micro-batch 0 holds 6 + 6 tokens
  const absl::Status status = ValidatePlan(plan, SmallCost());
  EXPECT_EQ(status.code(), absl::StatusCode::kResourceExhausted);
  const std::string message = Message(status);
  EXPECT_THAT(message, HasSubstr("rank 1 action 1 (forward, micro-batch 0): 12 tokens"));
  EXPECT_THAT(message, HasSubstr("over the rank's budget of 1100 bytes"));
}

TEST(PlanValidator, RejectsAWrongGradientScale) {
  StepPlan plan = GoodPlan();
  plan.ranks[1].actions.back().total_targets = 32;
  EXPECT_THAT(Message(ValidatePlan(plan, SmallCost())),
              HasSubstr("scales the gradient by 1/32 but the batch has 28 target tokens"));
}

// ChunkFlow plans: sequence 0 (12 tokens) in chunks of 4, K = 1, on one rank: F0 F1 F2, B2,
// R1 B1, R0 B0, then the short sequences' chunks.
StepPlan ChunkPlan() {
  absl::StatusOr<StepPlan> plan = PlanChunkFlow({{0, 12}, {1, 3}}, {1, 4, 1}, SmallCost());
  EXPECT_TRUE(plan.ok()) << plan.status();
  return *plan;
}

// The index of rank 0's first action of `kind` for micro-batch `mb`.
size_t Find(const StepPlan& plan, ActionKind kind, int mb) {
  const std::vector<Action>& a = plan.ranks[0].actions;
  for (size_t i = 0; i < a.size(); ++i) {
    if (a[i].kind == kind && a[i].micro_batch == mb) return i;
  }
  ADD_FAILURE() << "no such action";
  return 0;
}

TEST(PlanValidator, AcceptsAChunkPlan) {
  const absl::Status status = ValidatePlan(ChunkPlan(), SmallCost());
  EXPECT_TRUE(status.ok()) << status;
}

TEST(PlanValidator, RejectsChunkBackwardsOutOfOrder) {
  StepPlan plan = ChunkPlan();
  std::vector<Action>& a = plan.ranks[0].actions;
  // Chunk 0's recompute and backward before chunk 1's: chunk 0's K/V gradient would miss chunk 1's.
  const size_t b1 = Find(plan, ActionKind::kRecompute, 1);
  const size_t b0 = Find(plan, ActionKind::kRecompute, 0);
  std::rotate(a.begin() + static_cast<ptrdiff_t>(b1), a.begin() + static_cast<ptrdiff_t>(b0),
              a.begin() + static_cast<ptrdiff_t>(b0 + 2));
  EXPECT_THAT(Message(ValidatePlan(plan, SmallCost())),
              HasSubstr("the backward of chunk sequence 0 tokens [0, 4) of 12 must wait for the "
                        "later chunks' backwards (done down to token 8)"));
}

TEST(PlanValidator, RejectsADroppedChunkThatIsNotRecomputed) {
  StepPlan plan = ChunkPlan();
  std::vector<Action>& a = plan.ranks[0].actions;
  a.erase(a.begin() + static_cast<ptrdiff_t>(Find(plan, ActionKind::kRecompute, 1)));
  EXPECT_THAT(Message(ValidatePlan(plan, SmallCost())),
              HasSubstr("its forward dropped the activations and no recompute made them again"));
}

TEST(PlanValidator, RejectsAChunkWithoutItsContext) {
  StepPlan plan = ChunkPlan();
  for (Action& a : plan.ranks[0].actions) {
    if (a.micro_batch == 2) a.context = {{0, 0, 4}};  // chunk [8, 12) must see [0, 8)
  }
  EXPECT_THAT(Message(ValidatePlan(plan, SmallCost())),
              HasSubstr("computes sequence 0 tokens [8, 12) of 12 outside any ring, so it must be "
                        "the micro-batch's one chunk with the sequence's earlier tokens [0, 8) as "
                        "its context"));
}

TEST(PlanValidator, RejectsChunkStateOverBudget) {
  StepPlan plan = ChunkPlan();
  plan.activation_budget_bytes -= 1;
  EXPECT_EQ(ValidatePlan(plan, SmallCost()).code(), absl::StatusCode::kResourceExhausted);
}

}  // namespace
}  // namespace loom
