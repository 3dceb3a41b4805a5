#include "parallel/strategy.h"

#include <algorithm>

#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "parallel/activation_offload.h"
#include "parallel/balance_scheduler.h"
#include "parallel/hybrid_planner.h"
#include "parallel/megatron_cp_planner.h"
#include "parallel/plan_metrics.h"
#include "parallel/planner.h"

namespace loom {
namespace {

constexpr struct {
  StrategyKind kind;
  const char* name;
} kNames[] = {
    {StrategyKind::kStatic, "static"},       {StrategyKind::kMegatronHybridCp, "megatron-hybrid-cp"},
    {StrategyKind::kHdpNaive, "hdp-naive"},  {StrategyKind::kHdp, "hdp"},
    {StrategyKind::kChunkFlow, "chunkflow"}, {StrategyKind::kBest, "best"},
};

}  // namespace

absl::StatusOr<StrategyKind> ParseStrategyKind(std::string_view name) {
  for (const auto& n : kNames) {
    if (name == n.name) return n.kind;
  }
  return absl::InvalidArgumentError(absl::StrFormat("unknown strategy '%s'; known: %s", name,
                                                    absl::StrJoin(StrategyKindNames(), ", ")));
}

const char* StrategyKindName(StrategyKind kind) {
  for (const auto& n : kNames) {
    if (kind == n.kind) return n.name;
  }
  return "?";
}

std::vector<std::string> StrategyKindNames() {
  std::vector<std::string> names;
  for (const auto& n : kNames) names.push_back(n.name);
  return names;
}

absl::StatusOr<int> StrategyCpSize(const StrategySpec& spec, const StrategyContext& context) {
  const int64_t capacity = spec.capacity_tokens > 0 ? spec.capacity_tokens : context.capacity_tokens;
  if (spec.cp_size > 0) {
    if (context.world_size % spec.cp_size != 0) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "cp_size %d does not divide the world of %d ranks", spec.cp_size, context.world_size));
    }
    return spec.cp_size;
  }
  return StaticCpSize(context.world_size, capacity, context.longest_tokens);
}

int64_t PlanPeakMemory(const StepPlan& plan, const CostModel& cost) {
  int64_t peak = 0;
  for (int r = 0; r < plan.world_size(); ++r) {
    for (const RankMemory& m : RankMemoryTimeline(plan, r, cost)) peak = std::max(peak, m.bytes());
  }
  return peak;
}

absl::StatusOr<StepPlan> PlanWithStrategy(const std::vector<SequenceSpec>& sequences,
                                          const StrategySpec& spec,
                                          const StrategyContext& context, const CostModel& cost) {
  PlannerOptions options;
  options.world_size = context.world_size;
  if (spec.pipeline_size > 1 &&
      (spec.kind == StrategyKind::kHdp || spec.kind == StrategyKind::kBest)) {
    options.pipeline = PipelineOptions{spec.pipeline_size, 1, std::nullopt};
  }
  options.capacity_tokens =
      spec.capacity_tokens > 0 ? spec.capacity_tokens : context.capacity_tokens;
  // Offloading keeps to the memory a C-token micro-batch needs.
  const OffloadPolicy offload{cost.MicroBatchBytes(options.capacity_tokens),
                              context.host_memory_bytes, 1.0};
  HdpOptions hdp{options.world_size, options.capacity_tokens, &offload,
                 /*count_ring_messages=*/spec.kind == StrategyKind::kBest};
  switch (spec.kind) {
    case StrategyKind::kMegatronHybridCp:
      return PlanMegatronHybridCp(
          sequences, MegatronCpOptions{context.world_size, options.capacity_tokens}, cost);
    case StrategyKind::kStatic: {
      absl::StatusOr<int> cp = StrategyCpSize(spec, context);
      if (!cp.ok()) return cp.status();
      options.kind = PlannerKind::kStatic;
      options.cp_size = *cp;
      return PlanStep(sequences, options, cost);
    }
    case StrategyKind::kHdpNaive:
      options.kind = PlannerKind::kNaiveHdp;
      return PlanStep(sequences, options, cost);
    case StrategyKind::kHdp:
      if (spec.Offloads()) return PlanBalancedHdp(sequences, hdp, cost);
      options.kind = PlannerKind::kHdp;
      return PlanStep(sequences, options, cost);
    case StrategyKind::kChunkFlow:
      options.kind = PlannerKind::kChunkFlow;
      if (spec.chunk_size > 0) options.capacity_tokens = spec.chunk_size;
      options.chunk_keep = spec.chunk_keep;
      return PlanStep(sequences, options, cost);
    case StrategyKind::kBest: {
      options.kind = PlannerKind::kHdp;
      if (spec.chunk_size > 0) {
        PlannerOptions chunked = options;
        chunked.chunk_size = std::min(spec.chunk_size, options.capacity_tokens);
        chunked.chunk_keep = spec.chunk_keep;
        absl::StatusOr<StepPlan> plan =
            spec.Offloads() ? PlanHdpWithChunks(sequences,
                                             HybridOptions{hdp, chunked.chunk_size,
                                                           chunked.chunk_keep},
                                             cost)
                         : PlanStep(sequences, chunked, cost);
        if (!plan.ok()) return plan.status();
        // Chunks keep a long sequence's K/V state on one rank; where that outgrows the memory,
        // the rings of plain HDP are what fits.
        if (context.memory_budget_bytes <= 0 ||
            PlanPeakMemory(*plan, cost) <= context.memory_budget_bytes) {
          return plan;
        }
      }
      if (spec.Offloads()) return PlanBalancedHdp(sequences, hdp, cost);
      return PlanStep(sequences, options, cost);
    }
  }
  return absl::InvalidArgumentError("unknown strategy kind");
}

}  // namespace loom
