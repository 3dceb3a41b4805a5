// The LLaMA-style decoder: token embedding, n_layers of (RMSNorm, grouped-query attention with
// RoPE, residual, RMSNorm, SwiGLU MLP, residual), a final RMSNorm and the output head.
//
// Parameters and gradients are each one flat Buffer laid out by ParamLayout. The step is split
// into pieces so that later layers of loom can run parts of it: a pipeline stage runs a range of
// layers, a chunk runs its tokens with earlier chunks' K/V supplied from outside (ExternalKv).
// Every backward piece accumulates into the gradient buffer.
#ifndef LOOM_SRC_MODEL_H_
#define LOOM_SRC_MODEL_H_

#include <cstdint>
#include <memory>
#include <vector>

#include "absl/status/statusor.h"
#include "src/kernels/attention.h"
#include "src/kernels/rope.h"
#include "src/model_config.h"
#include "src/param_layout.h"
#include "src/tensor.h"
#include "src/token_batch.h"

namespace loom {

// Views into one layer's saved activations ([T, ...] each), kept for the backward.
struct LayerActivations {
  float* x_in;   // [T, C] residual stream entering the layer
  float* ln1;    // [T, C]
  float* rstd1;  // [T]
  float* q;      // [T, n_heads * D], after RoPE
  float* k;      // [T, n_kv_heads * D], after RoPE
  float* v;      // [T, n_kv_heads * D]
  float* att;    // [T, n_heads * D]
  float* lse;    // [T, n_heads]
  float* x_mid;  // [T, C] after the attention residual
  float* ln2;    // [T, C]
  float* rstd2;  // [T]
  float* gate;   // [T, F]
  float* up;     // [T, F]
  float* h;      // [T, F] silu(gate) * up
};

// Activations of a range of layers for one batch, drawn from the model's allocator.
class StageActivations {
 public:
  int num_tokens() const { return T_; }
  const LayerActivations& layer(int l) const { return layers_[static_cast<size_t>(l - first_)]; }
  const RopeTable& rope() const { return rope_; }
  size_t bytes() const;

 private:
  friend class Model;
  int T_ = 0;
  int first_ = 0;
  RopeTable rope_;
  std::vector<Buffer> buffers_;
  std::vector<LayerActivations> layers_;
};

// The weight gradients of a range of layers' linear layers, left for later by a backward (the W
// of zero-bubble pipeline schedules): the gradients at each linear layer's output, per layer.
// Their inputs are the stage's saved activations, which must outlive this until it is applied.
class DeferredWeightGrads {
 public:
  size_t bytes() const;

 private:
  friend class Model;
  struct Layer {
    int layer = 0;
    Buffer d_q, d_k, d_v, d_o, d_gate, d_up, d_down;  // [T, width of the layer's output]
  };
  std::vector<Layer> layers_;
};

// K/V of tokens computed elsewhere (earlier chunks of the same documents) that this batch's
// queries also attend to, for one layer. k, v: [spans.n, n_kv_heads * D] after RoPE. The backward
// accumulates their gradients into dk, dv when those are set.
struct ExternalKv {
  const float* k = nullptr;
  const float* v = nullptr;
  TokenSpans spans;
  float* dk = nullptr;
  float* dv = nullptr;
};

// The attention of a layer over the batch's own tokens, when it is computed somewhere other than
// the local kernel: context parallelism puts ring attention over ranks behind this interface
// (parallel/), so the model needs no knowledge of communication. It sees q, k, v after RoPE, in the
// kernel's layout and with its semantics: Forward writes out and lse as AttentionForward does,
// Backward accumulates dq, dk, dv given the final lse and delta as AttentionBackward does.
class AttentionFn {
 public:
  virtual ~AttentionFn() = default;
  virtual void Forward(int layer, float* out, float* lse, const float* q, const float* k,
                       const float* v, const TokenSpans& spans) = 0;
  virtual void Backward(int layer, float* dq, float* dk, float* dv, const float* dout,
                        const float* q, const float* k, const float* v, const float* lse,
                        const float* delta, const TokenSpans& spans) = 0;
};

class Model {
 public:
  static absl::StatusOr<std::unique_ptr<Model>> Create(
      const ModelConfig& config, Allocator* allocator = &Allocator::Global());

  const ModelConfig& config() const { return config_; }
  const ParamLayout& layout() const { return layout_; }
  Allocator* allocator() const { return allocator_; }
  float* params() { return params_.data(); }
  const float* params() const { return params_.data(); }
  float* grads() { return grads_.data(); }
  size_t num_params() const { return params_.numel(); }
  void ZeroGrads() { grads_.Zero(); }
  // Replaces the causal attention over the batch's own tokens in every layer; nullptr (the
  // default) is the local kernel. Not owned; must outlive the calls that use it. External K/V
  // still merge in locally.
  void set_attention(AttentionFn* attention) { attention_ = attention; }

  // Weights ~ N(0, 0.02) (output projections scaled by 1/sqrt(2 n_layers)), norms = 1;
  // deterministic in the seed.
  void InitWeights(uint64_t seed);

  // The whole model on one packed batch: returns the sum of the token losses and accumulates the
  // gradients of (that sum * grad_scale). grad_scale = 1 / (targets in the global batch) makes the
  // gradient that of the token-level mean over the global batch.
  double ForwardBackward(const TokenBatch& batch, float grad_scale);
  // Forward only: the sum of the token losses.
  double Loss(const TokenBatch& batch);

  // --- Pieces of the step ---------------------------------------------------------------------
  // x[T, C] = embedding of the batch's tokens.
  void EmbedForward(const TokenBatch& batch, float* x) const;
  void EmbedBackward(const TokenBatch& batch, const float* dx);
  // Runs layers [first, last) on x in place (stage input in, stage output out), saving what the
  // backward needs. external, when given, has one entry per layer of the range.
  std::unique_ptr<StageActivations> LayersForward(int first, int last, const TokenBatch& batch,
                                                  float* x,
                                                  const std::vector<ExternalKv>* external = nullptr);
  // dx: gradient at the stage output in, at the stage input out. With `deferred`, the linear
  // layers' weight gradients are not computed but kept there for ApplyWeightGrads (the norms'
  // small weight gradients are still made here).
  void LayersBackward(int first, int last, const TokenBatch& batch, const StageActivations& acts,
                      float* dx, const std::vector<ExternalKv>* external = nullptr,
                      DeferredWeightGrads* deferred = nullptr);
  // Accumulates the weight gradients a LayersBackward deferred, from the same activations.
  void ApplyWeightGrads(const TokenBatch& batch, const StageActivations& acts,
                        const DeferredWeightGrads& deferred);
  // Final norm, output head and loss on x[T, C]. Returns the sum of the token losses. When dx is
  // set, writes the gradient of (sum * grad_scale) with respect to x into it and accumulates the
  // head's parameter gradients.
  double HeadForwardBackward(const TokenBatch& batch, const float* x, float grad_scale, float* dx);

 private:
  Model(const ModelConfig& config, Allocator* allocator);
  void LayerForward(int l, const TokenBatch& batch, const StageActivations& acts,
                    const LayerActivations& a, float* x, const ExternalKv* external);
  void LayerBackward(int l, const TokenBatch& batch, const StageActivations& acts,
                     const LayerActivations& a, float* dx, const ExternalKv* external,
                     DeferredWeightGrads* deferred);
  const float* p(size_t offset) const { return params_.data() + offset; }
  float* g(size_t offset) { return grads_.data() + offset; }

  ModelConfig config_;
  ParamLayout layout_;
  Allocator* allocator_;
  Buffer params_;
  Buffer grads_;
  AttentionFn* attention_ = nullptr;
};

}  // namespace loom

#endif  // LOOM_SRC_MODEL_H_
