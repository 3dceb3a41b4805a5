#include "parallel/cluster_cost.h"

#include <algorithm>

#include "absl/strings/str_format.h"
#include "src/model_presets.h"

namespace loom {
namespace {

// Bytes of the tensor-parallel collectives per token and layer on each GPU: with sequence
// parallelism a layer's forward all-gathers its input and reduce-scatters its output around
// attention and around the MLP (four collectives of d_model bf16 values per token, each moving
// (t-1)/t of them), and the backward does the same four in reverse.
double TensorParallelBytesPerToken(const ModelConfig& model, int tp) {
  if (tp < 2) return 0.0;
  return 8.0 * (tp - 1) / tp * model.d_model * 2.0;
}

}  // namespace

absl::StatusOr<ClusterCost> MakeClusterCost(const ModelConfig& model, const ClusterSpec& cluster,
                                            int tensor_parallel, bool layer_recompute,
                                            int pipeline_stages) {
  const int tp = tensor_parallel;
  if (tp < 1 || cluster.gpus_per_node % tp != 0) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "model.tensor_parallel (%d) must divide cluster.gpus_per_node (%d): a tensor-parallel "
        "group stays inside a node",
        tp, cluster.gpus_per_node));
  }
  if (model.n_heads % tp != 0 || (model.n_kv_heads % tp != 0 && tp % model.n_kv_heads != 0)) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "model.tensor_parallel (%d) must divide model.n_heads (%d), and divide or be a multiple "
        "of model.n_kv_heads (%d)",
        tp, model.n_heads, model.n_kv_heads));
  }
  if (cluster.nodes < 1 || cluster.gpus_per_node < 1) {
    return absl::InvalidArgumentError("cluster.nodes and cluster.gpus_per_node must be positive");
  }
  const GpuSpec& gpu = cluster.gpu;
  HardwareSpec hw;
  hw.peak_flops = gpu.peak_bf16_flops;
  hw.efficiency = cluster.gemm_efficiency;
  hw.bytes_per_element = 2;
  hw.gradient_bytes_per_element = 4;
  hw.layer_overhead_s = cluster.layer_overhead_s;
  hw.ranks_per_node = cluster.gpus_per_node / tp;
  hw.intra_node = cluster.intra_node;
  hw.inter_node = cluster.inter_node;
  ClusterCost out;
  out.cost = CostModel::FromModelConfig(model, hw);
  out.world_size = cluster.gpus() / tp;
  out.tensor_parallel = tp;
  out.peak_flops_per_gpu = gpu.peak_bf16_flops;
  out.host_memory_bytes = cluster.host_memory_bytes;
  CostModel& c = out.cost;

  // Memory and messages per GPU. With fewer K/V heads than GPUs in the group, the heads are
  // replicated, each GPU holding one.
  const int kv_share = std::max(1, tp / model.n_kv_heads);
  for (int64_t* bytes : {&c.activation_bytes_per_token, &c.pending_bytes_per_token,
                         &c.working_bytes_per_token, &c.logit_bytes_per_row, &c.gradient_bytes,
                         &c.stage_message_bytes_per_token, &c.deferred_bytes_per_token}) {
    *bytes /= tp;
  }
  c.kv_bytes_per_token = c.kv_bytes_per_token * kv_share / tp;

  // Compute per rank: FLOPs split over the group.
  const double group_peak = gpu.peak_bf16_flops * tp;
  c.attention_s = 6.0 * model.q_dim() / (group_peak * cluster.attention_efficiency);
  const double d = model.d_model;
  const double layer_weights =
      2 * d * model.q_dim() + 2 * d * model.kv_dim() + 3 * d * model.ffn_dim;
  const double head_weights = d * model.vocab_size;
  const double gemm_rate = group_peak * cluster.gemm_efficiency;
  const double flop_linear = 6.0 * (layer_weights + head_weights / model.n_layers) / gemm_rate;
  // Each saved activation is written in the forward and read in the backward, and its gradient
  // written once.
  const double traffic_linear = 3.0 * static_cast<double>(c.activation_bytes_per_token) /
                                model.n_layers / gpu.hbm_bytes_per_s;
  c.linear_s = std::max(flop_linear, traffic_linear) +
               TensorParallelBytesPerToken(model, tp) / cluster.intra_node.bytes_per_s;
  c.head_s = 6.0 * head_weights / gemm_rate;
  const double weight_read_s = 3.0 * layer_weights * 2.0 / tp / gpu.hbm_bytes_per_s;
  c.overhead_s = std::max(cluster.layer_overhead_s, weight_read_s);
  c.host_bytes_per_s = cluster.host_bytes_per_s;

  if (layer_recompute) {
    const int64_t saved_per_layer = c.activation_bytes_per_token / model.n_layers;
    c.activation_bytes_per_token = static_cast<int64_t>(d) * 2 * model.n_layers / tp;
    c.working_bytes_per_token += saved_per_layer;
    const double head_per_layer = c.head_s / model.n_layers;
    c.attention_s *= 4.0 / 3.0;
    c.linear_s = (c.linear_s - head_per_layer) * 4.0 / 3.0 + head_per_layer;
    c.overhead_s *= 4.0 / 3.0;
    c.backward_fraction = 3.0 / 4.0;
    c.layer_recompute = true;
  }

  // Model states per GPU (ZeRO-1 over the data-parallel ranks).
  const int pp = std::max(pipeline_stages, 1);
  if (model.n_layers < pp || out.world_size % pp != 0) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "pipeline_size %d must divide the %d ranks and not exceed the model's %d layers", pp,
        out.world_size, model.n_layers));
  }
  const double params = ModelParameters(model) / tp / pp;
  const double dp = std::max(out.world_size / pp, 1);
  out.model_state_bytes = static_cast<int64_t>(params * (2.0 + 4.0) + params * 12.0 / dp);
  out.usable_memory_bytes =
      static_cast<int64_t>(static_cast<double>(gpu.memory_bytes) *
                           (1.0 - cluster.memory_reserve_fraction));
  out.activation_budget_bytes = out.usable_memory_bytes - out.model_state_bytes;
  if (out.activation_budget_bytes <= 0) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "the model states need %.1f GB per GPU at model.tensor_parallel %d, more than the %.1f "
        "GB cluster.gpu %s leaves for them; raise model.tensor_parallel",
        out.model_state_bytes / 1e9, tp, out.usable_memory_bytes / 1e9, gpu.name));
  }
  return out;
}

int64_t CapacityFromMemory(const ClusterCost& cc, int64_t granule) {
  const CostModel& c = cc.cost;
  const int64_t per_token =
      c.activation_bytes_per_token + c.pending_bytes_per_token + c.working_bytes_per_token;
  const int64_t room = cc.activation_budget_bytes - c.LogitBytes(c.logit_rows);
  if (per_token <= 0 || room <= 0) return 0;
  return room / per_token / granule * granule;
}

double TrainingFlops(const ModelConfig& model, const std::vector<SequenceSpec>& sequences) {
  const double d = model.d_model;
  const double matmul_weights =
      model.n_layers * (2 * d * model.q_dim() + 2 * d * model.kv_dim() + 3 * d * model.ffn_dim) +
      d * model.vocab_size;
  double tokens = 0.0, squares = 0.0;
  for (const SequenceSpec& s : sequences) {
    const double l = static_cast<double>(s.length);
    tokens += l;
    squares += l * l;
  }
  return 6.0 * matmul_weights * tokens + 6.0 * model.q_dim() * model.n_layers * squares;
}

double IdealStepSeconds(const ModelConfig& model, const ClusterSpec& cluster,
                        const std::vector<SequenceSpec>& sequences) {
  double squares = 0.0;
  for (const SequenceSpec& s : sequences) squares += static_cast<double>(s.length) * s.length;
  const double attention = 6.0 * model.q_dim() * model.n_layers * squares;
  const double linear = TrainingFlops(model, sequences) - attention;
  const double peak = cluster.gpu.peak_bf16_flops * cluster.gpus();
  return linear / (peak * cluster.gemm_efficiency) +
         attention / (peak * cluster.attention_efficiency);
}

}  // namespace loom
