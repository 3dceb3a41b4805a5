// The simulator on tiny hand-made plans, against times worked out by hand.
#include "parallel/simulator.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <vector>

namespace loom {
namespace {

using ::testing::HasSubstr;

// One layer per stage; a token costs 3 s per layer (forward 1 s, backward 2 s); no attention,
// overhead or head. Links: `latency` s, 1 byte per second, `message` bytes per token.
CostModel UnitCost(double latency = 0.0, int64_t message = 0) {
  CostModel cost;
  cost.linear_s = 3.0;
  cost.n_layers = 2;
  cost.stage_message_bytes_per_token = message;
  cost.ranks_per_node = 64;
  cost.intra_node = LinkCost{latency, 1.0};
  cost.inter_node = cost.intra_node;
  return cost;
}

Action Compute(ActionKind kind, int slot, int stage, int prev, int next) {
  Action a;
  a.kind = kind;
  a.micro_batch = slot;
  a.stage = stage;
  a.prev_rank = prev;
  a.next_rank = next;
  a.tokens = {{slot, 0, 1}};
  return a;
}

Action Sync() {
  Action a;
  a.kind = ActionKind::kGradSync;
  return a;
}

// 1F1B over two stages (rank 0: stage 0, rank 1: stage 1) with two one-token micro-batches.
StepPlan OneFOneB() {
  StepPlan plan;
  plan.stages = {{0, 1}, {1, 2}};
  plan.pipeline_size = 2;
  plan.sequences = {{0, 1}, {1, 1}};
  plan.ranks.resize(2);
  using K = ActionKind;
  plan.ranks[0].actions = {Compute(K::kForward, 0, 0, -1, 1), Compute(K::kForward, 1, 0, -1, 1),
                           Compute(K::kBackward, 0, 0, -1, 1), Compute(K::kBackward, 1, 0, -1, 1),
                           Sync()};
  plan.ranks[1].actions = {Compute(K::kForward, 0, 1, 0, -1), Compute(K::kBackward, 0, 1, 0, -1),
                           Compute(K::kForward, 1, 1, 0, -1), Compute(K::kBackward, 1, 1, 0, -1),
                           Sync()};
  return plan;
}

TEST(Simulator, OneFOneBOfTwoStages) {
  const absl::StatusOr<SimResult> sim = SimulateStep(OneFOneB(), UnitCost());
  ASSERT_TRUE(sim.ok()) << sim.status();
  // Rank 0: F0 [0,1] F1 [1,2], B0 waits for rank 1's B0 [2,4]: [4,6]; B1 waits for [5,7]: [7,9].
  // Rank 1: F0 [1,2] B0 [2,4] F1 [4,5] B1 [5,7].
  const std::vector<ActionTime>& r0 = sim->ranks[0].actions;
  const std::vector<ActionTime>& r1 = sim->ranks[1].actions;
  EXPECT_DOUBLE_EQ(r0[1].end_s, 2.0);
  EXPECT_DOUBLE_EQ(r1[0].start_s, 1.0);
  EXPECT_DOUBLE_EQ(r1[1].end_s, 4.0);
  EXPECT_DOUBLE_EQ(r1[2].start_s, 4.0);
  EXPECT_DOUBLE_EQ(r0[2].start_s, 4.0);
  EXPECT_DOUBLE_EQ(r1[3].end_s, 7.0);
  EXPECT_DOUBLE_EQ(r0[3].start_s, 7.0);
  EXPECT_DOUBLE_EQ(sim->compute_end_s, 9.0);
  EXPECT_DOUBLE_EQ(sim->step_s, 9.0);  // a world of one node sends no gradient bytes
  EXPECT_DOUBLE_EQ(sim->busy_s(), 12.0);
  // The textbook 1F1B bubble, (p - 1) / m.
  EXPECT_DOUBLE_EQ(sim->bubble_fraction(), 0.5);
}

TEST(Simulator, MessagesTakeTheLinksTime) {
  // 0.5 s latency and 2 bytes per token at 1 byte/s: every activation message takes 2.5 s.
  const absl::StatusOr<SimResult> sim = SimulateStep(OneFOneB(), UnitCost(0.5, 2));
  ASSERT_TRUE(sim.ok()) << sim.status();
  const std::vector<ActionTime>& r0 = sim->ranks[0].actions;
  const std::vector<ActionTime>& r1 = sim->ranks[1].actions;
  EXPECT_DOUBLE_EQ(r1[0].start_s, 3.5);   // F0 ends at 1, arrives at 3.5
  EXPECT_DOUBLE_EQ(r1[1].end_s, 6.5);     // B0 [4.5, 6.5]
  EXPECT_DOUBLE_EQ(r0[2].start_s, 9.0);   // its gradient arrives at 9
  EXPECT_DOUBLE_EQ(r1[2].start_s, 6.5);   // F1 arrived at 4.5, the rank is free at 6.5
  EXPECT_DOUBLE_EQ(r1[3].end_s, 9.5);
  EXPECT_DOUBLE_EQ(r0[3].start_s, 12.0);  // B1 arrives at 12
  EXPECT_DOUBLE_EQ(sim->compute_end_s, 14.0);
}

TEST(Simulator, ZeroBubbleSplitsTheBackward) {
  StepPlan plan = OneFOneB();
  // Rank 1 defers B0's weight gradients (1 s of its 2 s) to after F1.
  std::vector<Action>& r1 = plan.ranks[1].actions;
  r1[1].defer_weight_grads = true;
  Action w = r1[1];
  w.kind = ActionKind::kWeightGrad;
  w.defer_weight_grads = false;
  r1.insert(r1.begin() + 3, w);  // F0 B0 F1 W0 B1 sync
  const absl::StatusOr<SimResult> sim = SimulateStep(plan, UnitCost());
  ASSERT_TRUE(sim.ok()) << sim.status();
  // Rank 1: F0 [1,2] B0 [2,3] F1 [3,4] W0 [4,5] B1 [5,7]; rank 0's B0 starts at 3.
  EXPECT_DOUBLE_EQ(sim->ranks[1].actions[1].end_s, 3.0);
  EXPECT_DOUBLE_EQ(sim->ranks[1].actions[3].end_s, 5.0);
  EXPECT_DOUBLE_EQ(sim->ranks[0].actions[2].start_s, 3.0);
  EXPECT_DOUBLE_EQ(sim->compute_end_s, 9.0);
}

// A ring of three ranks over one 3-token sequence (one token each); rank 0 first runs a local
// micro-batch of its own, so the others wait for it at the meeting.
StepPlan RingOfThree(int64_t bytes_per_step) {
  StepPlan plan;
  plan.sequences = {{0, 3}, {1, 1}};
  plan.ranks.resize(3);
  for (int r = 0; r < 3; ++r) {
    std::vector<Action>& actions = plan.ranks[static_cast<size_t>(r)].actions;
    if (r == 0) {
      Action local = Compute(ActionKind::kForward, 0, 0, -1, -1);
      local.tokens = {{1, 0, 1}};
      actions.push_back(local);
      local.kind = ActionKind::kBackward;
      actions.push_back(local);
    }
    Action ring;
    ring.kind = ActionKind::kRingExchange;
    ring.micro_batch = 1;
    ring.ring_id = 0;
    ring.ring = {0, 1, 2};
    ring.bytes_per_step = bytes_per_step;
    ring.tokens = {{0, r, r + 1}};
    actions.push_back(ring);
    Action f = Compute(ActionKind::kForward, 1, 0, -1, -1);
    f.tokens = ring.tokens;
    actions.push_back(f);
    f.kind = ActionKind::kBackward;
    actions.push_back(f);
    actions.push_back(Sync());
  }
  return plan;
}

TEST(Simulator, RingMembersMeet) {
  // One layer (n_layers 1); attention 1 s per squared token (forward a third, backward two
  // thirds), no linear term; messages 0.25 s + 1 byte/s.
  CostModel cost;
  cost.attention_s = 1.0;
  cost.n_layers = 1;
  cost.ranks_per_node = 8;
  cost.intra_node = LinkCost{0.25, 1.0};
  cost.inter_node = cost.intra_node;
  const StepPlan plan = RingOfThree(/*bytes_per_step=*/1);
  // Rank r's share [r, r+1) costs (r+1)^2 - r^2 = 2r + 1 seconds of attention: rank 0 1 s,
  // rank 1 3 s, rank 2 5 s; forward a third of that. The local micro-batch keeps rank 0 busy
  // for 1 s, so the ring starts at 1 on every member.
  // A ring step's message takes 1.25 s (forward), 2.5 s (backward: K/V, then dK/dV); n - 1 = 2
  // steps. Without overlap each member adds 2 * 1.25 = 2.5 s to its forward and 5 s to its
  // backward.
  SimulatorOptions no_overlap;
  no_overlap.overlap_ring_messages = false;
  absl::StatusOr<SimResult> sim = SimulateStep(plan, cost, no_overlap);
  ASSERT_TRUE(sim.ok()) << sim.status();
  for (int r = 0; r < 3; ++r) {
    const std::vector<ActionTime>& t = sim->ranks[static_cast<size_t>(r)].actions;
    const size_t f = r == 0 ? 3 : 1;
    const double attention = 2.0 * r + 1.0;
    EXPECT_DOUBLE_EQ(t[f].start_s, 1.0) << "rank " << r;
    EXPECT_DOUBLE_EQ(t[f].end_s, 1.0 + attention / 3.0 + 2.5) << "rank " << r;
    // The backward meeting waits for the slowest member's forward (rank 2's, at 1 + 5/3 + 2.5).
    EXPECT_DOUBLE_EQ(t[f + 1].start_s, 1.0 + 5.0 / 3.0 + 2.5) << "rank " << r;
    EXPECT_DOUBLE_EQ(t[f + 1].end_s, t[f + 1].start_s + 2.0 * attention / 3.0 + 5.0);
  }
  // With overlap a step costs max(message, attention per step): rank 2's forward step computes
  // 5/3/3 = 0.556 s against a 1.25 s message, exposing 0.694 s per step; its backward step
  // computes 10/3/3 = 1.111 s against 2.5 s.
  sim = SimulateStep(plan, cost);
  ASSERT_TRUE(sim.ok()) << sim.status();
  const std::vector<ActionTime>& t2 = sim->ranks[2].actions;
  EXPECT_NEAR(t2[1].end_s - t2[1].start_s, 5.0 / 3.0 + 2.0 * (1.25 - 5.0 / 9.0), 1e-12);
  EXPECT_NEAR(t2[2].end_s - t2[2].start_s, 10.0 / 3.0 + 2.0 * (2.5 - 10.0 / 9.0), 1e-12);
}

TEST(Simulator, NamesWhatAStuckPlanWaitsFor) {
  StepPlan plan = OneFOneB();
  plan.ranks[0].actions[0].next_rank = -1;  // F0 never sends to rank 1
  const absl::StatusOr<SimResult> sim = SimulateStep(plan, UnitCost());
  ASSERT_FALSE(sim.ok());
  EXPECT_THAT(sim.status().message(),
              HasSubstr("rank 1 at action 0 (forward) waits for the activations of micro-batch 0 "
                        "stage 1 from rank 0"));
}

}  // namespace
}  // namespace loom
