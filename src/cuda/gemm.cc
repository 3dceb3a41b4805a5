#include "src/cuda/gemm.h"

#include <cublasLt.h>
#include <cuda_bf16.h>
#include <cuda_runtime_api.h>

#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_format.h"
#include "src/cuda/cuda_check.h"
#include "src/status_macros.h"

namespace loom::gpu {
namespace {

// cuBLASLt is column-major. A row-major [r, c] matrix is the column-major [c, r] matrix of the
// same bytes, so the row-major D = op(A) op(B) is computed as the column-major
// D^T = op(B)^T op(A)^T: cuBLASLt's first operand is our B (transposed when trans_b), its second
// our A (transposed when trans_a), and its (m, n) is our (n, m).

// The largest power of two (at most 256, the most any cuBLASLt kernel asks for) dividing the
// address. An algorithm chosen for 256-byte aligned operands may use vector loads that fault or
// are refused on a weaker alignment, and activations inside a larger buffer need not be aligned,
// so the alignment is both part of the plan's key and the heuristic's preference.
uint32_t Alignment(const void* p) {
  const uintptr_t a = reinterpret_cast<uintptr_t>(p);
  if (a == 0) return 256;
  const uintptr_t low = a & (~a + 1);
  return low >= 256 ? 256u : static_cast<uint32_t>(low);
}

cudaDataType_t CudaType(DType t) { return t == DType::kF32 ? CUDA_R_32F : CUDA_R_16BF; }

using PlanKey = std::tuple<int /*device*/, cublasLtHandle_t, Precision, bool /*trans_a*/,
                           bool /*trans_b*/, int /*m*/, int /*n*/, int /*k*/, DType /*d_type*/,
                           bool /*beta != 0*/, uint32_t /*align A*/, uint32_t /*align B*/,
                           uint32_t /*align D*/, size_t /*workspace bytes*/>;

// Descriptors and the chosen algorithm for one GEMM problem: built once, reused by every step.
struct Plan {
  cublasLtMatmulDesc_t op = nullptr;
  cublasLtMatrixLayout_t a = nullptr;  // cuBLASLt's first operand (our B)
  cublasLtMatrixLayout_t b = nullptr;  // cuBLASLt's second operand (our A)
  cublasLtMatrixLayout_t d = nullptr;  // C and D (D is updated in place)
  cublasLtMatmulAlgo_t algo{};
  size_t workspace_bytes = 0;

  Plan() = default;
  Plan(const Plan&) = delete;
  Plan& operator=(const Plan&) = delete;
  ~Plan() {
    if (d != nullptr) (void)cublasLtMatrixLayoutDestroy(d);
    if (b != nullptr) (void)cublasLtMatrixLayoutDestroy(b);
    if (a != nullptr) (void)cublasLtMatrixLayoutDestroy(a);
    if (op != nullptr) (void)cublasLtMatmulDescDestroy(op);
  }
};

struct PreferenceDeleter {
  void operator()(cublasLtMatmulPreferenceOpaque_t* p) const {
    (void)cublasLtMatmulPreferenceDestroy(p);
  }
};

std::string Describe(Precision precision, bool trans_a, bool trans_b, int m, int n, int k,
                     DType d_type) {
  return absl::StrFormat("%dx%dx%d %s (%s, %s, D %s)", m, n, k,
                         precision == Precision::kFp32 ? "fp32" : "bf16", trans_a ? "A^T" : "A",
                         trans_b ? "B^T" : "B", DTypeName(d_type));
}

absl::StatusOr<std::unique_ptr<Plan>> BuildPlan(const DeviceContext& ctx, Precision precision,
                                                bool trans_a, bool trans_b, int m, int n, int k,
                                                DType d_type, uint32_t align_a, uint32_t align_b,
                                                uint32_t align_d, const std::string& what,
                                                bool pedantic) {
  auto plan = std::make_unique<Plan>();
  const cudaDataType_t operand = CudaType(OperandType(precision));
  const cublasComputeType_t compute = pedantic ? CUBLAS_COMPUTE_32F_PEDANTIC : CUBLAS_COMPUTE_32F;
  const std::string desc_what = "cublasLtMatmulDescCreate " + what;
  LOOM_RETURN_IF_ERROR(
      CublasStatus(cublasLtMatmulDescCreate(&plan->op, compute, CUDA_R_32F), desc_what));
  const cublasOperation_t op_first = trans_b ? CUBLAS_OP_T : CUBLAS_OP_N;
  const cublasOperation_t op_second = trans_a ? CUBLAS_OP_T : CUBLAS_OP_N;
  LOOM_RETURN_IF_ERROR(
      CublasStatus(cublasLtMatmulDescSetAttribute(plan->op, CUBLASLT_MATMUL_DESC_TRANSA, &op_first,
                                                  sizeof(op_first)),
                   desc_what));
  LOOM_RETURN_IF_ERROR(
      CublasStatus(cublasLtMatmulDescSetAttribute(plan->op, CUBLASLT_MATMUL_DESC_TRANSB, &op_second,
                                                  sizeof(op_second)),
                   desc_what));

  // Column-major shapes of the stored matrices (before op). Our B is row-major [k, n] (or
  // [n, k] when trans_b): column-major [n, k] with ld n (or [k, n] with ld k).
  const uint64_t M = static_cast<uint64_t>(m), N = static_cast<uint64_t>(n),
                 K = static_cast<uint64_t>(k);
  const std::string layout_what = "cublasLtMatrixLayoutCreate " + what;
  LOOM_RETURN_IF_ERROR(CublasStatus(
      trans_b ? cublasLtMatrixLayoutCreate(&plan->a, operand, K, N, static_cast<int64_t>(K))
              : cublasLtMatrixLayoutCreate(&plan->a, operand, N, K, static_cast<int64_t>(N)),
      layout_what));
  // Our A is row-major [m, k] (or [k, m] when trans_a): column-major [k, m] with ld k (or [m, k]
  // with ld m).
  LOOM_RETURN_IF_ERROR(CublasStatus(
      trans_a ? cublasLtMatrixLayoutCreate(&plan->b, operand, M, K, static_cast<int64_t>(M))
              : cublasLtMatrixLayoutCreate(&plan->b, operand, K, M, static_cast<int64_t>(K)),
      layout_what));
  // D row-major [m, n]: column-major [n, m] with ld n.
  LOOM_RETURN_IF_ERROR(CublasStatus(
      cublasLtMatrixLayoutCreate(&plan->d, CudaType(d_type), N, M, static_cast<int64_t>(N)),
      layout_what));

  const std::string heuristic_what = "cublasLtMatmulAlgoGetHeuristic " + what;
  cublasLtMatmulPreference_t raw_pref = nullptr;
  LOOM_RETURN_IF_ERROR(CublasStatus(cublasLtMatmulPreferenceCreate(&raw_pref), heuristic_what));
  std::unique_ptr<cublasLtMatmulPreferenceOpaque_t, PreferenceDeleter> pref(raw_pref);
  const uint64_t max_workspace = ctx.workspace_bytes();
  LOOM_RETURN_IF_ERROR(CublasStatus(
      cublasLtMatmulPreferenceSetAttribute(pref.get(), CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES,
                                           &max_workspace, sizeof(max_workspace)),
      heuristic_what));
  // cuBLASLt's A is our B and its B our A; C and D are the same buffer.
  const std::pair<cublasLtMatmulPreferenceAttributes_t, uint32_t> alignments[] = {
      {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, align_b},
      {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, align_a},
      {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, align_d},
      {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, align_d}};
  for (const auto& [attr, bytes] : alignments) {
    LOOM_RETURN_IF_ERROR(
        CublasStatus(cublasLtMatmulPreferenceSetAttribute(pref.get(), attr, &bytes, sizeof(bytes)),
                     heuristic_what));
  }
  cublasLtMatmulHeuristicResult_t result{};
  int found = 0;
  LOOM_RETURN_IF_ERROR(
      CublasStatus(cublasLtMatmulAlgoGetHeuristic(ctx.cublaslt(), plan->op, plan->a, plan->b,
                                                  plan->d, plan->d, pref.get(), 1, &result, &found),
                   heuristic_what));
  if (found == 0 || result.state != CUBLAS_STATUS_SUCCESS) {
    return CublasStatus(found == 0 ? CUBLAS_STATUS_NOT_SUPPORTED : result.state,
                        heuristic_what + ": no algorithm");
  }
  plan->algo = result.algo;
  plan->workspace_bytes = result.workspaceSize;
  return plan;
}

// The plan for a problem, built on first use. Plans are never freed: a training run has a few
// dozen shapes, and a plan must outlive every stream that may still be running its matmul.
absl::StatusOr<const Plan*> GetPlan(const DeviceContext& ctx, Precision precision, bool trans_a,
                                    bool trans_b, int m, int n, int k, const void* A, const void* B,
                                    bool beta_nonzero, const void* D, DType d_type) {
  static std::mutex* mu = new std::mutex();
  static auto* plans = new std::map<PlanKey, std::unique_ptr<Plan>>();
  const uint32_t align_a = Alignment(A), align_b = Alignment(B), align_d = Alignment(D);
  const PlanKey key =
      std::make_tuple(ctx.device(), ctx.cublaslt(), precision, trans_a, trans_b, m, n, k, d_type,
                      beta_nonzero, align_a, align_b, align_d, ctx.workspace_bytes());
  std::lock_guard<std::mutex> lock(*mu);
  auto it = plans->find(key);
  if (it == plans->end()) {
    const std::string what = Describe(precision, trans_a, trans_b, m, n, k, d_type);
    absl::StatusOr<std::unique_ptr<Plan>> built = absl::UnknownError("no plan");
    if (precision == Precision::kFp32) {
      // Pedantic fp32 rules out TF32 even under NVIDIA_TF32_OVERRIDE; where no cuBLASLt kernel
      // offers it, plain 32F compute with fp32 operands is still IEEE fp32 arithmetic.
      built = BuildPlan(ctx, precision, trans_a, trans_b, m, n, k, d_type, align_a, align_b,
                        align_d, what, /*pedantic=*/true);
    }
    if (!built.ok() || precision != Precision::kFp32) {
      built = BuildPlan(ctx, precision, trans_a, trans_b, m, n, k, d_type, align_a, align_b,
                        align_d, what, /*pedantic=*/false);
    }
    if (!built.ok()) return built.status();
    std::unique_ptr<Plan> plan = std::move(*built);
    it = plans->emplace(key, std::move(plan)).first;
  }
  return it->second.get();
}

// D = beta * D for a GEMM with k == 0 (an empty sum). beta 0 and 1 are the cases linear layers
// can meet (an empty input dimension); any other beta goes through the host, synchronously,
// which is slow but exact and needs no kernel.
absl::Status ScaleOnly(DeviceContext& ctx, int m, int n, float beta, void* D, DType d_type) {
  const size_t count = static_cast<size_t>(m) * static_cast<size_t>(n);
  const size_t bytes = count * DTypeBytes(d_type);
  if (beta == 1.0f) return absl::OkStatus();
  if (beta == 0.0f) {
    LOOM_CUDA_RETURN_IF_ERROR(cudaMemsetAsync(D, 0, bytes, ctx.compute()));
    return absl::OkStatus();
  }
  if (d_type == DType::kF32) {
    std::vector<float> host(count);
    LOOM_CUDA_RETURN_IF_ERROR(
        cudaMemcpyAsync(host.data(), D, bytes, cudaMemcpyDeviceToHost, ctx.compute()));
    LOOM_CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(ctx.compute()));
    for (float& x : host) x *= beta;
    LOOM_CUDA_RETURN_IF_ERROR(
        cudaMemcpyAsync(D, host.data(), bytes, cudaMemcpyHostToDevice, ctx.compute()));
    LOOM_CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(ctx.compute()));
  } else {
    std::vector<__nv_bfloat16> host(count);
    LOOM_CUDA_RETURN_IF_ERROR(
        cudaMemcpyAsync(host.data(), D, bytes, cudaMemcpyDeviceToHost, ctx.compute()));
    LOOM_CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(ctx.compute()));
    for (__nv_bfloat16& x : host) x = __float2bfloat16(beta * __bfloat162float(x));
    LOOM_CUDA_RETURN_IF_ERROR(
        cudaMemcpyAsync(D, host.data(), bytes, cudaMemcpyHostToDevice, ctx.compute()));
    LOOM_CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(ctx.compute()));
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status Gemm(DeviceContext& ctx, Precision precision, bool trans_a, bool trans_b, int m, int n,
                  int k, float alpha, const void* A, const void* B, float beta, void* D,
                  DType d_type) {
  if (m < 0 || n < 0 || k < 0) {
    return absl::InvalidArgumentError(
        absl::StrFormat("Gemm: negative size m=%d n=%d k=%d", m, n, k));
  }
  const DType operand = OperandType(precision);
  if (d_type != DType::kF32 && d_type != operand) {
    return absl::InvalidArgumentError(
        absl::StrFormat("Gemm %s: D must be f32 or the operand type %s, not %s",
                        Describe(precision, trans_a, trans_b, m, n, k, d_type), DTypeName(operand),
                        DTypeName(d_type)));
  }
  if (m == 0 || n == 0) return absl::OkStatus();
  if (D == nullptr || (k > 0 && (A == nullptr || B == nullptr))) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "Gemm %s: null operand", Describe(precision, trans_a, trans_b, m, n, k, d_type)));
  }
  if (k == 0) return ScaleOnly(ctx, m, n, beta, D, d_type);

  LOOM_ASSIGN_OR_RETURN(const Plan* plan, GetPlan(ctx, precision, trans_a, trans_b, m, n, k, A, B,
                                                  beta != 0.0f, D, d_type));
  const cublasStatus_t status =
      cublasLtMatmul(ctx.cublaslt(), plan->op, &alpha, B, plan->a, A, plan->b, &beta, D, plan->d, D,
                     plan->d, &plan->algo, ctx.workspace(), plan->workspace_bytes, ctx.compute());
  if (status != CUBLAS_STATUS_SUCCESS) {
    return CublasStatus(status,
                        "cublasLtMatmul " + Describe(precision, trans_a, trans_b, m, n, k, d_type));
  }
  return absl::OkStatus();
}

absl::Status LinearForward(DeviceContext& ctx, Precision precision, void* out, DType out_type,
                           const void* inp, const void* weight, int T, int IC, int OC) {
  if (T < 0 || IC < 0 || OC < 0) {
    return absl::InvalidArgumentError(
        absl::StrFormat("LinearForward: negative size T=%d IC=%d OC=%d", T, IC, OC));
  }
  // As the CPU kernel: an empty input dimension (IC == 0) writes zeros.
  return Gemm(ctx, precision, /*trans_a=*/false, /*trans_b=*/true, T, OC, IC, 1.0f, inp, weight,
              0.0f, out, out_type);
}

absl::Status LinearBackward(DeviceContext& ctx, Precision precision, float* dinp, float* dweight,
                            const void* dout, const void* inp, const void* weight, int T, int IC,
                            int OC) {
  if (T < 0 || IC < 0 || OC < 0) {
    return absl::InvalidArgumentError(
        absl::StrFormat("LinearBackward: negative size T=%d IC=%d OC=%d", T, IC, OC));
  }
  if (T == 0 || IC == 0 || OC == 0) return absl::OkStatus();
  // beta = 1: the gradients accumulate, as the CPU kernel's.
  if (dinp != nullptr) {
    LOOM_RETURN_IF_ERROR(Gemm(ctx, precision, /*trans_a=*/false, /*trans_b=*/false, T, IC, OC, 1.0f,
                              dout, weight, 1.0f, dinp, DType::kF32));
  }
  if (dweight != nullptr) {
    LOOM_RETURN_IF_ERROR(Gemm(ctx, precision, /*trans_a=*/true, /*trans_b=*/false, OC, IC, T, 1.0f,
                              dout, inp, 1.0f, dweight, DType::kF32));
  }
  return absl::OkStatus();
}

}  // namespace loom::gpu
