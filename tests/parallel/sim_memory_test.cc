// The simulator's memory per rank over time against hand-computed figures and against the
// validator's prediction (RankMemoryTimeline, MeasurePlan's peaks) on every strategy's plans, and
// activation offloading on the simulated clock: the copy its compute hides is free, the rest
// lengthens the action, and the offloaded share leaves the GPU.
#include <gtest/gtest.h>

#include <vector>

#include "data/length_batch.h"
#include "data/length_distribution.h"
#include "parallel/cluster_cost.h"
#include "parallel/plan_metrics.h"
#include "parallel/plan_validator.h"
#include "parallel/simulator.h"
#include "parallel/strategy.h"
#include "src/model_presets.h"

namespace loom {
namespace {

// One layer per stage of two; a token costs 3 s per layer (forward 1 s, backward 2 s); 100 bytes
// of activations per token over both layers (50 per stage), 10 of scratch, 7 of loss gradient.
CostModel UnitCost() {
  CostModel cost;
  cost.linear_s = 3.0;
  cost.n_layers = 2;
  cost.activation_bytes_per_token = 100;
  cost.working_bytes_per_token = 10;
  cost.pending_bytes_per_token = 7;
  cost.ranks_per_node = 64;
  cost.intra_node = LinkCost{0.0, 1.0};
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

// 1F1B over two stages with two one-token micro-batches (the simulator test's plan).
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

TEST(SimulatedMemory, OneFOneBHoldsTwoMicroBatchesOnTheFirstStage) {
  const StepPlan plan = OneFOneB();
  const CostModel cost = UnitCost();
  SimulatorOptions options;
  options.track_memory = true;
  const absl::StatusOr<SimResult> sim = SimulateStep(plan, cost, options);
  ASSERT_TRUE(sim.ok()) << sim.status();
  // Rank 0 runs F0 [0,1] F1 [1,2] B0 [4,6] B1 [7,9]: 50 bytes of stage activations per
  // micro-batch, 10 of scratch while computing; both micro-batches are alive from F1 to B0.
  EXPECT_EQ(sim->ranks[0].memory, (std::vector<MemoryPoint>{{0, 60}, {1, 110}, {4, 110}, {7, 60}}));
  // Rank 1 (the head) runs F0 [1,2] B0 [2,4] F1 [4,5] B1 [5,7]: one micro-batch at a time, its
  // 7-byte loss gradient waiting from forward to backward.
  EXPECT_EQ(sim->ranks[1].memory, (std::vector<MemoryPoint>{{1, 67}, {2, 67}, {4, 67}, {5, 67}}));
  EXPECT_EQ(sim->ranks[0].peak_memory_bytes, 110);
  EXPECT_EQ(sim->peak_memory_bytes(), 110);
  const PlanMetrics metrics = MeasurePlan(plan, cost);
  EXPECT_EQ(sim->ranks[0].peak_memory_bytes, metrics.ranks[0].peak_activation_bytes);
  EXPECT_EQ(sim->ranks[1].peak_memory_bytes, metrics.ranks[1].peak_activation_bytes);
}

// One rank, one micro-batch of one token: forward 2 s, backward 4 s (two layers of 3 s); 1,000
// bytes of activations, half of them offloaded, over a host link of `host` bytes per second.
SimResult OffloadOne(double host, double ratio) {
  CostModel cost = UnitCost();
  cost.activation_bytes_per_token = 1000;
  cost.host_bytes_per_s = host;
  StepPlan plan;
  plan.sequences = {{0, 1}};
  plan.ranks.resize(1);
  Action f = Compute(ActionKind::kForward, 0, 0, -1, -1);
  f.offload_ratio = ratio;
  Action b = f;
  b.kind = ActionKind::kBackward;
  b.offload_ratio = 0.0;
  plan.ranks[0].actions = {f, b, Sync()};
  SimulatorOptions options;
  options.track_memory = true;
  absl::StatusOr<SimResult> sim = SimulateStep(plan, cost, options);
  EXPECT_TRUE(sim.ok()) << sim.status();
  // The memory is the validator's: the offloaded 500 bytes are off the GPU.
  const std::vector<RankMemory> timeline = RankMemoryTimeline(plan, 0, cost);
  EXPECT_EQ(timeline[0].bytes(), 1000 - static_cast<int64_t>(1000 * ratio) + 7 + 10);
  EXPECT_EQ(sim->ranks[0].memory[0].bytes, timeline[0].bytes());
  return *sim;
}

TEST(SimulatedOffload, TheCopyComputeHidesIsFreeTheRestLengthensTheAction) {
  // 500 bytes at 1,000 B/s: 0.5 s, under both the forward's 2 s and the backward's 4 s.
  SimResult hidden = OffloadOne(1000.0, 0.5);
  EXPECT_DOUBLE_EQ(hidden.ranks[0].actions[0].end_s, 2.0);
  EXPECT_DOUBLE_EQ(hidden.step_s, 6.0);
  // At 100 B/s the copy takes 5 s: 3 s past the forward, 1 s past the backward.
  SimResult exposed = OffloadOne(100.0, 0.5);
  EXPECT_DOUBLE_EQ(exposed.ranks[0].actions[0].end_s, 5.0);
  EXPECT_DOUBLE_EQ(exposed.ranks[0].actions[1].start_s, 5.0);
  EXPECT_DOUBLE_EQ(exposed.ranks[0].actions[1].end_s, 10.0);
  EXPECT_DOUBLE_EQ(exposed.ranks[0].busy_s, 6.0) << "copies are not compute";
  // Without offloading the link does not matter and all 1,000 bytes stay.
  SimResult none = OffloadOne(100.0, 0.0);
  EXPECT_DOUBLE_EQ(none.step_s, 6.0);
  EXPECT_EQ(none.ranks[0].peak_memory_bytes, 1017);
}

TEST(SimulatedMemory, EqualsTheValidatorsPredictionOnEveryStrategy) {
  // 8 nodes of H100s (64 ranks), LLaMA 7B, two micro-batches of Byted lengths per rank.
  const ModelConfig model = *ModelPreset("llama-7b");
  const ClusterCost cc = *MakeClusterCost(model, DefaultCluster(*GpuPreset("h100-80g"), 8), 1);
  const int64_t c = CapacityFromMemory(cc);
  const int64_t context = 32 * c;
  std::vector<SequenceSpec> batch;
  for (const int64_t l :
       DrawLengthBatch(*LengthDistribution::Preset("byted"), 2 * 64 * c, context, 3)) {
    batch.push_back({static_cast<int64_t>(batch.size()), l});
  }
  const StrategyContext ctx{64, c, context, cc.activation_budget_bytes, cc.host_memory_bytes};
  for (const std::string& name : StrategyKindNames()) {
    SCOPED_TRACE(name);
    StrategySpec spec;
    spec.kind = *ParseStrategyKind(name);
    if (spec.kind == StrategyKind::kChunkFlow || spec.kind == StrategyKind::kBest) {
      spec.chunk_size = c / 4;
      spec.chunk_keep = 2;
    }
    absl::StatusOr<StepPlan> plan = PlanWithStrategy(batch, spec, ctx, cc.cost);
    ASSERT_TRUE(plan.ok()) << plan.status();
    ASSERT_TRUE(ValidatePlan(*plan, cc.cost).ok()) << ValidatePlan(*plan, cc.cost);
    SimulatorOptions options;
    options.track_memory = true;
    absl::StatusOr<SimResult> sim = SimulateStep(*plan, cc.cost, options);
    ASSERT_TRUE(sim.ok()) << sim.status();
    const PlanMetrics metrics = MeasurePlan(*plan, cc.cost);
    for (int r = 0; r < plan->world_size(); ++r) {
      const RankTimeline& t = sim->ranks[static_cast<size_t>(r)];
      ASSERT_EQ(t.peak_memory_bytes, metrics.ranks[static_cast<size_t>(r)].peak_activation_bytes)
          << "rank " << r;
      for (size_t i = 1; i < t.memory.size(); ++i) {
        ASSERT_LE(t.memory[i - 1].t_s, t.memory[i].t_s) << "rank " << r << " point " << i;
      }
    }
    EXPECT_EQ(sim->peak_memory_bytes(), PlanPeakMemory(*plan, cc.cost));
    if (spec.kind == StrategyKind::kBest) {
      // Offloading keeps every rank within what the GPU leaves beyond the model states (a
      // C-token micro-batch fills nearly all of it; chunks keep their sequence's K/V state).
      EXPECT_LE(sim->peak_memory_bytes(), cc.activation_budget_bytes);
    }
  }
}

}  // namespace
}  // namespace loom
