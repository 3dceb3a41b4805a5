// A simulated-cluster study: the same global batches planned by every strategy, each plan
// validated and replayed by the simulator under one cluster's cost model, and the figures
// `loom simulate` reports per strategy (step time median and p99 over the steps, tokens/s, MFU,
// balance, bubble, bytes sent, peak memory, speedup over `static`).
#ifndef LOOM_PARALLEL_SIM_STUDY_H_
#define LOOM_PARALLEL_SIM_STUDY_H_

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "data/length_distribution.h"
#include "parallel/cluster_cost.h"
#include "parallel/hardware_presets.h"
#include "parallel/simulator.h"
#include "parallel/strategy.h"
#include "src/model_config.h"

namespace loom {

struct StudySetup {
  ModelConfig model;
  ClusterSpec cluster;
  int tensor_parallel = 1;           // strategies may choose their own
  bool layer_recompute = false;      // activation checkpointing per layer; strategies may choose
  const LengthDistribution* lengths = nullptr;  // not owned
  int64_t context_tokens = 0;        // longest sequence; longer ones are split (0: no cap)
  int64_t global_batch_tokens = 0;
  int steps = 1;
  uint64_t seed = 1;
  int64_t capacity_tokens = 0;       // C for every strategy without its own; 0: the most that
                                     // fits the GPU (CapacityFromMemory) for each strategy
  std::vector<StrategySpec> strategies;
  SimulatorOptions simulator;
  int trace_step = 0;                // 1-based step handed to the trace callback; 0: none
};

// One strategy on one step.
struct StrategyStep {
  double step_s = 0.0;
  double plan_s = 0.0;       // wall time, on this machine, of planning it,
  double validate_s = 0.0;   // of validating the plan
  double simulate_s = 0.0;   // and of simulating it
  double mfu = 0.0;
  double balance = 1.0;      // max / mean compute time over ranks
  double bubble = 0.0;       // SimResult::bubble_fraction
  double bytes_sent_mean = 0.0;  // per GPU: ring and pipeline messages (not the gradient sync)
  double bytes_sent_max = 0.0;
  int64_t peak_memory_bytes = 0;  // per GPU, model states included
  int micro_batches_max = 0;
};

struct StrategyResult {
  StrategySpec spec;
  ClusterCost cost;             // the cluster as this strategy runs it (TP, recompute)
  int64_t capacity_tokens = 0;  // its C
  std::string error;  // why the strategy cannot plan this setting; empty when it can
  std::vector<StrategyStep> steps;
  double median_step_s = 0.0;
  double p99_step_s = 0.0;
  double tokens_per_s = 0.0;
  double mfu = 0.0;
  double balance = 1.0;
  double bubble = 0.0;
  double bytes_sent_per_gpu = 0.0;
  int64_t peak_memory_bytes = 0;
  bool fits_memory = true;
  double speedup_vs_static = 0.0;  // static's median step time over this one's; 0 if unknown
};

struct StudyResult {
  double ideal_step_s = 0.0;        // median over the steps of IdealStepSeconds
  int64_t tokens_per_step = 0;      // mean over the steps
  int64_t sequences_per_step = 0;
  std::vector<StrategyResult> strategies;
};

// Called once per strategy for the step `trace_step`, with its plan and timing.
using TraceSink = std::function<absl::Status(const StrategySpec&, const StepPlan&,
                                             const CostModel&, const SimResult&)>;

// Fails on a plan that fails the validator (a planner bug, named) and on a trace the sink cannot
// write. A strategy that cannot run the setting (the model states do not fit its GPUs, the
// static mesh cannot hold the longest sequence) is reported in its `error` instead.
absl::StatusOr<StudyResult> RunStudy(const StudySetup& setup, const TraceSink& trace = nullptr);

// p in [0, 1] by nearest rank over sorted values; 0 for none.
double Percentile(std::vector<double> values, double p);

}  // namespace loom

#endif  // LOOM_PARALLEL_SIM_STUDY_H_
