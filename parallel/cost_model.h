// The one cost model shared by the planners, the validator and the simulator: compute time per
// layer, activation memory per token and alpha-beta links. Plain data, so that launch/ can fill it
// from YAML or from a calibration run and every consumer sees the same figures.
//
// Compute: a document of s tokens costs T(s) = a*s^2 + b*s + c seconds per layer (forward and
// backward together); a*s^2 is causal attention, b*s the projections and the MLP, c the fixed cost
// of running a micro-batch through a layer. A token range [x, y) of a longer document attends to
// the keys before it, so its attention costs a*(y^2 - x^2): the shares of a sequence split over a
// ring sum to a*L^2, and with zigzag chunking each of c members gets about a*L^2/c.
#ifndef LOOM_PARALLEL_COST_MODEL_H_
#define LOOM_PARALLEL_COST_MODEL_H_

#include <cstdint>
#include <vector>

#include "parallel/step_plan.h"
#include "src/model_config.h"

namespace loom {

// Seconds to move `bytes` over a link: latency + bytes / bandwidth.
struct LinkCost {
  double latency_s = 0.0;
  double bytes_per_s = 1.0;

  double Seconds(double bytes) const { return latency_s + bytes / bytes_per_s; }
};

// What the FLOP-based defaults are derived from. The defaults describe an H100/H200-class GPU
// training in bf16 with 8 GPUs per node on NVLink and 200 Gb/s between nodes.
struct HardwareSpec {
  double peak_flops = 989e12;
  double efficiency = 0.5;           // achieved fraction of peak
  int bytes_per_element = 2;         // activations and K/V
  int gradient_bytes_per_element = 4;
  double layer_overhead_s = 20e-6;   // c: kernel launches and the like per micro-batch and layer
  int ranks_per_node = 8;
  LinkCost intra_node{5e-6, 150e9};
  LinkCost inter_node{10e-6, 25e9};
};

struct CostModel {
  double attention_s = 0.0;  // a: seconds per layer per squared token (causal)
  double linear_s = 0.0;     // b: seconds per layer per token
  double overhead_s = 0.0;   // c: seconds per layer per micro-batch
  int n_layers = 1;
  // Share of a layer's time spent in the backward (the rest is the forward); only the trace and
  // the simulator split the two.
  double backward_fraction = 2.0 / 3.0;
  int64_t activation_bytes_per_token = 0;  // saved for the backward, all layers
  int64_t kv_bytes_per_token = 0;          // K and V of one token in one layer
  // The loss gradient at the top of the layers, kept from a micro-batch's forward (where the head
  // computes it) to its backward, also while its activations are dropped.
  int64_t pending_bytes_per_token = 0;
  // Scratch while a micro-batch is computed, beyond its activations: the larger of the forward's
  // (residual stream, head input and gradients) and one layer's backward gradients; plus the
  // head's logits, computed in blocks of at most `logit_rows` rows.
  int64_t working_bytes_per_token = 0;
  int64_t logit_bytes_per_row = 0;
  int64_t logit_rows = 512;
  int64_t gradient_bytes = 0;              // the flat gradient
  // Pipelines. Seconds per token of the final norm, the output head and the loss (forward and
  // backward): part of linear_s, spread over the layers, which a pipeline's last stage pays alone.
  double head_s = 0.0;
  // Bytes per token of the activations one stage passes to the next (and of their gradient).
  int64_t stage_message_bytes_per_token = 0;
  // Bytes per token, all layers, that a Backward deferring its weight gradients keeps for its
  // WeightGrad: the gradients at the outputs of the linear layers.
  int64_t deferred_bytes_per_token = 0;
  int ranks_per_node = 8;
  LinkCost intra_node;
  LinkCost inter_node;
  // Activation checkpointing per layer (the simulator's clusters): only each layer's input is
  // kept from the forward, and the backward runs the layer's forward again first, ring attention
  // included, so a ring sends its K/V once more in the backward. The compute terms above already
  // include the second forward; this tells the ring figures.
  bool layer_recompute = false;
  // Host memory link per GPU, one direction, for activation offloading (0: none).
  double host_bytes_per_s = 0.0;

  // FLOP-based defaults: training costs three times the forward FLOPs (the backward twice);
  // forward linear FLOPs are 2 per weight per token, causal attention 2*q_dim per (query, key)
  // pair for QK^T and as much for PV over s^2/2 pairs. The output head's FLOPs are spread over
  // the layers' linear term.
  static CostModel FromModelConfig(const ModelConfig& model, const HardwareSpec& hardware = {});

  // T(s) for one layer and one document of s tokens.
  double LayerSeconds(int64_t s) const;
  // Forward + backward over all layers of one micro-batch whose tokens are `tokens`.
  double MicroBatchSeconds(const std::vector<TokenRange>& tokens) const;
  // Forward + backward over all layers of a whole document of `length` tokens, without the
  // per-micro-batch overhead (what packing a document adds to a micro-batch).
  double DocumentSeconds(int64_t length) const;
  // All layers' attention + linear time of one token range, without overhead.
  double RangeSeconds(int64_t begin, int64_t end) const;

  // Forward + backward of `tokens` on the layers of `stage`, plus the head when `head` (a
  // pipeline's last stage). Over all stages of a model this sums to MicroBatchSeconds.
  double StageSeconds(const std::vector<TokenRange>& tokens, const StageSpec& stage,
                      bool head) const;
  // The part of StageSeconds that is the layers' linear weight gradients: a third of their time
  // (forward, input gradient and weight gradient are one matrix product each). The head's weight
  // gradient is not in it: the last stage makes it with the loss.
  double StageWeightGradSeconds(const std::vector<TokenRange>& tokens,
                                const StageSpec& stage) const;
  // Compute seconds of one action of `plan`: a Forward or Recompute is the forward share of its
  // stage's time, a Backward the rest (less the weight gradients when it defers them), a
  // WeightGrad those; 0 for the others, which only communicate.
  double ComputeSeconds(const StepPlan& plan, const Action& action) const;

  // Memory of one micro-batch of `tokens` while it is computed: activations, its pending loss
  // gradient and the scratch. What a rank with micro-batches of up to C tokens needs at least.
  int64_t MicroBatchBytes(int64_t tokens) const {
    return tokens * (activation_bytes_per_token + pending_bytes_per_token +
                     working_bytes_per_token) +
           LogitBytes(tokens);
  }
  int64_t LogitBytes(int64_t tokens) const {
    return (tokens < logit_rows ? tokens : logit_rows) * logit_bytes_per_row;
  }
  // Bytes per token of a chunked sequence's K/V state store, all layers: K and V, and their
  // gradients accumulated by later chunks.
  int64_t ContextBytesPerToken() const { return 2 * kv_bytes_per_token * n_layers; }
  // The link between two world ranks (same node: intra, else inter).
  const LinkCost& Link(int from, int to) const;
  // Bytes one member sends over a whole step in a ring of `ring_size` with `bytes_per_step`:
  // (ring_size - 1) steps per layer of K/V in the forward, and in the backward K/V plus dK/dV
  // (and K/V once more under layer_recompute).
  int64_t RingBytesSent(int ring_size, int64_t bytes_per_step) const;
  // Wall time of a ring's messages over a step, set by its slowest link.
  double RingSeconds(const std::vector<int>& ring, int64_t bytes_per_step) const;
  // Wall time of the gradient all-reduce over `world_size` ranks (a ring all-reduce).
  double GradSyncSeconds(int world_size) const;
};

}  // namespace loom

#endif  // LOOM_PARALLEL_COST_MODEL_H_
