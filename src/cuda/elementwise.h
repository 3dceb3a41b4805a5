// CUDA kernels for every layer of the model except the linear layers (cuBLASLt, gemm.h) and
// attention (flash_attention.h), with the CPU kernels' semantics (src/kernels/).
//
// Precision policy of the GPU path: activations are stored as T (float for the exact fp32 mode,
// __nv_bfloat16 for mixed precision); every gradient, every reduction and all arithmetic are
// fp32; parameters (master weights), their gradients and the AdamW state are fp32. So a kernel
// reads T activations and fp32 gradients, and writes T activations and fp32 gradients.
//
// Every function launches on `stream` and returns the launch's error (cudaSuccess, or e.g.
// cudaErrorInvalidConfiguration); errors in the kernel itself surface at the next synchronize.
// "Accumulates" means +=, as in the CPU kernels. Sizes are element counts; n = 0 is a no-op.
#ifndef LOOM_SRC_CUDA_ELEMENTWISE_H_
#define LOOM_SRC_CUDA_ELEMENTWISE_H_

#include <cuda_bf16.h>
#include <cuda_runtime_api.h>

#include <cstdint>

namespace loom::gpu {

// out[t, :] = table[tokens[t], :]; table fp32 [V, C] (the master weights).
template <typename T>
cudaError_t EmbeddingForward(T* out, const int32_t* tokens, const float* table, int n_tokens,
                             int C, cudaStream_t stream);
// dtable[tokens[t], :] += dout[t, :]
cudaError_t EmbeddingBackward(float* dtable, const int32_t* tokens, const float* dout,
                              int n_tokens, int C, cudaStream_t stream);

// out = inp * rstd * weight with rstd[t] = 1 / sqrt(mean(inp[t]^2) + eps); inp, out [T, C].
template <typename T>
cudaError_t RmsNormForward(T* out, float* rstd, const T* inp, const float* weight, int n_tokens,
                           int C, float eps, cudaStream_t stream);
// Accumulates dinp += d/dinp and dweight += d/dweight.
template <typename T>
cudaError_t RmsNormBackward(float* dinp, float* dweight, const float* dout, const T* inp,
                            const float* weight, const float* rstd, int n_tokens, int C,
                            cudaStream_t stream);

// Rotary embedding, "rotate half" (src/kernels/rope.h); cos, sin fp32 [T, D/2] (the host's
// RopeTable copied over). x [T, H, D]; out may alias inp.
template <typename T>
cudaError_t RopeForward(T* out, const T* inp, const float* cos, const float* sin, int n_tokens,
                        int H, int D, cudaStream_t stream);
// Accumulates dinp += R^T dout (dinp must not alias dout).
cudaError_t RopeBackward(float* dinp, const float* dout, const float* cos, const float* sin,
                         int n_tokens, int H, int D, cudaStream_t stream);

// out = silu(gate) * up.
template <typename T>
cudaError_t SwiGluForward(T* out, const T* gate, const T* up, int64_t n, cudaStream_t stream);
// Accumulates dgate += dout * up * silu'(gate), dup += dout * silu(gate).
template <typename T>
cudaError_t SwiGluBackward(float* dgate, float* dup, const float* dout, const T* gate, const T* up,
                           int64_t n, cudaStream_t stream);

// Fused softmax + cross-entropy over rows of logits [T, V] (src/kernels/cross_entropy.h):
// dlogits = grad_scale * (softmax - onehot) (zero rows for kIgnoreTarget = -1), losses[t] =
// -log softmax[target] (0 for ignored rows), and *loss_sum += the sum of the losses, in double.
// dlogits may be null (forward only); losses may be null.
template <typename T>
cudaError_t SoftmaxCrossEntropy(float* dlogits, float* losses, double* loss_sum, const T* logits,
                                const int32_t* targets, int n_tokens, int V, float grad_scale,
                                cudaStream_t stream);

// out = a + b (out may alias a or b).
template <typename T>
cudaError_t Add(T* out, const T* a, const T* b, int64_t n, cudaStream_t stream);
// out = in, converted (float <-> __nv_bfloat16, or the same type).
template <typename Dst, typename Src>
cudaError_t Cast(Dst* out, const Src* in, int64_t n, cudaStream_t stream);
// x *= scale.
cudaError_t Scale(float* x, float scale, int64_t n, cudaStream_t stream);
// *sum += sum of x[i]^2, accumulated in double (the gradient norm for clipping).
cudaError_t SumSquares(double* sum, const float* x, int64_t n, cudaStream_t stream);

// One AdamW update of n elements, in the same order of operations as src/adamw.cc:
//   params *= decay; m = b1 m + (1 - b1) g; v = b2 v + (1 - b2) g g;
//   params -= step_size * m / (sqrt(v) / bc2_sqrt + eps)
// decay = 1 - lr * weight_decay (1 for undecayed ranges), step_size = lr / bc1 and bc2_sqrt =
// sqrt(bc2) computed by the caller as the CPU optimizer does.
cudaError_t AdamWUpdate(float* params, const float* grads, float* m, float* v, int64_t n,
                        float decay, float beta1, float beta2, float eps, float step_size,
                        float bc2_sqrt, cudaStream_t stream);

}  // namespace loom::gpu

#endif  // LOOM_SRC_CUDA_ELEMENTWISE_H_
