#include "src/model.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "src/kernels/cross_entropy.h"
#include "src/kernels/embedding.h"
#include "src/kernels/linear.h"
#include "src/kernels/rmsnorm.h"
#include "src/kernels/swiglu.h"
#include "src/random.h"

namespace loom {
namespace {

// The output head runs this many rows at a time, so the logits never need [T, vocab] at once.
constexpr int kHeadRows = 512;

void Add(float* out, const float* a, const float* b, int64_t n) {
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < n; ++i) out[i] = a[i] + b[i];
}

void Zero(float* x, int64_t n) { std::memset(x, 0, static_cast<size_t>(n) * sizeof(float)); }

AttentionShape ShapeOf(const ModelConfig& c) {
  return AttentionShape{c.n_heads, c.n_kv_heads, c.head_dim()};
}

}  // namespace

size_t DeferredWeightGrads::bytes() const {
  size_t total = 0;
  for (const Layer& l : layers_) {
    for (const Buffer* b : {&l.d_q, &l.d_k, &l.d_v, &l.d_o, &l.d_gate, &l.d_up, &l.d_down}) {
      total += b->bytes();
    }
  }
  return total;
}

size_t StageActivations::bytes() const {
  size_t total = 0;
  for (const Buffer& b : buffers_) total += b.bytes();
  return total;
}

absl::StatusOr<std::unique_ptr<Model>> Model::Create(const ModelConfig& config,
                                                     Allocator* allocator) {
  if (absl::Status s = config.Validate(); !s.ok()) return s;
  return std::unique_ptr<Model>(new Model(config, allocator));
}

Model::Model(const ModelConfig& config, Allocator* allocator)
    : config_(config),
      layout_(config),
      allocator_(allocator),
      params_(layout_.total_numel(), allocator),
      grads_(layout_.total_numel(), allocator) {}

void Model::InitWeights(uint64_t seed) {
  Random rng(seed);
  const double out_scale = 1.0 / std::sqrt(2.0 * config_.n_layers);
  for (const ParamEntry& e : layout_.entries()) {
    float* w = params_.data() + e.offset;
    if (e.shape.size() == 1) {  // RMSNorm gains
      std::fill(w, w + e.numel, 1.0f);
      continue;
    }
    const bool residual_out = e.name.ends_with("o_proj.weight") ||
                              e.name.ends_with("down_proj.weight");
    const double stddev = 0.02 * (residual_out ? out_scale : 1.0);
    for (size_t i = 0; i < e.numel; ++i) w[i] = static_cast<float>(stddev * rng.Normal());
  }
}

double Model::ForwardBackward(const TokenBatch& batch, float grad_scale) {
  const int T = batch.size(), C = config_.d_model, L = config_.n_layers;
  Buffer x(static_cast<size_t>(T) * C, allocator_);
  EmbedForward(batch, x.data());
  std::unique_ptr<StageActivations> acts = LayersForward(0, L, batch, x.data());
  Buffer dx(static_cast<size_t>(T) * C, allocator_);
  const double loss = HeadForwardBackward(batch, x.data(), grad_scale, dx.data());
  LayersBackward(0, L, batch, *acts, dx.data());
  EmbedBackward(batch, dx.data());
  return loss;
}

double Model::Loss(const TokenBatch& batch) {
  const int T = batch.size(), C = config_.d_model;
  Buffer x(static_cast<size_t>(T) * C, allocator_);
  EmbedForward(batch, x.data());
  std::unique_ptr<StageActivations> acts = LayersForward(0, config_.n_layers, batch, x.data());
  return HeadForwardBackward(batch, x.data(), 1.0f, nullptr);
}

void Model::EmbedForward(const TokenBatch& batch, float* x) const {
  EmbeddingForward(x, batch.tokens.data(), p(layout_.embed_tokens()), batch.size(),
                   config_.d_model);
}

void Model::EmbedBackward(const TokenBatch& batch, const float* dx) {
  EmbeddingBackward(g(layout_.embed_tokens()), batch.tokens.data(), dx, batch.size(),
                    config_.d_model);
}

std::unique_ptr<StageActivations> Model::LayersForward(int first, int last,
                                                       const TokenBatch& batch, float* x,
                                                       const std::vector<ExternalKv>* external) {
  const ModelConfig& c = config_;
  const size_t T = static_cast<size_t>(batch.size());
  const size_t C = c.d_model, Q = c.q_dim(), KV = c.kv_dim(), F = c.ffn_dim, H = c.n_heads;
  auto acts = std::unique_ptr<StageActivations>(new StageActivations());
  acts->T_ = batch.size();
  acts->first_ = first;
  acts->rope_ = MakeRopeTable(batch.pos.data(), batch.size(), c.head_dim(), c.rope_theta);
  const size_t per_layer = T * (4 * C + 2 + 2 * Q + 2 * KV + H + 3 * F);
  for (int l = first; l < last; ++l) {
    Buffer& buf = acts->buffers_.emplace_back(per_layer, allocator_);
    float* cursor = buf.data();
    auto take = [&cursor](size_t n) {
      float* out = cursor;
      cursor += n;
      return out;
    };
    LayerActivations a;
    a.x_in = take(T * C);
    a.ln1 = take(T * C);
    a.rstd1 = take(T);
    a.q = take(T * Q);
    a.k = take(T * KV);
    a.v = take(T * KV);
    a.att = take(T * Q);
    a.lse = take(T * H);
    a.x_mid = take(T * C);
    a.ln2 = take(T * C);
    a.rstd2 = take(T);
    a.gate = take(T * F);
    a.up = take(T * F);
    a.h = take(T * F);
    acts->layers_.push_back(a);
  }
  for (int l = first; l < last; ++l) {
    const ExternalKv* ext = external ? &(*external)[static_cast<size_t>(l - first)] : nullptr;
    LayerForward(l, batch, *acts, acts->layer(l), x, ext);
  }
  return acts;
}

void Model::LayerForward(int l, const TokenBatch& batch, const StageActivations& acts,
                         const LayerActivations& a, float* x, const ExternalKv* external) {
  const ModelConfig& c = config_;
  const LayerParams& w = layout_.layer(l);
  const int T = batch.size(), C = c.d_model, Q = c.q_dim(), KV = c.kv_dim(), F = c.ffn_dim;
  const AttentionShape shape = ShapeOf(c);
  const TokenSpans spans = batch.spans();

  std::memcpy(a.x_in, x, sizeof(float) * T * C);
  RmsNormForward(a.ln1, a.rstd1, a.x_in, p(w.input_norm), T, C, c.norm_eps);
  LinearForward(a.q, a.ln1, p(w.q_proj), T, C, Q);
  LinearForward(a.k, a.ln1, p(w.k_proj), T, C, KV);
  LinearForward(a.v, a.ln1, p(w.v_proj), T, C, KV);
  RopeForward(a.q, a.q, acts.rope(), T, c.n_heads, c.head_dim());
  RopeForward(a.k, a.k, acts.rope(), T, c.n_kv_heads, c.head_dim());
  if (attention_ != nullptr) {
    attention_->Forward(l, a.att, a.lse, a.q, a.k, a.v, spans);
  } else {
    AttentionForward(a.att, a.lse, a.q, a.k, a.v, spans, spans, shape, /*causal=*/true);
  }
  if (external != nullptr && external->spans.n > 0) {
    Buffer part(static_cast<size_t>(T) * Q, allocator_);
    Buffer part_lse(static_cast<size_t>(T) * c.n_heads, allocator_);
    AttentionForward(part.data(), part_lse.data(), a.q, external->k, external->v, spans,
                     external->spans, shape, /*causal=*/true);
    AttentionMerge(a.att, a.lse, part.data(), part_lse.data(), T, shape);
  }
  // x_mid = x_in + att @ Wo^T; x holds the projection as scratch.
  LinearForward(x, a.att, p(w.o_proj), T, Q, C);
  Add(a.x_mid, a.x_in, x, static_cast<int64_t>(T) * C);
  RmsNormForward(a.ln2, a.rstd2, a.x_mid, p(w.post_norm), T, C, c.norm_eps);
  LinearForward(a.gate, a.ln2, p(w.gate_proj), T, C, F);
  LinearForward(a.up, a.ln2, p(w.up_proj), T, C, F);
  SwiGluForward(a.h, a.gate, a.up, static_cast<int64_t>(T) * F);
  LinearForward(x, a.h, p(w.down_proj), T, F, C);
  Add(x, x, a.x_mid, static_cast<int64_t>(T) * C);
}

void Model::LayersBackward(int first, int last, const TokenBatch& batch,
                           const StageActivations& acts, float* dx,
                           const std::vector<ExternalKv>* external,
                           DeferredWeightGrads* deferred) {
  for (int l = last - 1; l >= first; --l) {
    const ExternalKv* ext = external ? &(*external)[static_cast<size_t>(l - first)] : nullptr;
    LayerBackward(l, batch, acts, acts.layer(l), dx, ext, deferred);
  }
}

void Model::ApplyWeightGrads(const TokenBatch& batch, const StageActivations& acts,
                             const DeferredWeightGrads& deferred) {
  const ModelConfig& c = config_;
  const int T = batch.size(), C = c.d_model, Q = c.q_dim(), KV = c.kv_dim(), F = c.ffn_dim;
  for (const DeferredWeightGrads::Layer& d : deferred.layers_) {
    const LayerParams& w = layout_.layer(d.layer);
    const LayerActivations& a = acts.layer(d.layer);
    LinearBackward(nullptr, g(w.down_proj), d.d_down.data(), a.h, p(w.down_proj), T, F, C);
    LinearBackward(nullptr, g(w.gate_proj), d.d_gate.data(), a.ln2, p(w.gate_proj), T, C, F);
    LinearBackward(nullptr, g(w.up_proj), d.d_up.data(), a.ln2, p(w.up_proj), T, C, F);
    LinearBackward(nullptr, g(w.o_proj), d.d_o.data(), a.att, p(w.o_proj), T, Q, C);
    LinearBackward(nullptr, g(w.q_proj), d.d_q.data(), a.ln1, p(w.q_proj), T, C, Q);
    LinearBackward(nullptr, g(w.k_proj), d.d_k.data(), a.ln1, p(w.k_proj), T, C, KV);
    LinearBackward(nullptr, g(w.v_proj), d.d_v.data(), a.ln1, p(w.v_proj), T, C, KV);
  }
}

void Model::LayerBackward(int l, const TokenBatch& batch, const StageActivations& acts,
                          const LayerActivations& a, float* dx, const ExternalKv* external,
                          DeferredWeightGrads* deferred) {
  const ModelConfig& c = config_;
  const LayerParams& w = layout_.layer(l);
  const size_t T = static_cast<size_t>(batch.size());
  const int Ti = batch.size(), C = c.d_model, Q = c.q_dim(), KV = c.kv_dim(), F = c.ffn_dim;
  const AttentionShape shape = ShapeOf(c);
  const TokenSpans spans = batch.spans();

  // One scratch buffer for the layer's gradients; zero-filled by the allocator.
  Buffer scratch(T * (std::max<size_t>(3 * F, Q + KV) + C + 2 * Q + 2 * KV + c.n_heads),
                 allocator_);
  float* cursor = scratch.data();
  float* big = cursor;  // MLP gradients first, then reused for attention's
  cursor += T * std::max<size_t>(3 * F, Q + KV);
  float* dln = cursor;
  cursor += T * C;
  float* dq_rot = cursor;
  cursor += T * Q;
  float* datt = cursor;
  cursor += T * Q;
  float* dk_rot = cursor;
  cursor += T * KV;
  float* dv = cursor;
  cursor += T * KV;
  float* delta = cursor;

  // Deferring: each linear layer's output gradient is kept (its scratch is reused below) and its
  // weight gradient left out here.
  DeferredWeightGrads::Layer* keep = nullptr;
  if (deferred != nullptr) {
    keep = &deferred->layers_.emplace_back();
    keep->layer = l;
  }
  auto weight_grad = [&](size_t offset, Buffer* kept, const float* dout, size_t width) -> float* {
    if (keep == nullptr) return g(offset);
    *kept = Buffer(T * width, allocator_);
    std::memcpy(kept->data(), dout, T * width * sizeof(float));
    return nullptr;
  };

  // MLP: x_out = x_mid + down(silu(gate) * up).
  float* dh = big;
  float* dgate = big + T * F;
  float* dup = big + 2 * T * F;
  LinearBackward(dh, weight_grad(w.down_proj, keep ? &keep->d_down : nullptr, dx, C), dx, a.h,
                 p(w.down_proj), Ti, F, C);
  SwiGluBackward(dgate, dup, dh, a.gate, a.up, static_cast<int64_t>(T) * F);
  LinearBackward(dln, weight_grad(w.gate_proj, keep ? &keep->d_gate : nullptr, dgate, F), dgate,
                 a.ln2, p(w.gate_proj), Ti, C, F);
  LinearBackward(dln, weight_grad(w.up_proj, keep ? &keep->d_up : nullptr, dup, F), dup, a.ln2,
                 p(w.up_proj), Ti, C, F);
  RmsNormBackward(dx, g(w.post_norm), dln, a.x_mid, p(w.post_norm), a.rstd2, Ti, C);

  // Attention: x_mid = x_in + o_proj(attention(rope(q), rope(k), v)).
  LinearBackward(datt, weight_grad(w.o_proj, keep ? &keep->d_o : nullptr, dx, C), dx, a.att,
                 p(w.o_proj), Ti, Q, C);
  AttentionBackwardDelta(delta, datt, a.att, Ti, shape);
  if (attention_ != nullptr) {
    attention_->Backward(l, dq_rot, dk_rot, dv, datt, a.q, a.k, a.v, a.lse, delta, spans);
  } else {
    AttentionBackward(dq_rot, dk_rot, dv, datt, a.q, a.k, a.v, a.lse, delta, spans, spans, shape,
                      /*causal=*/true);
  }
  if (external != nullptr && external->spans.n > 0) {
    // The external keys' gradients go to their owner; with no owner they are computed into a
    // throwaway buffer so that dq is still complete.
    Buffer sink;
    float* ext_dk = external->dk;
    float* ext_dv = external->dv;
    if (ext_dk == nullptr || ext_dv == nullptr) {
      sink = Buffer(2 * static_cast<size_t>(external->spans.n) * KV, allocator_);
      ext_dk = ext_dk ? ext_dk : sink.data();
      ext_dv = ext_dv ? ext_dv : sink.data() + static_cast<size_t>(external->spans.n) * KV;
    }
    AttentionBackward(dq_rot, ext_dk, ext_dv, datt, a.q, external->k, external->v, a.lse, delta,
                      spans, external->spans, shape, /*causal=*/true);
  }
  float* dq = big;  // the MLP's scratch is free again
  float* dk = big + T * Q;
  Zero(big, static_cast<int64_t>(T) * (Q + KV));
  RopeBackward(dq, dq_rot, acts.rope(), Ti, c.n_heads, c.head_dim());
  RopeBackward(dk, dk_rot, acts.rope(), Ti, c.n_kv_heads, c.head_dim());
  Zero(dln, static_cast<int64_t>(T) * C);
  LinearBackward(dln, weight_grad(w.q_proj, keep ? &keep->d_q : nullptr, dq, Q), dq, a.ln1,
                 p(w.q_proj), Ti, C, Q);
  LinearBackward(dln, weight_grad(w.k_proj, keep ? &keep->d_k : nullptr, dk, KV), dk, a.ln1,
                 p(w.k_proj), Ti, C, KV);
  LinearBackward(dln, weight_grad(w.v_proj, keep ? &keep->d_v : nullptr, dv, KV), dv, a.ln1,
                 p(w.v_proj), Ti, C, KV);
  RmsNormBackward(dx, g(w.input_norm), dln, a.x_in, p(w.input_norm), a.rstd1, Ti, C);
}

double Model::HeadForwardBackward(const TokenBatch& batch, const float* x, float grad_scale,
                                  float* dx) {
  const ModelConfig& c = config_;
  const int T = batch.size(), C = c.d_model, V = c.vocab_size;
  Buffer lnf(static_cast<size_t>(T) * C, allocator_);
  Buffer rstd(static_cast<size_t>(T), allocator_);
  Buffer dlnf(dx ? static_cast<size_t>(T) * C : 0, allocator_);
  Buffer logits(static_cast<size_t>(std::min(T, kHeadRows)) * V, allocator_);
  RmsNormForward(lnf.data(), rstd.data(), x, p(layout_.final_norm()), T, C, c.norm_eps);
  double loss = 0.0;
  for (int r0 = 0; r0 < T; r0 += kHeadRows) {
    const int rows = std::min(kHeadRows, T - r0);
    const float* lnf_rows = lnf.data() + static_cast<size_t>(r0) * C;
    LinearForward(logits.data(), lnf_rows, p(layout_.lm_head()), rows, C, V);
    loss += SoftmaxCrossEntropy(logits.data(), nullptr, logits.data(), batch.targets.data() + r0,
                                rows, V, grad_scale);
    if (dx != nullptr) {
      LinearBackward(dlnf.data() + static_cast<size_t>(r0) * C, g(layout_.lm_head()),
                     logits.data(), lnf_rows, p(layout_.lm_head()), rows, C, V);
    }
  }
  if (dx != nullptr) {
    Zero(dx, static_cast<int64_t>(T) * C);
    RmsNormBackward(dx, g(layout_.final_norm()), dlnf.data(), x, p(layout_.final_norm()),
                    rstd.data(), T, C);
  }
  return loss;
}

}  // namespace loom
