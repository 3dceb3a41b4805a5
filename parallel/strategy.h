// The strategies `loom simulate` compares, each a way to plan a global batch: loom's planners
// (planner.h) and the open baseline (megatron_cp_planner.h) behind one name, so that the
// simulator, the published-results table and the tests plan every strategy alike.
//
//  static              a DP x CP mesh whose CP size holds the data's longest sequence
//  megatron-hybrid-cp  Megatron-LM's hybrid context parallel scheduler
//  hdp-naive           HDP's dynamic mesh, sequences placed in batch order
//  hdp                 HDP with the balance scheduler
//  chunkflow           ChunkFlow: chunks of C tokens, K of them keeping activations
//  best                loom's best combination: hdp whose long sequences offload the activations
//                      that do not fit (always, without checkpointing unless asked for), and
//                      run as chunks where that is cheaper (chunk_size, chunk_keep); a step
//                      whose chunks would not fit the GPU's memory is planned without them
// hdp may offload activations of long sequences too (`offload`).
#ifndef LOOM_PARALLEL_STRATEGY_H_
#define LOOM_PARALLEL_STRATEGY_H_

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "parallel/cost_model.h"
#include "parallel/step_plan.h"

namespace loom {

enum class StrategyKind { kStatic, kMegatronHybridCp, kHdpNaive, kHdp, kChunkFlow, kBest };

// "static", "megatron-hybrid-cp", "hdp-naive", "hdp", "chunkflow", "best".
absl::StatusOr<StrategyKind> ParseStrategyKind(std::string_view name);
const char* StrategyKindName(StrategyKind kind);
std::vector<std::string> StrategyKindNames();

struct StrategySpec {
  StrategyKind kind = StrategyKind::kHdp;
  std::string label;            // how tables name it; the kind's name when empty
  int64_t capacity_tokens = 0;  // C, tokens per rank per micro-batch; 0: the study's
  int cp_size = 0;              // static: 0 picks the fewest ranks that hold the longest sequence
  int64_t chunk_size = 0;       // best: chunks of long sequences (0: none); chunkflow: C
  int chunk_keep = 0;           // chunkflow, best: K (0 keeps all)
  // How the cluster runs it (sim_study.h): tensor-parallel size (0: the study's) and activation
  // checkpointing per layer (-1: the study's, 0: off, 1: on; `best` is off unless asked for).
  int tensor_parallel = 0;
  int layer_recompute = -1;
  // hdp, best: pipeline stages per replica (1: none); the schedule is chosen per step (`auto`,
  // pipeline_planner.h). A pipelined best does not offload.
  int pipeline_size = 1;
  // hdp, best: long sequences' ring members offload the activations that do not fit
  // (activation_offload.h), so rings need fewer ranks.
  bool offload = false;

  bool Offloads() const {
    return (offload || kind == StrategyKind::kBest) && pipeline_size <= 1;
  }

  std::string Label() const { return label.empty() ? StrategyKindName(kind) : label; }
};

// What a strategy plans against: the world, C, the data's longest sequence (which sizes the
// static mesh) and the memory a rank may use beyond the model states (which `best` keeps to).
struct StrategyContext {
  int world_size = 1;
  int64_t capacity_tokens = 0;
  int64_t longest_tokens = 0;
  int64_t memory_budget_bytes = 0;  // 0: no limit
  int64_t host_memory_bytes = 0;    // per GPU, for offloading (0: no limit)
};

// The static mesh's CP size for a spec (its cp_size, or the fewest ranks that hold the longest
// sequence); fails naming the figures when none does.
absl::StatusOr<int> StrategyCpSize(const StrategySpec& spec, const StrategyContext& context);

// The plan of one global batch (sequence ids 0..n-1 in batch order) under `spec`.
absl::StatusOr<StepPlan> PlanWithStrategy(const std::vector<SequenceSpec>& sequences,
                                          const StrategySpec& spec,
                                          const StrategyContext& context, const CostModel& cost);

// The largest memory any rank holds at any action (RankMemoryTimeline), per GPU.
int64_t PlanPeakMemory(const StepPlan& plan, const CostModel& cost);

}  // namespace loom

#endif  // LOOM_PARALLEL_STRATEGY_H_
