#include "src/cuda/elementwise.h"

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>

#include "src/kernels/cross_entropy.h"

namespace loom::gpu {
namespace {

constexpr int kWarp = 32;
// Elementwise kernels: grid-stride loops, so the grid is capped and a block's threads are few
// enough to keep many blocks resident.
constexpr int kThreads = 256;
constexpr int64_t kMaxBlocks = 8192;
// Row kernels (one block per row, or a block striding over rows).
constexpr int kRowThreads = 256;
constexpr int64_t kMaxRowBlocks = 1 << 20;
// A softmax row is 32K-128K wide: the widest block keeps the per-thread loop short.
constexpr int kSoftmaxThreads = 1024;
// Resident threads per SM on sm_80 and sm_90, to size grids that stride over rows.
constexpr int kThreadsPerSm = 2048;
// Dynamic shared memory above this needs an explicit opt-in per kernel.
constexpr size_t kDefaultSharedBytes = 48 * 1024;

__device__ __forceinline__ float ToF32(float x) { return x; }
__device__ __forceinline__ float ToF32(__nv_bfloat16 x) { return __bfloat162float(x); }

template <typename T>
__device__ __forceinline__ T FromF32(float x);
template <>
__device__ __forceinline__ float FromF32<float>(float x) {
  return x;
}
template <>
__device__ __forceinline__ __nv_bfloat16 FromF32<__nv_bfloat16>(float x) {
  return __float2bfloat16_rn(x);
}

struct SumOp {
  template <typename V>
  __device__ V operator()(V a, V b) const {
    return a + b;
  }
};
struct MaxOp {
  __device__ float operator()(float a, float b) const { return fmaxf(a, b); }
};

template <typename V, typename Op>
__device__ V WarpReduce(V v, Op op) {
  for (int offset = kWarp / 2; offset > 0; offset >>= 1) {
    v = op(v, __shfl_xor_sync(0xffffffffu, v, offset));
  }
  return v;
}

// The reduction over the block, returned to every thread. blockDim.x must be a multiple of 32
// (full-warp shuffles) and every thread must call it. scratch holds kWarp + 1 values; the barrier
// on entry lets back-to-back calls share it: nobody overwrites the previous result before all
// have read it.
template <typename V, typename Op>
__device__ V BlockReduce(V v, Op op, V identity, V* scratch) {
  const int lane = threadIdx.x % kWarp;
  const int warp = threadIdx.x / kWarp;
  const int n_warps = blockDim.x / kWarp;
  v = WarpReduce(v, op);
  __syncthreads();
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  if (warp == 0) {
    V w = lane < n_warps ? scratch[lane] : identity;
    w = WarpReduce(w, op);
    if (lane == 0) scratch[kWarp] = w;
  }
  __syncthreads();
  return scratch[kWarp];
}

int ElementwiseBlocks(int64_t n) {
  return static_cast<int>(std::min<int64_t>((n + kThreads - 1) / kThreads, kMaxBlocks));
}

// Threads for a row of `width` elements: whole warps, no more than the row needs.
int RowThreads(int64_t width, int max_threads) {
  const int64_t warps = (width + kWarp - 1) / kWarp;
  return static_cast<int>(std::clamp<int64_t>(warps * kWarp, kWarp, max_threads));
}

// ---------------------------------------------------------------------------------------------
// Embedding

template <typename T>
__global__ void EmbeddingForwardKernel(T* out, const int32_t* tokens, const float* table, int C) {
  const int64_t t = blockIdx.x;
  const float* src = table + static_cast<int64_t>(tokens[t]) * C;
  T* dst = out + t * C;
  for (int c = threadIdx.x; c < C; c += blockDim.x) dst[c] = FromF32<T>(src[c]);
}

// A token may repeat within the batch, so rows of dtable are shared between blocks.
__global__ void EmbeddingBackwardKernel(float* dtable, const int32_t* tokens, const float* dout,
                                        int C) {
  const int64_t t = blockIdx.x;
  float* dst = dtable + static_cast<int64_t>(tokens[t]) * C;
  const float* src = dout + t * C;
  for (int c = threadIdx.x; c < C; c += blockDim.x) atomicAdd(dst + c, src[c]);
}

// ---------------------------------------------------------------------------------------------
// RMSNorm

// The operations and their order follow src/kernels/rmsnorm.cc; only the sum of squares is
// reduced in a different order.
template <typename T>
__global__ void RmsNormForwardKernel(T* out, float* rstd, const T* inp, const float* weight, int C,
                                     float eps) {
  __shared__ float scratch[kWarp + 1];
  const int64_t t = blockIdx.x;
  const T* x = inp + t * C;
  T* y = out + t * C;
  float sum_sq = 0.0f;
  for (int c = threadIdx.x; c < C; c += blockDim.x) {
    const float v = ToF32(x[c]);
    sum_sq += v * v;
  }
  sum_sq = BlockReduce(sum_sq, SumOp(), 0.0f, scratch);
  const float r = 1.0f / sqrtf(sum_sq / static_cast<float>(C) + eps);
  for (int c = threadIdx.x; c < C; c += blockDim.x) y[c] = FromF32<T>(ToF32(x[c]) * r * weight[c]);
  if (threadIdx.x == 0) rstd[t] = r;
}

// dx_c = r w_c dy_c - x_c r^3 / C sum_k(dy_k w_k x_k); dw_c = sum_t dy_tc x_tc r_t.
// A block strides over rows and keeps its dweight partial in shared memory (dynamic, C floats).
// Channel c is always handled by thread c % blockDim.x, so the partial is private to that thread
// and needs no barrier; each block adds it into dweight once, at the end.
template <typename T>
__global__ void RmsNormBackwardKernel(float* dinp, float* dweight, const float* dout, const T* inp,
                                      const float* weight, const float* rstd, int n_tokens, int C) {
  extern __shared__ float dw[];
  __shared__ float scratch[kWarp + 1];
  for (int c = threadIdx.x; c < C; c += blockDim.x) dw[c] = 0.0f;
  for (int64_t t = blockIdx.x; t < n_tokens; t += gridDim.x) {
    const float* dy = dout + t * C;
    const T* x = inp + t * C;
    float* dx = dinp + t * C;
    const float r = rstd[t];
    float dot = 0.0f;
    for (int c = threadIdx.x; c < C; c += blockDim.x) dot += dy[c] * weight[c] * ToF32(x[c]);
    dot = BlockReduce(dot, SumOp(), 0.0f, scratch);
    const float coeff = dot * r * r * r / static_cast<float>(C);
    for (int c = threadIdx.x; c < C; c += blockDim.x) {
      const float xc = ToF32(x[c]);
      dx[c] += r * weight[c] * dy[c] - coeff * xc;
      dw[c] += dy[c] * xc * r;
    }
  }
  for (int c = threadIdx.x; c < C; c += blockDim.x) atomicAdd(dweight + c, dw[c]);
}

// ---------------------------------------------------------------------------------------------
// RoPE: a block strides over the (token, head) rows, a thread owns whole pairs (i, i + D/2).

// Both elements of a pair are loaded before either is stored, by the same thread, so out may
// alias inp (no __restrict__ anywhere here for that reason).
template <typename T>
__global__ void RopeForwardKernel(T* out, const T* inp, const float* cos, const float* sin,
                                  int64_t rows, int H, int D) {
  const int half = D / 2;
  for (int64_t row = blockIdx.x; row < rows; row += gridDim.x) {
    const int64_t t = row / H;
    const float* c = cos + t * half;
    const float* s = sin + t * half;
    const T* x = inp + row * D;
    T* y = out + row * D;
    for (int i = threadIdx.x; i < half; i += blockDim.x) {
      const float x1 = ToF32(x[i]);
      const float x2 = ToF32(x[i + half]);
      y[i] = FromF32<T>(x1 * c[i] - x2 * s[i]);
      y[i + half] = FromF32<T>(x2 * c[i] + x1 * s[i]);
    }
  }
}

// The transpose of the rotation by +angle is the rotation by -angle.
__global__ void RopeBackwardKernel(float* dinp, const float* dout, const float* cos,
                                   const float* sin, int64_t rows, int H, int D) {
  const int half = D / 2;
  for (int64_t row = blockIdx.x; row < rows; row += gridDim.x) {
    const int64_t t = row / H;
    const float* c = cos + t * half;
    const float* s = sin + t * half;
    const float* dy = dout + row * D;
    float* dx = dinp + row * D;
    for (int i = threadIdx.x; i < half; i += blockDim.x) {
      const float d1 = dy[i];
      const float d2 = dy[i + half];
      dx[i] += d1 * c[i] + d2 * s[i];
      dx[i + half] += d2 * c[i] - d1 * s[i];
    }
  }
}

// ---------------------------------------------------------------------------------------------
// SwiGLU

// 1 / (1 + e^-x): e^-x overflows to inf for very negative x, giving exactly 0, never NaN.
__device__ __forceinline__ float Sigmoid(float x) { return 1.0f / (1.0f + expf(-x)); }

template <typename T>
__global__ void SwiGluForwardKernel(T* out, const T* gate, const T* up, int64_t n) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const float g = ToF32(gate[i]);
    out[i] = FromF32<T>(g * Sigmoid(g) * ToF32(up[i]));
  }
}

// silu'(g) = s + g s (1 - s) with s = sigmoid(g).
template <typename T>
__global__ void SwiGluBackwardKernel(float* dgate, float* dup, const float* dout, const T* gate,
                                     const T* up, int64_t n) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const float g = ToF32(gate[i]);
    const float u = ToF32(up[i]);
    const float s = Sigmoid(g);
    const float silu = g * s;
    dgate[i] += dout[i] * u * (s + silu * (1.0f - s));
    dup[i] += dout[i] * silu;
  }
}

// ---------------------------------------------------------------------------------------------
// Softmax + cross-entropy: one block per row.

// Each thread keeps a running (max, sum of exp(x - max)) over its strided elements, so the row is
// read once for the statistics; the block then rescales the partial sums to the row max. No
// exponent is ever positive. The loss is formed in double as in the CPU kernel.
template <typename T>
__global__ void SoftmaxCrossEntropyKernel(float* dlogits, float* losses, double* loss_sum,
                                          const T* logits, const int32_t* targets, int V,
                                          float grad_scale) {
  __shared__ float scratch[kWarp + 1];
  const int64_t t = blockIdx.x;
  const int64_t offset = t * V;
  const int32_t target = targets[t];
  // The whole block takes this branch or none of it, so the barriers below stay uniform.
  if (target == kIgnoreTarget) {
    if (dlogits != nullptr) {
      for (int j = threadIdx.x; j < V; j += blockDim.x) dlogits[offset + j] = 0.0f;
    }
    if (losses != nullptr && threadIdx.x == 0) losses[t] = 0.0f;
    return;
  }
  const T* x = logits + offset;
  // Read before the barriers in BlockReduce, after which dlogits (which may be the fp32 logits
  // themselves) is written. A target outside [0, V) gives a NaN loss rather than a stray read.
  const bool target_in_row = target >= 0 && target < V;
  float target_logit = 0.0f;
  if (threadIdx.x == 0) target_logit = target_in_row ? ToF32(x[target]) : NAN;

  float m = -INFINITY;
  float s = 0.0f;
  for (int j = threadIdx.x; j < V; j += blockDim.x) {
    const float v = ToF32(x[j]);
    if (v > m) {
      s = s * expf(m - v) + 1.0f;
      m = v;
    } else {
      s += expf(v - m);
    }
  }
  const float row_max = BlockReduce(m, MaxOp(), -INFINITY, scratch);
  // A thread with no elements has s = 0 and m = -inf; skipping it avoids exp(-inf - -inf) = NaN,
  // while a NaN s (a NaN logit) still propagates.
  const float part = s == 0.0f ? 0.0f : s * expf(m - row_max);
  const float sum_exp = BlockReduce(part, SumOp(), 0.0f, scratch);

  if (threadIdx.x == 0) {
    const double loss = log(static_cast<double>(sum_exp)) +
                        (static_cast<double>(row_max) - static_cast<double>(target_logit));
    if (losses != nullptr) losses[t] = static_cast<float>(loss);
    if (loss_sum != nullptr) atomicAdd(loss_sum, loss);
  }
  if (dlogits == nullptr) return;
  const float scale =
      static_cast<float>(static_cast<double>(grad_scale) / static_cast<double>(sum_exp));
  for (int j = threadIdx.x; j < V; j += blockDim.x) {
    float g = expf(ToF32(x[j]) - row_max) * scale;
    if (j == target) g -= grad_scale;
    dlogits[offset + j] = g;
  }
}

// ---------------------------------------------------------------------------------------------
// Small elementwise kernels, AdamW and the squared norm

template <typename T>
__global__ void AddKernel(T* out, const T* a, const T* b, int64_t n) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    out[i] = FromF32<T>(ToF32(a[i]) + ToF32(b[i]));
  }
}

template <typename Dst, typename Src>
__global__ void CastKernel(Dst* out, const Src* in, int64_t n) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    out[i] = FromF32<Dst>(ToF32(in[i]));
  }
}

__global__ void ScaleKernel(float* x, float scale, int64_t n) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    x[i] *= scale;
  }
}

__global__ void SumSquaresKernel(double* sum, const float* x, int64_t n) {
  __shared__ double scratch[kWarp + 1];
  double acc = 0.0;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const double v = x[i];
    acc += v * v;
  }
  acc = BlockReduce(acc, SumOp(), 0.0, scratch);
  if (threadIdx.x == 0) atomicAdd(sum, acc);
}

// The _rn intrinsics keep nvcc from contracting multiply-adds into FMAs: every operation rounds
// on its own, in the order of src/adamw.cc, so the update does not depend on the compiler.
__global__ void AdamWKernel(float* params, const float* grads, float* m, float* v, int64_t n,
                            float decay, float beta1, float beta2, float eps, float step_size,
                            float bc2_sqrt) {
  const float one_minus_b1 = __fsub_rn(1.0f, beta1);
  const float one_minus_b2 = __fsub_rn(1.0f, beta2);
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const float g = grads[i];
    const float p = __fmul_rn(params[i], decay);
    const float mi = __fadd_rn(__fmul_rn(beta1, m[i]), __fmul_rn(one_minus_b1, g));
    const float vi = __fadd_rn(__fmul_rn(beta2, v[i]), __fmul_rn(__fmul_rn(one_minus_b2, g), g));
    const float denom = __fadd_rn(__fdiv_rn(__fsqrt_rn(vi), bc2_sqrt), eps);
    m[i] = mi;
    v[i] = vi;
    params[i] = __fsub_rn(p, __fdiv_rn(__fmul_rn(step_size, mi), denom));
  }
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// Launchers

template <typename T>
cudaError_t EmbeddingForward(T* out, const int32_t* tokens, const float* table, int n_tokens,
                             int C, cudaStream_t stream) {
  if (n_tokens <= 0 || C <= 0) return cudaSuccess;
  EmbeddingForwardKernel<T><<<n_tokens, RowThreads(C, kRowThreads), 0, stream>>>(out, tokens,
                                                                                  table, C);
  return cudaGetLastError();
}

cudaError_t EmbeddingBackward(float* dtable, const int32_t* tokens, const float* dout,
                              int n_tokens, int C, cudaStream_t stream) {
  if (n_tokens <= 0 || C <= 0) return cudaSuccess;
  EmbeddingBackwardKernel<<<n_tokens, RowThreads(C, kRowThreads), 0, stream>>>(dtable, tokens,
                                                                               dout, C);
  return cudaGetLastError();
}

template <typename T>
cudaError_t RmsNormForward(T* out, float* rstd, const T* inp, const float* weight, int n_tokens,
                           int C, float eps, cudaStream_t stream) {
  if (n_tokens <= 0 || C <= 0) return cudaSuccess;
  RmsNormForwardKernel<T><<<n_tokens, RowThreads(C, kRowThreads), 0, stream>>>(out, rstd, inp,
                                                                               weight, C, eps);
  return cudaGetLastError();
}

template <typename T>
cudaError_t RmsNormBackward(float* dinp, float* dweight, const float* dout, const T* inp,
                            const float* weight, const float* rstd, int n_tokens, int C,
                            cudaStream_t stream) {
  if (n_tokens <= 0 || C <= 0) return cudaSuccess;
  int device = 0;
  int sms = 0;
  cudaError_t err = cudaGetDevice(&device);
  if (err != cudaSuccess) return err;
  err = cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device);
  if (err != cudaSuccess) return err;
  const int threads = RowThreads(C, kRowThreads);
  const size_t shared_bytes = static_cast<size_t>(C) * sizeof(float);
  if (shared_bytes > kDefaultSharedBytes) {
    // Fails (cudaErrorInvalidValue) where C exceeds the device's opt-in limit: ~40K channels on
    // sm_80, ~56K on sm_90.
    err = cudaFuncSetAttribute(RmsNormBackwardKernel<T>,
                               cudaFuncAttributeMaxDynamicSharedMemorySize,
                               static_cast<int>(shared_bytes));
    if (err != cudaSuccess) return err;
  }
  // Enough blocks to fill the GPU; each adds its dweight partial once, so fewer blocks mean fewer
  // atomics.
  const int blocks = std::min(n_tokens, std::max(1, sms) * (kThreadsPerSm / threads));
  RmsNormBackwardKernel<T><<<blocks, threads, shared_bytes, stream>>>(dinp, dweight, dout, inp,
                                                                      weight, rstd, n_tokens, C);
  return cudaGetLastError();
}

template <typename T>
cudaError_t RopeForward(T* out, const T* inp, const float* cos, const float* sin, int n_tokens,
                        int H, int D, cudaStream_t stream) {
  const int64_t rows = static_cast<int64_t>(n_tokens) * H;
  if (n_tokens <= 0 || H <= 0 || D / 2 <= 0) return cudaSuccess;
  const int blocks = static_cast<int>(std::min(rows, kMaxRowBlocks));
  RopeForwardKernel<T><<<blocks, RowThreads(D / 2, kRowThreads), 0, stream>>>(out, inp, cos, sin,
                                                                              rows, H, D);
  return cudaGetLastError();
}

cudaError_t RopeBackward(float* dinp, const float* dout, const float* cos, const float* sin,
                         int n_tokens, int H, int D, cudaStream_t stream) {
  const int64_t rows = static_cast<int64_t>(n_tokens) * H;
  if (n_tokens <= 0 || H <= 0 || D / 2 <= 0) return cudaSuccess;
  const int blocks = static_cast<int>(std::min(rows, kMaxRowBlocks));
  RopeBackwardKernel<<<blocks, RowThreads(D / 2, kRowThreads), 0, stream>>>(dinp, dout, cos, sin,
                                                                           rows, H, D);
  return cudaGetLastError();
}

template <typename T>
cudaError_t SwiGluForward(T* out, const T* gate, const T* up, int64_t n, cudaStream_t stream) {
  if (n <= 0) return cudaSuccess;
  SwiGluForwardKernel<T><<<ElementwiseBlocks(n), kThreads, 0, stream>>>(out, gate, up, n);
  return cudaGetLastError();
}

template <typename T>
cudaError_t SwiGluBackward(float* dgate, float* dup, const float* dout, const T* gate, const T* up,
                           int64_t n, cudaStream_t stream) {
  if (n <= 0) return cudaSuccess;
  SwiGluBackwardKernel<T><<<ElementwiseBlocks(n), kThreads, 0, stream>>>(dgate, dup, dout, gate,
                                                                         up, n);
  return cudaGetLastError();
}

template <typename T>
cudaError_t SoftmaxCrossEntropy(float* dlogits, float* losses, double* loss_sum, const T* logits,
                                const int32_t* targets, int n_tokens, int V, float grad_scale,
                                cudaStream_t stream) {
  if (n_tokens <= 0 || V <= 0) return cudaSuccess;
  SoftmaxCrossEntropyKernel<T><<<n_tokens, RowThreads(V, kSoftmaxThreads), 0, stream>>>(
      dlogits, losses, loss_sum, logits, targets, V, grad_scale);
  return cudaGetLastError();
}

template <typename T>
cudaError_t Add(T* out, const T* a, const T* b, int64_t n, cudaStream_t stream) {
  if (n <= 0) return cudaSuccess;
  AddKernel<T><<<ElementwiseBlocks(n), kThreads, 0, stream>>>(out, a, b, n);
  return cudaGetLastError();
}

template <typename Dst, typename Src>
cudaError_t Cast(Dst* out, const Src* in, int64_t n, cudaStream_t stream) {
  if (n <= 0) return cudaSuccess;
  CastKernel<Dst, Src><<<ElementwiseBlocks(n), kThreads, 0, stream>>>(out, in, n);
  return cudaGetLastError();
}

cudaError_t Scale(float* x, float scale, int64_t n, cudaStream_t stream) {
  if (n <= 0) return cudaSuccess;
  ScaleKernel<<<ElementwiseBlocks(n), kThreads, 0, stream>>>(x, scale, n);
  return cudaGetLastError();
}

cudaError_t SumSquares(double* sum, const float* x, int64_t n, cudaStream_t stream) {
  if (n <= 0) return cudaSuccess;
  SumSquaresKernel<<<ElementwiseBlocks(n), kThreads, 0, stream>>>(sum, x, n);
  return cudaGetLastError();
}

cudaError_t AdamWUpdate(float* params, const float* grads, float* m, float* v, int64_t n,
                        float decay, float beta1, float beta2, float eps, float step_size,
                        float bc2_sqrt, cudaStream_t stream) {
  if (n <= 0) return cudaSuccess;
  AdamWKernel<<<ElementwiseBlocks(n), kThreads, 0, stream>>>(params, grads, m, v, n, decay, beta1,
                                                             beta2, eps, step_size, bc2_sqrt);
  return cudaGetLastError();
}

// ---------------------------------------------------------------------------------------------
// Instantiations

#define LOOM_INSTANTIATE_ELEMENTWISE(T)                                                          \
  template cudaError_t EmbeddingForward<T>(T*, const int32_t*, const float*, int, int,          \
                                           cudaStream_t);                                        \
  template cudaError_t RmsNormForward<T>(T*, float*, const T*, const float*, int, int, float,   \
                                         cudaStream_t);                                          \
  template cudaError_t RmsNormBackward<T>(float*, float*, const float*, const T*, const float*, \
                                          const float*, int, int, cudaStream_t);                 \
  template cudaError_t RopeForward<T>(T*, const T*, const float*, const float*, int, int, int,  \
                                      cudaStream_t);                                             \
  template cudaError_t SwiGluForward<T>(T*, const T*, const T*, int64_t, cudaStream_t);         \
  template cudaError_t SwiGluBackward<T>(float*, float*, const float*, const T*, const T*,      \
                                         int64_t, cudaStream_t);                                 \
  template cudaError_t SoftmaxCrossEntropy<T>(float*, float*, double*, const T*, const int32_t*, \
                                              int, int, float, cudaStream_t);                    \
  template cudaError_t Add<T>(T*, const T*, const T*, int64_t, cudaStream_t);

LOOM_INSTANTIATE_ELEMENTWISE(float)
LOOM_INSTANTIATE_ELEMENTWISE(__nv_bfloat16)
#undef LOOM_INSTANTIATE_ELEMENTWISE

template cudaError_t Cast<float, float>(float*, const float*, int64_t, cudaStream_t);
template cudaError_t Cast<float, __nv_bfloat16>(float*, const __nv_bfloat16*, int64_t,
                                                cudaStream_t);
template cudaError_t Cast<__nv_bfloat16, float>(__nv_bfloat16*, const float*, int64_t,
                                                cudaStream_t);
template cudaError_t Cast<__nv_bfloat16, __nv_bfloat16>(__nv_bfloat16*, const __nv_bfloat16*,
                                                        int64_t, cudaStream_t);

}  // namespace loom::gpu
