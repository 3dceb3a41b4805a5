// Layers to pipeline stages. Stages are contiguous layer ranges in model order; the first stage
// also embeds the tokens and the last also runs the output head and the loss, so the split
// balances the stages' compute with the head counted: a large vocabulary leaves the last stage
// fewer layers. The embedding is a table lookup, nearly free in compute, and counts as nothing.
//
// The split is fixed for a run (it decides which ranks hold which weights), so it is made for a
// reference micro-batch, one document of C tokens, not for each step's batch.
#ifndef LOOM_PARALLEL_STAGE_PARTITION_H_
#define LOOM_PARALLEL_STAGE_PARTITION_H_

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"
#include "parallel/cost_model.h"
#include "parallel/step_plan.h"

namespace loom {

// `stages` ranges of at least one layer each, minimising the costliest stage under `cost` for a
// document of `reference_tokens`; among such splits, the one with the most even stage costs.
// Fails when there are fewer layers than stages.
absl::StatusOr<std::vector<StageSpec>> PartitionLayers(const CostModel& cost, int stages,
                                                       int64_t reference_tokens);

}  // namespace loom

#endif  // LOOM_PARALLEL_STAGE_PARTITION_H_
