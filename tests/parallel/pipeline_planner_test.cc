// The pipeline planner on many randomized batches: for every base planner (balanced and naive
// HDP, the static mesh, ChunkFlow, HDP with chunks), 1-3 replicas, 2-4 stages and every schedule
// that fits (auto included), each plan passes the validator (matched stage messages, no cycle of
// waits across stages and ring members, every token once per stage, memory) and the simulator
// finishes it; auto's simulated step is never longer than 1F1B's in planned order.
#include <gtest/gtest.h>

#include <cstdio>
#include <optional>
#include <string>
#include <vector>

#include "parallel/plan_metrics.h"
#include "parallel/plan_validator.h"
#include "parallel/planner.h"
#include "parallel/simulator.h"
#include "tests/parallel/plan_equivalence.h"

namespace loom {
namespace {

TEST(PipelinePlanner, RandomBatchesGiveValidPlansUnderEverySchedule) {
  const ModelConfig config = test::PipelineTestModel();
  const CostModel cost = CostModel::FromModelConfig(config);
  constexpr int64_t kCapacity = 40;
  int plans = 0, with_rings = 0, with_chunks = 0, auto_plans = 0;
  for (const char* preset : {"byted", "github", "chunkflow"}) {
    for (const int replicas : {1, 2, 3}) {
      for (const int pp : {2, 3, 4}) {
        for (uint64_t seed = 1; seed <= 3; ++seed) {
          const std::vector<SequenceSpec> sequences =
              test::PresetBatch(preset, 64, 2 * replicas * kCapacity,
                                3 * replicas * kCapacity, seed * 31 + static_cast<uint64_t>(pp));
          int64_t longest = 0;
          for (const SequenceSpec& s : sequences) longest = std::max(longest, s.length);
          struct Base {
            PlannerKind kind;
            int64_t chunk_size;
          };
          for (const Base base : {Base{PlannerKind::kHdp, 0}, Base{PlannerKind::kHdp, 20},
                                  Base{PlannerKind::kNaiveHdp, 0}, Base{PlannerKind::kStatic, 0},
                                  Base{PlannerKind::kChunkFlow, 0}}) {
            PlannerOptions options;
            options.kind = base.kind;
            options.world_size = pp * replicas;
            options.capacity_tokens = base.kind == PlannerKind::kChunkFlow ? 16 : kCapacity;
            options.chunk_size = base.chunk_size;
            options.chunk_keep = 1;
            if (base.kind == PlannerKind::kStatic) {
              absl::StatusOr<int> cp = StaticCpSize(replicas, kCapacity, longest);
              if (!cp.ok()) continue;  // the replicas cannot hold the batch's longest sequence
              options.cp_size = *cp;
            }
            if ((base.kind == PlannerKind::kHdp && base.chunk_size == 0) ||
                base.kind == PlannerKind::kNaiveHdp) {
              if (longest > replicas * kCapacity) continue;
            }
            std::optional<double> one_f_one_b_s;
            struct Choice {
              int vpp;
              std::optional<PipelineScheduleKind> kind;
            };
            for (const Choice choice :
                 {Choice{1, PipelineScheduleKind::k1f1b}, Choice{1, PipelineScheduleKind::kGpipe},
                  Choice{1, PipelineScheduleKind::kZbh1}, Choice{1, std::nullopt},
                  Choice{2, PipelineScheduleKind::kInterleaved}, Choice{2, std::nullopt}}) {
              if (pp * choice.vpp > config.n_layers) continue;
              options.pipeline = {pp, choice.vpp, choice.kind};
              const std::string what =
                  std::string(preset) + " " + PlannerKindName(base.kind) +
                  (base.chunk_size > 0 ? "+chunks" : "") + " replicas " +
                  std::to_string(replicas) + " pp " + std::to_string(pp) + " vpp " +
                  std::to_string(choice.vpp) + " " +
                  (choice.kind ? PipelineScheduleName(*choice.kind) : "auto") + " seed " +
                  std::to_string(seed);
              absl::StatusOr<StepPlan> plan = PlanStep(sequences, options, cost);
              ASSERT_TRUE(plan.ok()) << what << ": " << plan.status();
              const absl::Status valid = ValidatePlan(*plan, cost);
              ASSERT_TRUE(valid.ok()) << what << ": " << valid;
              absl::StatusOr<SimResult> sim = SimulateStep(*plan, cost);
              ASSERT_TRUE(sim.ok()) << what << ": " << sim.status();
              ++plans;
              const PlanMetrics m = MeasurePlan(*plan, cost);
              with_rings += m.rings > 0;
              with_chunks += m.chunks > 0;
              if (choice.vpp == 1 && choice.kind == PipelineScheduleKind::k1f1b) {
                one_f_one_b_s = sim->step_s;
              }
              if (choice.vpp == 1 && !choice.kind.has_value()) {
                ++auto_plans;
                EXPECT_LE(sim->step_s, *one_f_one_b_s * (1 + 1e-12)) << what;
              }
            }
          }
        }
      }
    }
  }
  std::printf("%d pipeline plans (%d with rings, %d with chunks, %d auto) valid\n", plans,
              with_rings, with_chunks, auto_plans);
  EXPECT_GT(with_rings, 100);
  EXPECT_GT(with_chunks, 100);
}

}  // namespace
}  // namespace loom
