// What the `parallel:` and `runtime:` sections of an experiment mean to the layers below: the
// planner's options, the cost model it balances with, and how ranks are started. Shared by
// `loom train` and `loom plan`, so that a plan printed is the plan trained.
#ifndef LOOM_LAUNCH_PARALLEL_SETUP_H_
#define LOOM_LAUNCH_PARALLEL_SETUP_H_

#include <vector>

#include "absl/status/statusor.h"
#include "data/packed_batch.h"
#include "launch/experiment_config.h"
#include "parallel/cost_model.h"
#include "parallel/planner.h"
#include "parallel/step_plan.h"
#include "runtime/config.h"

namespace loom {

// This machine as the FLOP-based cost model sees it: fp32 at about the measured sgemm rate
// (DESIGN.md section 7: ~55 GFLOP/s on 2 threads), every rank on one node.
HardwareSpec CpuHardware(int world_size);

// parallel.cost_* when any is set (calibrated figures), else derived from the model's FLOPs.
CostModel CostModelFromConfig(const ExperimentConfig& config);

// The planner and its options: C defaults to data.max_doc_tokens; the static mesh's CP size
// defaults to the fewest ranks that hold a data.max_doc_tokens sequence. Errors name the field.
absl::StatusOr<PlannerOptions> PlannerOptionsFromConfig(const ExperimentConfig& config);

// runtime.backend, the local world's size (parallel.world_size) and runtime.timeout_s.
absl::StatusOr<RuntimeConfig> RuntimeConfigFromConfig(const ExperimentConfig& config);

// The sequences of a packed global batch, ids 0..n-1 in batch order, as the planners take them.
std::vector<SequenceSpec> SequencesOf(const PackedBatch& batch);

}  // namespace loom

#endif  // LOOM_LAUNCH_PARALLEL_SETUP_H_
