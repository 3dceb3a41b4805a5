// The cost model of one model on one cluster, per rank, as `loom simulate` plans and times it.
//
// A rank of the plan is a tensor-parallel group of `tensor_parallel` GPUs of one node (the papers
// run the large models with TP = 8 inside a node): its compute is split over the group, its
// activations too (sequence parallelism), and each GPU of the group sends its own share of the
// K/V heads, activations and gradients over its own links. So every byte figure of the cost model
// is per GPU, and so are the links; compute is per rank.
//
// Compute follows the roofline, term by term: a = causal attention FLOPs over achievable
// attention FLOP/s; b = the larger of the linear FLOPs over achievable GEMM FLOP/s and the
// activation traffic over HBM bandwidth, plus the tensor-parallel collectives of a token (not
// overlapped); c = the larger of the launch overhead and reading the layer's weights from HBM
// (once in the forward, twice in the backward), what a micro-batch of few tokens is bound by.
#ifndef LOOM_PARALLEL_CLUSTER_COST_H_
#define LOOM_PARALLEL_CLUSTER_COST_H_

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"
#include "parallel/cost_model.h"
#include "parallel/hardware_presets.h"
#include "parallel/step_plan.h"
#include "src/model_config.h"

namespace loom {

struct ClusterCost {
  CostModel cost;
  int world_size = 0;        // ranks: GPUs / tensor_parallel
  int tensor_parallel = 1;
  // Per GPU: weights (bf16) and gradients (fp32) of its share of the model, and its shard of the
  // fp32 master weights and Adam moments (ZeRO-1 over the data-parallel ranks).
  int64_t model_state_bytes = 0;
  int64_t usable_memory_bytes = 0;      // per GPU, less the reserve
  // What a rank's plan may hold per GPU beyond the model states.
  int64_t activation_budget_bytes = 0;
  double peak_flops_per_gpu = 0.0;
  int64_t host_memory_bytes = 0;  // per GPU, for offloaded activations
};

// Fails, naming the field, when the tensor-parallel size does not divide a node or the model's
// heads, or when the model states alone do not fit a GPU.
//
// With `layer_recompute` (activation checkpointing per layer, as long-context training commonly
// runs), only each layer's input stays from the forward to the backward; the layer being
// back-propagated holds its activations again as scratch, and the layers' forward runs twice, so
// their compute terms grow by a third (the head's not) and the backward's share becomes 3/4.
// With `pipeline_stages` > 1 a rank holds that share of the layers, so of the model states.
absl::StatusOr<ClusterCost> MakeClusterCost(const ModelConfig& model, const ClusterSpec& cluster,
                                            int tensor_parallel, bool layer_recompute = false,
                                            int pipeline_stages = 1);

// The most tokens per rank per micro-batch (a multiple of `granule`) whose memory while computed
// (CostModel::MicroBatchBytes) fits the activation budget; 0 when not even one granule fits.
int64_t CapacityFromMemory(const ClusterCost& cluster_cost, int64_t granule = 1024);

// Model FLOPs of one training step over `sequences` (what MFU counts): 6 per matrix weight per
// token (the forward's 2 and the backward's 4) and, per layer, 6 * q_dim * L^2 of causal attention
// for a sequence of L tokens (QK^T and PV over L^2 / 2 pairs, forward and backward).
double TrainingFlops(const ModelConfig& model, const std::vector<SequenceSpec>& sequences);

// The step time no strategy can beat: TrainingFlops spread evenly over every GPU of the cluster,
// the matrix products at the GEMM efficiency and attention at the attention efficiency, with no
// recomputation, messages, memory traffic or waiting.
double IdealStepSeconds(const ModelConfig& model, const ClusterSpec& cluster,
                        const std::vector<SequenceSpec>& sequences);

}  // namespace loom

#endif  // LOOM_PARALLEL_CLUSTER_COST_H_
