// Linear layers through cuBLASLt, with the CPU kernel's layout (src/kernels/linear.h): row-major
// activations [T, features], weights [out_features, in_features].
//
// Two precisions. kFp32: fp32 operands with CUBLAS_COMPUTE_32F_PEDANTIC (plain 32F compute, still
// IEEE fp32, for shapes where cuBLASLt offers no pedantic kernel), so no TF32 or other
// reduced-precision shortcut: the exact mode that is compared with the CPU path at 1e-5.
// kBf16: bf16 operands (activations, the bf16 copy of the weights, output gradients) with fp32
// accumulation (CUBLAS_COMPUTE_32F); the tensor-core path used for training.
#ifndef LOOM_SRC_CUDA_GEMM_H_
#define LOOM_SRC_CUDA_GEMM_H_

#include "absl/status/status.h"
#include "src/cuda/device_buffer.h"
#include "src/cuda/device_context.h"

namespace loom::gpu {

enum class Precision { kFp32, kBf16 };
// The storage type of activations and GEMM operands in a precision.
inline DType OperandType(Precision p) { return p == Precision::kFp32 ? DType::kF32 : DType::kBF16; }

// Row-major D[m, n] = alpha * op(A) @ op(B) + beta * D, where op(A) is [m, k] (A stored [k, m]
// when trans_a) and op(B) is [k, n] (B stored [n, k] when trans_b). A and B have the operand type
// of `precision`; D is fp32 or that operand type (d_type). Runs on ctx's compute stream.
absl::Status Gemm(DeviceContext& ctx, Precision precision, bool trans_a, bool trans_b, int m,
                  int n, int k, float alpha, const void* A, const void* B, float beta, void* D,
                  DType d_type);

// out[T, OC] = inp[T, IC] @ weight[OC, IC]^T; overwrites out (of type out_type).
absl::Status LinearForward(DeviceContext& ctx, Precision precision, void* out, DType out_type,
                           const void* inp, const void* weight, int T, int IC, int OC);
// Accumulates (fp32): dinp[T, IC] += dout[T, OC] @ weight (skipped when dinp is null) and
// dweight[OC, IC] += dout^T @ inp (skipped when dweight is null). dout, inp and weight have the
// operand type of `precision`.
absl::Status LinearBackward(DeviceContext& ctx, Precision precision, float* dinp, float* dweight,
                            const void* dout, const void* inp, const void* weight, int T, int IC,
                            int OC);

}  // namespace loom::gpu

#endif  // LOOM_SRC_CUDA_GEMM_H_
