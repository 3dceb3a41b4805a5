#include "parallel/cost_model.h"

#include <algorithm>

namespace loom {
namespace {

// Ring attention sends K/V once per step in the forward, and K/V plus their gradients in the
// backward: three times the forward's bytes in all.
constexpr int64_t kRingPassesFactor = 3;

}  // namespace

CostModel CostModel::FromModelConfig(const ModelConfig& model, const HardwareSpec& hardware) {
  const double d = model.d_model;
  const double q = model.q_dim();
  const double kv = model.kv_dim();
  const double ffn = model.ffn_dim;
  const double layers = model.n_layers;
  const double rate = hardware.peak_flops * hardware.efficiency;
  // Weights per layer: Q and O (d*q each), K and V (d*kv each), gate/up/down (d*ffn each).
  const double layer_weights = 2 * d * q + 2 * d * kv + 3 * d * ffn;
  const double head_weights = d * model.vocab_size;

  CostModel cost;
  cost.n_layers = model.n_layers;
  cost.attention_s = 3.0 * 2.0 * q / rate;
  cost.linear_s = 3.0 * 2.0 * (layer_weights + head_weights / layers) / rate;
  cost.overhead_s = hardware.layer_overhead_s;
  // Saved per token and layer (see LayerActivations in src/model.h): x_in, ln1, x_mid, ln2 (d
  // each), q and att (q each), k and v (kv each), gate, up and h (ffn each), lse (one per head) and
  // two rstd values.
  const double saved_per_layer = 4 * d + 2 * q + 2 * kv + 3 * ffn + model.n_heads + 2;
  cost.activation_bytes_per_token =
      static_cast<int64_t>(saved_per_layer * layers * hardware.bytes_per_element);
  cost.kv_bytes_per_token = static_cast<int64_t>(2 * kv * hardware.bytes_per_element);
  // As the model's code allocates them (src/model.cc): the forward holds x, its gradient, the
  // final norm's output and gradient (4d per token) and the logits of up to 512 rows; a layer's
  // backward holds the gradient (d) and one scratch block.
  const double backward_scratch =
      std::max(3 * ffn, q + kv) + d + 2 * q + 2 * kv + model.n_heads;
  cost.pending_bytes_per_token = static_cast<int64_t>(d * hardware.bytes_per_element);
  cost.working_bytes_per_token = static_cast<int64_t>(
      std::max(4 * d + 1, d + backward_scratch) * hardware.bytes_per_element);
  cost.logit_bytes_per_row = static_cast<int64_t>(model.vocab_size) * hardware.bytes_per_element;
  const double params = layers * layer_weights + head_weights * (model.tied_embeddings ? 1 : 2) +
                        d * (2 * layers + 1);
  cost.gradient_bytes = static_cast<int64_t>(params * hardware.gradient_bytes_per_element);
  cost.head_s = 3.0 * 2.0 * head_weights / rate;
  cost.stage_message_bytes_per_token = static_cast<int64_t>(d * hardware.bytes_per_element);
  // Per layer: the gradients at the outputs of q, k, v, o, gate, up and down.
  cost.deferred_bytes_per_token =
      static_cast<int64_t>((q + 2 * kv + 2 * d + 2 * ffn) * layers * hardware.bytes_per_element);
  cost.ranks_per_node = hardware.ranks_per_node;
  cost.intra_node = hardware.intra_node;
  cost.inter_node = hardware.inter_node;
  return cost;
}

double CostModel::LayerSeconds(int64_t s) const {
  const double x = static_cast<double>(s);
  return attention_s * x * x + linear_s * x + overhead_s;
}

double CostModel::RangeSeconds(int64_t begin, int64_t end) const {
  const double x = static_cast<double>(begin);
  const double y = static_cast<double>(end);
  return n_layers * (attention_s * (y * y - x * x) + linear_s * (y - x));
}

double CostModel::DocumentSeconds(int64_t length) const { return RangeSeconds(0, length); }

double CostModel::MicroBatchSeconds(const std::vector<TokenRange>& tokens) const {
  double seconds = n_layers * overhead_s;
  for (const TokenRange& r : tokens) seconds += RangeSeconds(r.begin, r.end);
  return seconds;
}

double CostModel::StageSeconds(const std::vector<TokenRange>& tokens, const StageSpec& stage,
                               bool head) const {
  const double layers = stage.last_layer - stage.first_layer;
  const double layer_linear_s = linear_s - head_s / std::max(n_layers, 1);
  double seconds = layers * overhead_s;
  for (const TokenRange& r : tokens) {
    const double x = static_cast<double>(r.begin);
    const double y = static_cast<double>(r.end);
    seconds += layers * (attention_s * (y * y - x * x) + layer_linear_s * (y - x));
    if (head) seconds += head_s * (y - x);
  }
  return seconds;
}

double CostModel::StageWeightGradSeconds(const std::vector<TokenRange>& tokens,
                                         const StageSpec& stage) const {
  const double layers = stage.last_layer - stage.first_layer;
  const double layer_linear_s = linear_s - head_s / std::max(n_layers, 1);
  return layers * layer_linear_s * static_cast<double>(TokenCount(tokens)) / 3.0;
}

double CostModel::ComputeSeconds(const StepPlan& plan, const Action& a) const {
  if (a.kind == ActionKind::kRingExchange || a.kind == ActionKind::kGradSync) return 0.0;
  const StageSpec stage = StageOf(plan, a.stage, n_layers);
  const bool head = a.stage == plan.num_stages() - 1;
  const double total = StageSeconds(a.tokens, stage, head);
  switch (a.kind) {
    case ActionKind::kForward:
    case ActionKind::kRecompute:
      return total * (1.0 - backward_fraction);
    case ActionKind::kBackward:
      return total * backward_fraction -
             (a.defer_weight_grads ? StageWeightGradSeconds(a.tokens, stage) : 0.0);
    case ActionKind::kWeightGrad:
      return StageWeightGradSeconds(a.tokens, stage);
    default:
      return 0.0;
  }
}

const LinkCost& CostModel::Link(int from, int to) const {
  const int per_node = std::max(ranks_per_node, 1);
  return from / per_node == to / per_node ? intra_node : inter_node;
}

int64_t CostModel::RingBytesSent(int ring_size, int64_t bytes_per_step) const {
  return (kRingPassesFactor + (layer_recompute ? 1 : 0)) * n_layers *
         static_cast<int64_t>(ring_size - 1) * bytes_per_step;
}

double CostModel::RingSeconds(const std::vector<int>& ring, int64_t bytes_per_step) const {
  const int n = static_cast<int>(ring.size());
  if (n < 2) return 0.0;
  double slowest = 0.0;
  for (int i = 0; i < n; ++i) {
    slowest = std::max(slowest, Link(ring[static_cast<size_t>(i)],
                                     ring[static_cast<size_t>((i + 1) % n)])
                                    .Seconds(static_cast<double>(bytes_per_step)));
  }
  return (kRingPassesFactor + (layer_recompute ? 1 : 0)) * n_layers * (n - 1) * slowest;
}

double CostModel::GradSyncSeconds(int world_size) const {
  if (world_size < 2) return 0.0;
  const LinkCost& link = world_size > ranks_per_node ? inter_node : intra_node;
  const double chunk = static_cast<double>(gradient_bytes) / world_size;
  return 2.0 * (world_size - 1) * link.Seconds(chunk);
}

}  // namespace loom
