#include "src/cuda/gpu_model.h"

#include <cuda_bf16.h>
#include <cuda_runtime_api.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <memory>
#include <type_traits>
#include <utility>
#include <vector>

#include "absl/strings/str_format.h"
#include "src/cuda/cuda_check.h"
#include "src/cuda/elementwise.h"
#include "src/cuda/flash_attention.h"
#include "src/kernels/rope.h"
#include "src/status_macros.h"

namespace loom::gpu {
namespace {

// As in src/model.cc: the output head runs this many rows at a time, so the logits never need
// [T, vocab] at once.
constexpr int kHeadRows = 512;

template <typename Act>
constexpr DType kActivationType = std::is_same_v<Act, float> ? DType::kF32 : DType::kBF16;

// What one forward/backward pass needs of the model. The pass is templated on the activation
// type, which the header's private section cannot be, so it receives the model's pieces.
struct ModelPieces {
  DeviceContext* ctx;
  const ModelConfig* config;
  const ParamLayout* layout;
  Precision precision;
  const float* params;  // fp32 master weights (embedding table, norm gains)
  const void* weights;  // the same weights as GEMM operands (params itself in fp32 mode)
  float* grads;
};

// One layer's saved activations (LayerActivations of src/model.h), each in its own buffer so
// that every GEMM and attention operand starts on an allocator block boundary.
struct LayerBuffers {
  DeviceBuffer x_in, ln1, q, k, v, att, x_mid, ln2, gate, up, h;  // activation type
  DeviceBuffer rstd1, lse, rstd2;                                 // fp32
};

template <typename Act>
class Pass {
 public:
  Pass(const ModelPieces& m, const TokenBatch& batch)
      : m_(m),
        c_(*m.config),
        layout_(*m.layout),
        stream_(m.ctx->compute()),
        T_(batch.size()),
        batch_(batch) {}

  absl::StatusOr<double> Run(float grad_scale, bool backward) {
    const size_t T = static_cast<size_t>(T_);
    const size_t C = c_.d_model;
    LOOM_RETURN_IF_ERROR(Upload());
    LOOM_ASSIGN_OR_RETURN(DeviceBuffer loss, New(DType::kF64, 1));

    // Model::ForwardBackward: embed, layers forward, head (loss and dx), layers backward,
    // embedding backward. A forward-only pass reuses one set of layer buffers, as nothing is
    // kept for a backward.
    LOOM_ASSIGN_OR_RETURN(DeviceBuffer x, New(kActivationType<Act>, T * C));
    LOOM_CUDA_RETURN_IF_ERROR(EmbeddingForward<Act>(x.as<Act>(), tokens_.as<int32_t>(),
                                                    m_.params + layout_.embed_tokens(), T_,
                                                    c_.d_model, stream_));
    std::vector<LayerBuffers> acts(backward ? static_cast<size_t>(c_.n_layers) : 1);
    for (LayerBuffers& a : acts) LOOM_RETURN_IF_ERROR(AllocateLayer(a));
    for (int l = 0; l < c_.n_layers; ++l) {
      LOOM_RETURN_IF_ERROR(
          LayerForward(l, acts[backward ? static_cast<size_t>(l) : 0], x.as<Act>()));
    }
    DeviceBuffer dx;
    if (backward) {
      // Zero-filled by Create: the head's RmsNormBackward accumulates into it (Model zeroes dx).
      LOOM_ASSIGN_OR_RETURN(dx, New(DType::kF32, T * C));
    }
    LOOM_RETURN_IF_ERROR(
        Head(x.as<Act>(), grad_scale, backward ? dx.as<float>() : nullptr, loss.as<double>()));
    if (backward) {
      for (int l = c_.n_layers - 1; l >= 0; --l) {
        LOOM_RETURN_IF_ERROR(LayerBackward(l, acts[static_cast<size_t>(l)], dx.as<float>()));
      }
      LOOM_CUDA_RETURN_IF_ERROR(EmbeddingBackward(m_.grads + layout_.embed_tokens(),
                                                  tokens_.as<int32_t>(), dx.as<float>(), T_,
                                                  c_.d_model, stream_));
    }
    double host_loss = 0.0;
    LOOM_CUDA_RETURN_IF_ERROR(
        cudaMemcpyAsync(&host_loss, loss.data(), sizeof(double), cudaMemcpyDeviceToHost, stream_));
    // Before any buffer of this pass goes back to the allocator, and so that asynchronous kernel
    // errors surface in this call.
    LOOM_CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(stream_));
    return host_loss;
  }

 private:
  absl::StatusOr<DeviceBuffer> New(DType dtype, size_t numel) {
    return DeviceBuffer::Create(m_.ctx->allocator(), dtype, numel, stream_);
  }

  // The batch's arrays and its RoPE table, built on the host exactly as the CPU model does.
  absl::Status Upload() {
    const size_t T = static_cast<size_t>(T_);
    LOOM_ASSIGN_OR_RETURN(tokens_, New(DType::kI32, T));
    LOOM_ASSIGN_OR_RETURN(targets_, New(DType::kI32, T));
    LOOM_ASSIGN_OR_RETURN(doc_, New(DType::kI32, T));
    LOOM_ASSIGN_OR_RETURN(pos_, New(DType::kI32, T));
    LOOM_RETURN_IF_ERROR(tokens_.CopyFromHostI32(batch_.tokens.data(), T, stream_));
    LOOM_RETURN_IF_ERROR(targets_.CopyFromHostI32(batch_.targets.data(), T, stream_));
    LOOM_RETURN_IF_ERROR(doc_.CopyFromHostI32(batch_.doc.data(), T, stream_));
    LOOM_RETURN_IF_ERROR(pos_.CopyFromHostI32(batch_.pos.data(), T, stream_));
    const RopeTable rope = MakeRopeTable(batch_.pos.data(), T_, c_.head_dim(), c_.rope_theta);
    LOOM_ASSIGN_OR_RETURN(rope_cos_, New(DType::kF32, rope.cos.size()));
    LOOM_ASSIGN_OR_RETURN(rope_sin_, New(DType::kF32, rope.sin.size()));
    LOOM_RETURN_IF_ERROR(rope_cos_.CopyFromHost(rope.cos.data(), rope.cos.size(), stream_));
    LOOM_RETURN_IF_ERROR(rope_sin_.CopyFromHost(rope.sin.data(), rope.sin.size(), stream_));
    spans_ = DeviceSpans{doc_.as<int32_t>(), pos_.as<int32_t>(), T_};
    return absl::OkStatus();
  }

  absl::Status AllocateLayer(LayerBuffers& a) {
    const size_t T = static_cast<size_t>(T_);
    const size_t C = c_.d_model, Q = c_.q_dim(), KV = c_.kv_dim(), F = c_.ffn_dim, H = c_.n_heads;
    const DType at = kActivationType<Act>;
    const std::pair<DeviceBuffer*, size_t> typed[] = {
        {&a.x_in, T * C}, {&a.ln1, T * C}, {&a.q, T * Q},     {&a.k, T * KV},
        {&a.v, T * KV},   {&a.att, T * Q}, {&a.x_mid, T * C}, {&a.ln2, T * C},
        {&a.gate, T * F}, {&a.up, T * F},  {&a.h, T * F}};
    for (const auto& [buffer, numel] : typed) {
      LOOM_ASSIGN_OR_RETURN(*buffer, New(at, numel));
    }
    LOOM_ASSIGN_OR_RETURN(a.rstd1, New(DType::kF32, T));
    LOOM_ASSIGN_OR_RETURN(a.lse, New(DType::kF32, T * H));
    LOOM_ASSIGN_OR_RETURN(a.rstd2, New(DType::kF32, T));
    return absl::OkStatus();
  }

  const float* P(size_t offset) const { return m_.params + offset; }
  float* G(size_t offset) const { return m_.grads + offset; }
  // The weight at `offset` as a GEMM operand.
  const void* W(size_t offset) const { return static_cast<const Act*>(m_.weights) + offset; }

  AttentionShape Shape() const { return AttentionShape{c_.n_heads, c_.n_kv_heads, c_.head_dim()}; }

  absl::Status Linear(void* out, const void* inp, size_t weight, int IC, int OC) {
    return LinearForward(*m_.ctx, m_.precision, out, kActivationType<Act>, inp, W(weight), T_, IC,
                         OC);
  }

  // An fp32 gradient as a GEMM operand: itself in fp32 mode; in bf16 mode a bf16 copy in
  // `scratch`, which the stream order keeps intact until the GEMM that reads it has run.
  absl::StatusOr<const void*> Operand(const float* grad, int64_t n, DeviceBuffer& scratch) {
    if constexpr (std::is_same_v<Act, float>) {
      return static_cast<const void*>(grad);
    } else {
      if (scratch.numel() < static_cast<size_t>(n)) {
        return absl::InternalError(absl::StrFormat(
            "operand scratch of %d elements for a gradient of %d", scratch.numel(), n));
      }
      LOOM_CUDA_RETURN_IF_ERROR((Cast<Act, float>(scratch.as<Act>(), grad, n, stream_)));
      return static_cast<const void*>(scratch.data());
    }
  }

  absl::Status LayerForward(int l, LayerBuffers& a, Act* x) {
    const LayerParams& w = layout_.layer(l);
    const int C = c_.d_model, Q = c_.q_dim(), KV = c_.kv_dim(), F = c_.ffn_dim;
    const int64_t TC = static_cast<int64_t>(T_) * C;
    const int64_t TF = static_cast<int64_t>(T_) * F;
    Act* x_in = a.x_in.as<Act>();
    Act* ln1 = a.ln1.as<Act>();
    Act* q = a.q.as<Act>();
    Act* k = a.k.as<Act>();
    Act* v = a.v.as<Act>();
    Act* att = a.att.as<Act>();
    Act* x_mid = a.x_mid.as<Act>();
    Act* ln2 = a.ln2.as<Act>();
    Act* gate = a.gate.as<Act>();
    Act* up = a.up.as<Act>();
    Act* h = a.h.as<Act>();

    LOOM_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(x_in, x, static_cast<size_t>(TC) * sizeof(Act),
                                              cudaMemcpyDeviceToDevice, stream_));
    LOOM_CUDA_RETURN_IF_ERROR(RmsNormForward<Act>(ln1, a.rstd1.as<float>(), x_in, P(w.input_norm),
                                                  T_, C, c_.norm_eps, stream_));
    LOOM_RETURN_IF_ERROR(Linear(q, ln1, w.q_proj, C, Q));
    LOOM_RETURN_IF_ERROR(Linear(k, ln1, w.k_proj, C, KV));
    LOOM_RETURN_IF_ERROR(Linear(v, ln1, w.v_proj, C, KV));
    LOOM_CUDA_RETURN_IF_ERROR(RopeForward<Act>(q, q, rope_cos_.as<float>(), rope_sin_.as<float>(),
                                               T_, c_.n_heads, c_.head_dim(), stream_));
    LOOM_CUDA_RETURN_IF_ERROR(RopeForward<Act>(k, k, rope_cos_.as<float>(), rope_sin_.as<float>(),
                                               T_, c_.n_kv_heads, c_.head_dim(), stream_));
    LOOM_CUDA_RETURN_IF_ERROR(FlashAttentionForward<Act>(
        att, a.lse.as<float>(), q, k, v, spans_, spans_, Shape(), /*causal=*/true, stream_));
    // x_mid = x_in + att @ Wo^T; x holds the projection as scratch.
    LOOM_RETURN_IF_ERROR(Linear(x, att, w.o_proj, Q, C));
    LOOM_CUDA_RETURN_IF_ERROR(Add<Act>(x_mid, x_in, x, TC, stream_));
    LOOM_CUDA_RETURN_IF_ERROR(RmsNormForward<Act>(ln2, a.rstd2.as<float>(), x_mid, P(w.post_norm),
                                                  T_, C, c_.norm_eps, stream_));
    LOOM_RETURN_IF_ERROR(Linear(gate, ln2, w.gate_proj, C, F));
    LOOM_RETURN_IF_ERROR(Linear(up, ln2, w.up_proj, C, F));
    LOOM_CUDA_RETURN_IF_ERROR(SwiGluForward<Act>(h, gate, up, TF, stream_));
    LOOM_RETURN_IF_ERROR(Linear(x, h, w.down_proj, F, C));
    LOOM_CUDA_RETURN_IF_ERROR(Add<Act>(x, x, x_mid, TC, stream_));
    return absl::OkStatus();
  }

  absl::Status LayerBackward(int l, const LayerBuffers& a, float* dx) {
    const LayerParams& w = layout_.layer(l);
    const size_t T = static_cast<size_t>(T_);
    const int C = c_.d_model, Q = c_.q_dim(), KV = c_.kv_dim(), F = c_.ffn_dim;
    const int64_t TC = static_cast<int64_t>(T_) * C;
    const int64_t TQ = static_cast<int64_t>(T_) * Q;
    const int64_t TKV = static_cast<int64_t>(T_) * KV;
    const int64_t TF = static_cast<int64_t>(T_) * F;
    const AttentionShape shape = Shape();
    const float* rope_cos = rope_cos_.as<float>();
    const float* rope_sin = rope_sin_.as<float>();

    // The layer's gradient scratch, zero-filled by Create as the CPU's is by its allocator (every
    // kernel below accumulates).
    DeviceBuffer dh_b, dgate_b, dup_b, dln_b, dq_rot_b, datt_b, dk_rot_b, dv_b, delta_b, dq_b, dk_b,
        op_b;
    const std::pair<DeviceBuffer*, size_t> fp32[] = {
        {&dh_b, T * F},      {&dgate_b, T * F},  {&dup_b, T * F},
        {&dln_b, T * C},     {&dq_rot_b, T * Q}, {&datt_b, T * Q},
        {&dk_rot_b, T * KV}, {&dv_b, T * KV},    {&delta_b, T * c_.n_heads},
        {&dq_b, T * Q},      {&dk_b, T * KV}};
    for (const auto& [buffer, numel] : fp32) {
      LOOM_ASSIGN_OR_RETURN(*buffer, New(DType::kF32, numel));
    }
    if constexpr (!std::is_same_v<Act, float>) {
      // One bf16 copy of whichever output gradient the next GEMM reads.
      const size_t widest = T * static_cast<size_t>(std::max({C, Q, KV, F}));
      LOOM_ASSIGN_OR_RETURN(op_b, New(kActivationType<Act>, widest));
    }
    float* dh = dh_b.as<float>();
    float* dgate = dgate_b.as<float>();
    float* dup = dup_b.as<float>();
    float* dln = dln_b.as<float>();
    float* dq_rot = dq_rot_b.as<float>();
    float* datt = datt_b.as<float>();
    float* dk_rot = dk_rot_b.as<float>();
    float* dv = dv_b.as<float>();
    float* delta = delta_b.as<float>();
    float* dq = dq_b.as<float>();
    float* dk = dk_b.as<float>();
    const Act* x_in = a.x_in.as<Act>();
    const Act* ln1 = a.ln1.as<Act>();
    const Act* q = a.q.as<Act>();
    const Act* k = a.k.as<Act>();
    const Act* v = a.v.as<Act>();
    const Act* att = a.att.as<Act>();
    const Act* x_mid = a.x_mid.as<Act>();
    const Act* ln2 = a.ln2.as<Act>();
    const Act* gate = a.gate.as<Act>();
    const Act* up = a.up.as<Act>();
    const Act* h = a.h.as<Act>();
    auto linear_backward = [&](float* dinp, size_t weight, const float* dout, int64_t dout_numel,
                               const void* inp, int IC, int OC) -> absl::Status {
      LOOM_ASSIGN_OR_RETURN(const void* dout_op, Operand(dout, dout_numel, op_b));
      return LinearBackward(*m_.ctx, m_.precision, dinp, G(weight), dout_op, inp, W(weight), T_, IC,
                            OC);
    };

    // MLP: x_out = x_mid + down(silu(gate) * up).
    LOOM_RETURN_IF_ERROR(linear_backward(dh, w.down_proj, dx, TC, h, F, C));
    LOOM_CUDA_RETURN_IF_ERROR(SwiGluBackward<Act>(dgate, dup, dh, gate, up, TF, stream_));
    LOOM_RETURN_IF_ERROR(linear_backward(dln, w.gate_proj, dgate, TF, ln2, C, F));
    LOOM_RETURN_IF_ERROR(linear_backward(dln, w.up_proj, dup, TF, ln2, C, F));
    LOOM_CUDA_RETURN_IF_ERROR(RmsNormBackward<Act>(dx, G(w.post_norm), dln, x_mid, P(w.post_norm),
                                                   a.rstd2.as<float>(), T_, C, stream_));

    // Attention: x_mid = x_in + o_proj(attention(rope(q), rope(k), v)).
    LOOM_RETURN_IF_ERROR(linear_backward(datt, w.o_proj, dx, TC, att, Q, C));
    LOOM_CUDA_RETURN_IF_ERROR(FlashAttentionDelta<Act>(delta, datt, att, T_, shape, stream_));
    LOOM_CUDA_RETURN_IF_ERROR(FlashAttentionBackward<Act>(dq_rot, dk_rot, dv, datt, q, k, v,
                                                          a.lse.as<float>(), delta, spans_, spans_,
                                                          shape, /*causal=*/true, stream_));
    LOOM_CUDA_RETURN_IF_ERROR(
        RopeBackward(dq, dq_rot, rope_cos, rope_sin, T_, c_.n_heads, c_.head_dim(), stream_));
    LOOM_CUDA_RETURN_IF_ERROR(
        RopeBackward(dk, dk_rot, rope_cos, rope_sin, T_, c_.n_kv_heads, c_.head_dim(), stream_));
    // dln held the MLP input's gradient; the attention input's accumulates afresh.
    LOOM_RETURN_IF_ERROR(dln_b.Zero(stream_));
    LOOM_RETURN_IF_ERROR(linear_backward(dln, w.q_proj, dq, TQ, ln1, C, Q));
    LOOM_RETURN_IF_ERROR(linear_backward(dln, w.k_proj, dk, TKV, ln1, C, KV));
    LOOM_RETURN_IF_ERROR(linear_backward(dln, w.v_proj, dv, TKV, ln1, C, KV));
    LOOM_CUDA_RETURN_IF_ERROR(RmsNormBackward<Act>(dx, G(w.input_norm), dln, x_in, P(w.input_norm),
                                                   a.rstd1.as<float>(), T_, C, stream_));
    return absl::OkStatus();
  }

  // Final norm, output head and loss (Model::HeadForwardBackward). dx, when set, is zero and
  // receives the gradient of (loss sum * grad_scale) with respect to x.
  absl::Status Head(const Act* x, float grad_scale, float* dx, double* loss) {
    const size_t T = static_cast<size_t>(T_);
    const int C = c_.d_model, V = c_.vocab_size;
    const size_t chunk = static_cast<size_t>(std::min(T_, kHeadRows)) * V;
    LOOM_ASSIGN_OR_RETURN(DeviceBuffer lnf, New(kActivationType<Act>, T * C));
    LOOM_ASSIGN_OR_RETURN(DeviceBuffer rstd, New(DType::kF32, T));
    LOOM_ASSIGN_OR_RETURN(DeviceBuffer logits, New(kActivationType<Act>, chunk));
    DeviceBuffer dlnf, dlogits, dlogits_op;
    if (dx != nullptr) {
      LOOM_ASSIGN_OR_RETURN(dlnf, New(DType::kF32, T * C));
      LOOM_ASSIGN_OR_RETURN(dlogits, New(DType::kF32, chunk));
      if constexpr (!std::is_same_v<Act, float>) {
        LOOM_ASSIGN_OR_RETURN(dlogits_op, New(kActivationType<Act>, chunk));
      }
    }
    LOOM_CUDA_RETURN_IF_ERROR(RmsNormForward<Act>(
        lnf.as<Act>(), rstd.as<float>(), x, P(layout_.final_norm()), T_, C, c_.norm_eps, stream_));
    for (int r0 = 0; r0 < T_; r0 += kHeadRows) {
      const int rows = std::min(kHeadRows, T_ - r0);
      const Act* lnf_rows = lnf.as<Act>() + static_cast<size_t>(r0) * C;
      LOOM_RETURN_IF_ERROR(LinearForward(*m_.ctx, m_.precision, logits.data(), kActivationType<Act>,
                                         lnf_rows, W(layout_.lm_head()), rows, C, V));
      LOOM_CUDA_RETURN_IF_ERROR(SoftmaxCrossEntropy<Act>(
          dx != nullptr ? dlogits.as<float>() : nullptr, nullptr, loss, logits.as<Act>(),
          targets_.as<int32_t>() + r0, rows, V, grad_scale, stream_));
      if (dx != nullptr) {
        const int64_t n = static_cast<int64_t>(rows) * V;
        LOOM_ASSIGN_OR_RETURN(const void* dlogits_in, Operand(dlogits.as<float>(), n, dlogits_op));
        // Tied embeddings: lm_head() is the embedding's offset, so this accumulates into the
        // embedding's gradient as on the CPU.
        LOOM_RETURN_IF_ERROR(LinearBackward(
            *m_.ctx, m_.precision, dlnf.as<float>() + static_cast<size_t>(r0) * C,
            G(layout_.lm_head()), dlogits_in, lnf_rows, W(layout_.lm_head()), rows, C, V));
      }
    }
    if (dx != nullptr) {
      LOOM_CUDA_RETURN_IF_ERROR(RmsNormBackward<Act>(dx, G(layout_.final_norm()), dlnf.as<float>(),
                                                     x, P(layout_.final_norm()), rstd.as<float>(),
                                                     T_, C, stream_));
    }
    // The chunk buffers are reused by the next chunk and freed on return: the stream orders both
    // after the GEMMs that read them.
    return absl::OkStatus();
  }

  const ModelPieces m_;
  const ModelConfig& c_;
  const ParamLayout& layout_;
  const cudaStream_t stream_;
  const int T_;
  const TokenBatch& batch_;
  DeviceBuffer tokens_, targets_, doc_, pos_, rope_cos_, rope_sin_;
  DeviceSpans spans_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<GpuModel>> GpuModel::Create(const ModelConfig& config,
                                                           Precision precision,
                                                           DeviceContext* ctx) {
  if (ctx == nullptr) return absl::InvalidArgumentError("GpuModel needs a device context");
  LOOM_RETURN_IF_ERROR(config.Validate());
  // The fused attention's limits (flash_attention.h), reported here rather than as a launch
  // failure in the first step.
  const int D = config.head_dim();
  if (D % 8 != 0 || D > 256) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "model.d_model / model.n_heads = %d: the GPU attention needs a head_dim that is a "
        "multiple of 8 and at most 256",
        D));
  }
  auto model = std::unique_ptr<GpuModel>(new GpuModel(config, precision, ctx));
  LOOM_RETURN_IF_ERROR(model->Init());
  return model;
}

GpuModel::GpuModel(const ModelConfig& config, Precision precision, DeviceContext* ctx)
    : config_(config), layout_(config), precision_(precision), ctx_(ctx) {}

absl::Status GpuModel::Init() {
  LOOM_RETURN_IF_ERROR(ctx_->MakeCurrent());
  const size_t n = num_params();
  DeviceAllocator* alloc = ctx_->allocator();
  const cudaStream_t stream = ctx_->compute();
  for (DeviceBuffer* b : {&params_, &grads_, &adam_m_, &adam_v_}) {
    LOOM_ASSIGN_OR_RETURN(*b, DeviceBuffer::Create(alloc, DType::kF32, n, stream));
  }
  if (precision_ == Precision::kBf16) {
    LOOM_ASSIGN_OR_RETURN(params_op_, DeviceBuffer::Create(alloc, DType::kBF16, n, stream));
  }
  params_op_stale_ = true;
  LOOM_CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(stream));
  return absl::OkStatus();
}

absl::Status GpuModel::LoadParams(const float* host) {
  LOOM_RETURN_IF_ERROR(ctx_->MakeCurrent());
  LOOM_RETURN_IF_ERROR(params_.CopyFromHost(host, num_params(), ctx_->compute()));
  params_op_stale_ = true;
  return absl::OkStatus();
}

absl::Status GpuModel::ReadParams(float* host) const {
  LOOM_RETURN_IF_ERROR(ctx_->MakeCurrent());
  return params_.CopyToHost(host, num_params(), ctx_->compute());
}

absl::Status GpuModel::ReadGrads(float* host) const {
  LOOM_RETURN_IF_ERROR(ctx_->MakeCurrent());
  return grads_.CopyToHost(host, num_params(), ctx_->compute());
}

absl::Status GpuModel::ZeroGrads() {
  LOOM_RETURN_IF_ERROR(ctx_->MakeCurrent());
  LOOM_RETURN_IF_ERROR(grads_.Zero(ctx_->compute()));
  LOOM_CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(ctx_->compute()));
  return absl::OkStatus();
}

absl::StatusOr<double> GpuModel::ForwardBackward(const TokenBatch& batch, float grad_scale) {
  return Run(batch, grad_scale, /*backward=*/true);
}

absl::StatusOr<double> GpuModel::Loss(const TokenBatch& batch) {
  return Run(batch, 1.0f, /*backward=*/false);
}

absl::StatusOr<double> GpuModel::Run(const TokenBatch& batch, float grad_scale, bool backward) {
  LOOM_RETURN_IF_ERROR(batch.Validate(config_.vocab_size));
  // No tokens: no loss and no gradient, as on the CPU (and no zero-sized GEMM to launch).
  if (batch.size() == 0) return 0.0;
  LOOM_RETURN_IF_ERROR(ctx_->MakeCurrent());
  const cudaStream_t stream = ctx_->compute();
  const void* weights = params_.data();
  if (precision_ == Precision::kBf16) {
    if (params_op_stale_) {
      LOOM_CUDA_RETURN_IF_ERROR(
          (Cast<__nv_bfloat16, float>(params_op_.as<__nv_bfloat16>(), params_.as<float>(),
                                      static_cast<int64_t>(num_params()), stream)));
      params_op_stale_ = false;
    }
    weights = params_op_.data();
  }
  const ModelPieces pieces{ctx_,    &config_,          &layout_, precision_, params_.as<float>(),
                           weights, grads_.as<float>()};
  if (precision_ == Precision::kFp32) {
    return Pass<float>(pieces, batch).Run(grad_scale, backward);
  }
  return Pass<__nv_bfloat16>(pieces, batch).Run(grad_scale, backward);
}

absl::StatusOr<double> GpuModel::OptimizerStep(const AdamWConfig& adamw, float lr,
                                               float max_grad_norm) {
  LOOM_RETURN_IF_ERROR(ctx_->MakeCurrent());
  const cudaStream_t stream = ctx_->compute();
  const int64_t n = static_cast<int64_t>(num_params());
  float* params = params_.as<float>();
  float* grads = grads_.as<float>();

  // The norm and clipping of src/grad_clip.cc (ClipGradNorm), with its scale formula.
  LOOM_ASSIGN_OR_RETURN(DeviceBuffer sum,
                        DeviceBuffer::Create(ctx_->allocator(), DType::kF64, 1, stream));
  LOOM_CUDA_RETURN_IF_ERROR(SumSquares(sum.as<double>(), grads, n, stream));
  double sum_host = 0.0;
  LOOM_CUDA_RETURN_IF_ERROR(
      cudaMemcpyAsync(&sum_host, sum.data(), sizeof(double), cudaMemcpyDeviceToHost, stream));
  LOOM_CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(stream));
  const double norm = std::sqrt(sum_host);
  const double max_norm = static_cast<double>(max_grad_norm);
  if (max_norm > 0.0 && norm > max_norm) {
    const float scale = static_cast<float>(max_norm / (norm + 1e-6));
    LOOM_CUDA_RETURN_IF_ERROR(Scale(grads, scale, n, stream));
  }

  // AdamW::Step: the step count first, then the bias corrections in double, cast once.
  ++adam_step_;
  const float b1 = adamw.beta1, b2 = adamw.beta2, eps = adamw.eps;
  const double bc1 = 1.0 - std::pow(static_cast<double>(b1), static_cast<double>(adam_step_));
  const double bc2 = 1.0 - std::pow(static_cast<double>(b2), static_cast<double>(adam_step_));
  const float step_size = static_cast<float>(lr / bc1);
  const float bc2_sqrt = static_cast<float>(std::sqrt(bc2));
  for (const ParamEntry& e : layout_.entries()) {
    // Matrices (embeddings, projections, head) are decayed; RMSNorm gains are not.
    const float decay = e.shape.size() >= 2 ? 1.0f - lr * adamw.weight_decay : 1.0f;
    LOOM_CUDA_RETURN_IF_ERROR(
        AdamWUpdate(params + e.offset, grads + e.offset, adam_m_.as<float>() + e.offset,
                    adam_v_.as<float>() + e.offset, static_cast<int64_t>(e.numel), decay, b1, b2,
                    eps, step_size, bc2_sqrt, stream));
  }
  params_op_stale_ = true;
  LOOM_CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(stream));
  return norm;
}

size_t GpuModel::current_bytes() const { return ctx_->allocator()->current_bytes(); }
size_t GpuModel::peak_bytes() const { return ctx_->allocator()->peak_bytes(); }
void GpuModel::ResetPeakMemory() { ctx_->allocator()->ResetPeak(); }

}  // namespace loom::gpu
