// Fused (flash-style) attention on the GPU with the CPU kernel's contract (src/kernels/attention.h):
// grouped-query heads, packed documents given per token by (doc, pos), any offset between the
// query and key sets, causal or full, the log-sum-exp returned for merging partial results, and a
// backward from the final merged output and LSE. Tiles of queries stream over tiles of keys with
// an online softmax in fp32; a tile pair with no visible (doc, pos) pair is skipped.
//
// Storage: q, k, v and out are T (float or __nv_bfloat16), lse, delta and all gradients fp32
// (the precision policy in elementwise.h). Functions launch on `stream` and return the launch's
// error.
#ifndef LOOM_SRC_CUDA_FLASH_ATTENTION_H_
#define LOOM_SRC_CUDA_FLASH_ATTENTION_H_

#include <cuda_bf16.h>
#include <cuda_runtime_api.h>

#include <cstdint>

#include "src/kernels/attention.h"

namespace loom::gpu {

// Per-token document ids and positions in device memory.
struct DeviceSpans {
  const int32_t* doc = nullptr;
  const int32_t* pos = nullptr;
  int n = 0;
};

// q [Tq, n_heads, D], k and v [Tk, n_kv_heads, D]; out [Tq, n_heads, D], lse [Tq, n_heads]
// (natural log of the softmax denominator of the scores scaled by 1/sqrt(D)). A row with no
// visible key gets out = 0 and lse = -infinity. D must be a multiple of 8 and at most 256
// (cudaErrorInvalidValue otherwise).
template <typename T>
cudaError_t FlashAttentionForward(T* out, float* lse, const T* q, const T* k, const T* v,
                                  const DeviceSpans& q_spans, const DeviceSpans& k_spans,
                                  const AttentionShape& shape, bool causal, cudaStream_t stream);

// Folds a partial result over another key set into (out, lse), in place (AttentionMerge).
template <typename T>
cudaError_t FlashAttentionMerge(T* out, float* lse, const T* part_out, const float* part_lse,
                                int Tq, const AttentionShape& shape, cudaStream_t stream);

// delta[t, h] = sum_d dout[t, h, d] * out[t, h, d].
template <typename T>
cudaError_t FlashAttentionDelta(float* delta, const float* dout, const T* out, int Tq,
                                const AttentionShape& shape, cudaStream_t stream);

// Backward for one key set from the final lse and delta; accumulates (+=) into dq [Tq, n_heads,
// D], dk and dv [Tk, n_kv_heads, D].
template <typename T>
cudaError_t FlashAttentionBackward(float* dq, float* dk, float* dv, const float* dout, const T* q,
                                   const T* k, const T* v, const float* lse, const float* delta,
                                   const DeviceSpans& q_spans, const DeviceSpans& k_spans,
                                   const AttentionShape& shape, bool causal, cudaStream_t stream);

}  // namespace loom::gpu

#endif  // LOOM_SRC_CUDA_FLASH_ATTENTION_H_
