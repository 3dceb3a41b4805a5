// One entry point to the planners, so that `loom train`, `loom plan` and the tests choose a
// planner by name and get the same plan for the same batch.
#ifndef LOOM_PARALLEL_PLANNER_H_
#define LOOM_PARALLEL_PLANNER_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "parallel/cost_model.h"
#include "parallel/pipeline_planner.h"
#include "parallel/step_plan.h"

namespace loom {

enum class PlannerKind {
  kHdp,       // balanced hybrid data parallelism (balance_scheduler.h)
  kNaiveHdp,  // the same dynamic mesh, sequences placed in batch order (hdp_planner.h)
  kStatic,    // a fixed DP x CP mesh (static_planner.h)
  kChunkFlow,  // chunks of C tokens, K kept activations, data parallel (chunk_planner.h)
};

// "hdp", "naive_hdp", "static", "chunkflow".
absl::StatusOr<PlannerKind> ParsePlannerKind(absl::string_view name);
const char* PlannerKindName(PlannerKind kind);

struct PlannerOptions {
  PlannerKind kind = PlannerKind::kHdp;
  int world_size = 1;
  int64_t capacity_tokens = 0;  // C: tokens per rank per micro-batch (chunkflow: the chunk size)
  int cp_size = 1;              // static only: ranks per context-parallel group
  int chunk_keep = 0;           // chunkflow, hdp with chunks: K, chunks keeping activations
                                // (0 = all)
  int64_t chunk_size = 0;       // hdp only: > 0 lets long sequences run as chunks of this size
                                // where that is cheaper than a ring (hybrid_planner.h)
  // Pipelines (pipeline_planner.h): world_size = pipeline.pp x D; the planner above plans for the
  // D replicas, each as one rank. pp = 1: no pipeline.
  PipelineOptions pipeline = {};
};

// The static mesh's context-parallel size for sequences of up to `longest` tokens: the fewest
// ranks dividing world_size whose zigzag shares of such a sequence stay within C. Fails when even
// the whole world is too small, naming the figures.
absl::StatusOr<int> StaticCpSize(int world_size, int64_t capacity_tokens, int64_t longest);

// The plan of one global batch. Sequence ids must be 0..n-1 in batch order (the executor finds a
// sequence's tokens by its id). With a pipeline, cp_size is per replica (it divides D).
absl::StatusOr<StepPlan> PlanStep(const std::vector<SequenceSpec>& sequences,
                                  const PlannerOptions& options, const CostModel& cost);

}  // namespace loom

#endif  // LOOM_PARALLEL_PLANNER_H_
