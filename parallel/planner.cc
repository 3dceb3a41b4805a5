#include "parallel/planner.h"

#include "absl/strings/str_format.h"
#include "parallel/balance_scheduler.h"
#include "parallel/chunk_planner.h"
#include "parallel/hdp_planner.h"
#include "parallel/hybrid_planner.h"
#include "parallel/ring_share.h"
#include "parallel/static_planner.h"

namespace loom {

absl::StatusOr<PlannerKind> ParsePlannerKind(absl::string_view name) {
  if (name == "hdp") return PlannerKind::kHdp;
  if (name == "naive_hdp") return PlannerKind::kNaiveHdp;
  if (name == "static") return PlannerKind::kStatic;
  if (name == "chunkflow") return PlannerKind::kChunkFlow;
  return absl::InvalidArgumentError(
      absl::StrFormat("unknown planner '%s'; known: hdp, naive_hdp, static, chunkflow", name));
}

const char* PlannerKindName(PlannerKind kind) {
  switch (kind) {
    case PlannerKind::kHdp:
      return "hdp";
    case PlannerKind::kNaiveHdp:
      return "naive_hdp";
    case PlannerKind::kStatic:
      return "static";
    case PlannerKind::kChunkFlow:
      return "chunkflow";
  }
  return "?";
}

absl::StatusOr<int> StaticCpSize(int world_size, int64_t capacity_tokens, int64_t longest) {
  for (int cp = 1; cp <= world_size; ++cp) {
    if (world_size % cp != 0) continue;
    bool fits = true;
    for (int m = 0; m < cp && fits; ++m) {
      fits = TokenCount(ZigzagShare(0, longest, cp, m)) <= capacity_tokens;
    }
    if (fits) return cp;
  }
  return absl::InvalidArgumentError(absl::StrFormat(
      "a sequence of %d tokens does not fit the static mesh: even all %d ranks hold %d tokens "
      "each (capacity_tokens)",
      longest, world_size, capacity_tokens));
}

namespace {

absl::StatusOr<StepPlan> PlanDataParallel(const std::vector<SequenceSpec>& sequences,
                                          const PlannerOptions& options, const CostModel& cost);

}  // namespace

absl::StatusOr<StepPlan> PlanStep(const std::vector<SequenceSpec>& sequences,
                                  const PlannerOptions& options, const CostModel& cost) {
  const PipelineOptions& pipe = options.pipeline;
  if (pipe.pp == 1 && pipe.vpp == 1) return PlanDataParallel(sequences, options, cost);
  if (pipe.pp < 2 || pipe.vpp < 1 || options.world_size % pipe.pp != 0) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "a pipeline needs pp >= 2 dividing the world size and vpp >= 1; got pp %d, vpp %d, "
        "world %d",
        pipe.pp, pipe.vpp, options.world_size));
  }
  PlannerOptions replicas = options;
  replicas.world_size = options.world_size / pipe.pp;
  replicas.pipeline = PipelineOptions{};
  absl::StatusOr<StepPlan> base = PlanDataParallel(sequences, replicas, cost);
  if (!base.ok()) return base.status();
  return PlanPipeline(*base, pipe, cost);
}

namespace {

absl::StatusOr<StepPlan> PlanDataParallel(const std::vector<SequenceSpec>& sequences,
                                          const PlannerOptions& options, const CostModel& cost) {
  for (size_t i = 0; i < sequences.size(); ++i) {
    if (sequences[i].id != static_cast<int64_t>(i)) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "sequence at index %d has id %d; ids must be 0..n-1 in batch order", i,
          sequences[i].id));
    }
  }
  switch (options.kind) {
    case PlannerKind::kHdp:
      if (options.chunk_size > 0) {
        return PlanHdpWithChunks(
            sequences,
            HybridOptions{HdpOptions{options.world_size, options.capacity_tokens},
                          options.chunk_size, options.chunk_keep},
            cost);
      }
      return PlanBalancedHdp(sequences, HdpOptions{options.world_size, options.capacity_tokens},
                             cost);
    case PlannerKind::kNaiveHdp:
      return PlanNaiveHdp(sequences, HdpOptions{options.world_size, options.capacity_tokens},
                          cost);
    case PlannerKind::kStatic:
      return PlanStatic(sequences,
                        StaticPlannerOptions{options.world_size, options.cp_size,
                                             options.capacity_tokens},
                        cost);
    case PlannerKind::kChunkFlow:
      return PlanChunkFlow(sequences,
                           ChunkPlannerOptions{options.world_size, options.capacity_tokens,
                                               options.chunk_keep},
                           cost);
  }
  return absl::InvalidArgumentError("unknown planner kind");
}

}  // namespace

}  // namespace loom
