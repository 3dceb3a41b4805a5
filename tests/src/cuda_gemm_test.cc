// The cuBLASLt linear layers (src/cuda/gemm.h): Gemm against a double-precision host reference in
// every transpose combination, and LinearForward / LinearBackward against the CPU kernels.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <limits>
#include <utility>
#include <vector>

#include "tests/src/cuda_test_util.h"
#include "tests/src/test_util.h"

#ifdef LOOM_HAVE_CUDA
#include "absl/status/status.h"
#include "src/cuda/device_buffer.h"
#include "src/cuda/device_context.h"
#include "src/cuda/gemm.h"
#include "src/kernels/linear.h"
#endif

namespace loom {
namespace {

#ifdef LOOM_HAVE_CUDA
using gpu::DeviceBuffer;
using gpu::DeviceContext;
using gpu::DType;
using gpu::Precision;
using test::RelativeError;

// bf16 operands whose reference takes the same bf16-rounded values: the products are exact in
// fp32, so only fp32 accumulation remains (~1e-7 here); the bound leaves room for any summation
// order cuBLASLt picks, and is far below the ~4e-3 that unrounded inputs would give.
constexpr double kBf16OperandsF32OutTolerance = 1e-4;

#define ASSIGN_OR_FAIL(lhs, expr)                                     \
  auto lhs##_or_ = (expr);                                            \
  ASSERT_TRUE(lhs##_or_.ok()) << #expr << ": " << lhs##_or_.status(); \
  auto lhs = std::move(*lhs##_or_)

struct Shape {
  int m, n, k;
};
const Shape kShapes[] = {{1, 1, 1}, {7, 13, 5}, {130, 257, 65}, {64, 32, 128}};

// Row-major D[m, n] = alpha * op(A) op(B) + beta * D0 in double.
std::vector<double> ReferenceGemm(bool trans_a, bool trans_b, int m, int n, int k, double alpha,
                                  const std::vector<float>& A, const std::vector<float>& B,
                                  double beta, const std::vector<float>& D0) {
  std::vector<double> D(static_cast<size_t>(m) * n);
  for (int i = 0; i < m; ++i) {
    for (int j = 0; j < n; ++j) {
      double s = 0.0;
      for (int p = 0; p < k; ++p) {
        const size_t ai = trans_a ? static_cast<size_t>(p) * m + i : static_cast<size_t>(i) * k + p;
        const size_t bi = trans_b ? static_cast<size_t>(j) * k + p : static_cast<size_t>(p) * n + j;
        s += static_cast<double>(A[ai]) * B[bi];
      }
      const size_t idx = static_cast<size_t>(i) * n + j;
      D[idx] = alpha * s + (beta != 0.0 ? beta * D0[idx] : 0.0);
    }
  }
  return D;
}

// The values a device buffer of `dtype` holds for `host` (bf16 rounding included).
void RoundTrip(DeviceContext& ctx, const std::vector<float>& host, DType dtype,
               std::vector<float>* out) {
  ASSIGN_OR_FAIL(buf, gpu::ToDevice(ctx.allocator(), host, dtype, ctx.compute()));
  ASSIGN_OR_FAIL(back, gpu::ToHost(buf, ctx.compute()));
  *out = std::move(back);
}

struct GemmCase {
  Precision precision;
  DType d_type;
  bool trans_a, trans_b;
  Shape shape;
  float alpha, beta;
  // Operands start this many elements into their buffers, so they are not 256-byte aligned.
  int offset = 0;
};

// Runs one Gemm on random data and compares with the double reference at `tolerance`. With
// beta == 0, D starts as NaN: it must be overwritten, never read.
void CheckGemm(DeviceContext& ctx, const GemmCase& c, uint64_t seed, double tolerance) {
  const auto [m, n, k] = c.shape;
  const DType operand = gpu::OperandType(c.precision);
  const size_t a_size = static_cast<size_t>(m) * k, b_size = static_cast<size_t>(k) * n;
  const size_t d_size = static_cast<size_t>(m) * n;
  const size_t off = static_cast<size_t>(c.offset);
  std::vector<float> A = test::RandomVector(a_size + off, seed);
  std::vector<float> B = test::RandomVector(b_size + off, seed + 1);
  std::vector<float> D0 = test::RandomVector(d_size + off, seed + 2);
  if (c.beta == 0.0f) {
    for (size_t i = off; i < D0.size(); ++i) D0[i] = std::numeric_limits<float>::quiet_NaN();
  }
  std::vector<float> A_seen, B_seen, D0_seen;
  RoundTrip(ctx, A, operand, &A_seen);
  RoundTrip(ctx, B, operand, &B_seen);
  RoundTrip(ctx, D0, c.d_type, &D0_seen);
  if (::testing::Test::HasFatalFailure()) return;

  ASSIGN_OR_FAIL(a_dev, gpu::ToDevice(ctx.allocator(), A, operand, ctx.compute()));
  ASSIGN_OR_FAIL(b_dev, gpu::ToDevice(ctx.allocator(), B, operand, ctx.compute()));
  ASSIGN_OR_FAIL(d_dev, gpu::ToDevice(ctx.allocator(), D0, c.d_type, ctx.compute()));
  const size_t op_bytes = gpu::DTypeBytes(operand), d_bytes = gpu::DTypeBytes(c.d_type);
  const absl::Status status = gpu::Gemm(
      ctx, c.precision, c.trans_a, c.trans_b, m, n, k, c.alpha, a_dev.as<char>() + off * op_bytes,
      b_dev.as<char>() + off * op_bytes, c.beta, d_dev.as<char>() + off * d_bytes, c.d_type);
  ASSERT_TRUE(status.ok()) << status;
  ASSERT_TRUE(ctx.Synchronize().ok());
  ASSIGN_OR_FAIL(got_all, gpu::ToHost(d_dev, ctx.compute()));

  const std::vector<float> a_ref(A_seen.begin() + off, A_seen.end());
  const std::vector<float> b_ref(B_seen.begin() + off, B_seen.end());
  const std::vector<float> d0_ref(D0_seen.begin() + off, D0_seen.end());
  const std::vector<double> want =
      ReferenceGemm(c.trans_a, c.trans_b, m, n, k, c.alpha, a_ref, b_ref, c.beta, d0_ref);
  const std::vector<float> got(got_all.begin() + off, got_all.end());
  EXPECT_LE(RelativeError(got, want), tolerance);
  // The elements before the operand's start belong to someone else.
  for (size_t i = 0; i < off; ++i) EXPECT_EQ(got_all[i], D0_seen[i]) << "element " << i;
}

void CheckAllTransposes(DeviceContext& ctx, Precision precision, DType d_type, double tolerance) {
  uint64_t seed = 100;
  for (const Shape& s : kShapes) {
    for (int t = 0; t < 4; ++t) {
      for (float beta : {0.0f, 1.0f}) {
        const GemmCase c{precision, d_type, (t & 1) != 0, (t & 2) != 0, s, 0.75f, beta};
        SCOPED_TRACE(testing::Message()
                     << s.m << "x" << s.n << "x" << s.k << " trans_a " << c.trans_a << " trans_b "
                     << c.trans_b << " beta " << beta);
        CheckGemm(ctx, c, seed, tolerance);
        if (::testing::Test::HasFatalFailure()) return;
        seed += 10;
      }
    }
  }
}
#endif  // LOOM_HAVE_CUDA

TEST(CudaGemm, Fp32PedanticMatchesDoubleReference) {
#ifndef LOOM_HAVE_CUDA
  LOOM_GPU_SKIP_WITHOUT_CUDA();
#else
  LOOM_GPU_CONTEXT_OR_SKIP(ctx);
  CheckAllTransposes(*ctx, Precision::kFp32, DType::kF32, test::kGpuFp32Tolerance);
#endif
}

TEST(CudaGemm, Bf16WithFp32OutputMatchesDoubleReference) {
#ifndef LOOM_HAVE_CUDA
  LOOM_GPU_SKIP_WITHOUT_CUDA();
#else
  LOOM_GPU_CONTEXT_OR_SKIP(ctx);
  CheckAllTransposes(*ctx, Precision::kBf16, DType::kF32, kBf16OperandsF32OutTolerance);
#endif
}

TEST(CudaGemm, Bf16WithBf16OutputMatchesDoubleReference) {
#ifndef LOOM_HAVE_CUDA
  LOOM_GPU_SKIP_WITHOUT_CUDA();
#else
  LOOM_GPU_CONTEXT_OR_SKIP(ctx);
  CheckAllTransposes(*ctx, Precision::kBf16, DType::kBF16, test::kGpuBf16Tolerance);
#endif
}

// A plan is chosen per operand alignment: a shape first met with 256-byte aligned buffers must
// still be right (and not fault) when met again with operands one element into their buffers.
TEST(CudaGemm, UnalignedOperandsAfterAlignedOnesOfTheSameShape) {
#ifndef LOOM_HAVE_CUDA
  LOOM_GPU_SKIP_WITHOUT_CUDA();
#else
  LOOM_GPU_CONTEXT_OR_SKIP(ctx);
  const Shape s{96, 80, 72};
  for (Precision p : {Precision::kFp32, Precision::kBf16}) {
    const double tol =
        p == Precision::kFp32 ? test::kGpuFp32Tolerance : kBf16OperandsF32OutTolerance;
    for (int offset : {0, 1, 0}) {
      SCOPED_TRACE(testing::Message()
                   << "bf16 " << (p == Precision::kBf16) << " offset " << offset);
      CheckGemm(*ctx, GemmCase{p, DType::kF32, false, true, s, 1.0f, 1.0f, offset}, 7, tol);
      if (HasFatalFailure()) return;
    }
  }
#endif
}

// k == 0 is an empty sum: D = beta * D.
TEST(CudaGemm, EmptyInnerDimensionScalesD) {
#ifndef LOOM_HAVE_CUDA
  LOOM_GPU_SKIP_WITHOUT_CUDA();
#else
  LOOM_GPU_CONTEXT_OR_SKIP(ctx);
  const int m = 9, n = 11;
  for (auto [precision, d_type] :
       {std::pair{Precision::kFp32, DType::kF32}, std::pair{Precision::kBf16, DType::kF32},
        std::pair{Precision::kBf16, DType::kBF16}}) {
    for (float beta : {0.0f, 1.0f, 0.5f, -2.0f}) {
      SCOPED_TRACE(testing::Message() << "D " << gpu::DTypeName(d_type) << " beta " << beta);
      const std::vector<float> D0 = test::RandomVector(static_cast<size_t>(m) * n, 5);
      std::vector<float> D0_seen;
      RoundTrip(*ctx, D0, d_type, &D0_seen);
      if (HasFatalFailure()) return;
      ASSIGN_OR_FAIL(d_dev, gpu::ToDevice(ctx->allocator(), D0, d_type, ctx->compute()));
      const absl::Status status = gpu::Gemm(*ctx, precision, false, false, m, n, 0, 1.0f, nullptr,
                                            nullptr, beta, d_dev.data(), d_type);
      ASSERT_TRUE(status.ok()) << status;
      ASSERT_TRUE(ctx->Synchronize().ok());
      ASSIGN_OR_FAIL(got, gpu::ToHost(d_dev, ctx->compute()));
      std::vector<double> want(D0_seen.size());
      for (size_t i = 0; i < want.size(); ++i) want[i] = beta * static_cast<double>(D0_seen[i]);
      // Scaling by a power of two is exact in either type.
      EXPECT_EQ(RelativeError(got, want), 0.0);
    }
  }
#endif
}

TEST(CudaGemm, EmptyOutputIsANoOp) {
#ifndef LOOM_HAVE_CUDA
  LOOM_GPU_SKIP_WITHOUT_CUDA();
#else
  LOOM_GPU_CONTEXT_OR_SKIP(ctx);
  EXPECT_TRUE(gpu::Gemm(*ctx, Precision::kFp32, false, false, 0, 5, 3, 1.0f, nullptr, nullptr, 0.0f,
                        nullptr, DType::kF32)
                  .ok());
  EXPECT_TRUE(gpu::Gemm(*ctx, Precision::kBf16, true, true, 4, 0, 3, 1.0f, nullptr, nullptr, 1.0f,
                        nullptr, DType::kBF16)
                  .ok());
  EXPECT_TRUE(ctx->Synchronize().ok());
#endif
}

TEST(CudaGemm, RejectsBadArguments) {
#ifndef LOOM_HAVE_CUDA
  LOOM_GPU_SKIP_WITHOUT_CUDA();
#else
  LOOM_GPU_CONTEXT_OR_SKIP(ctx);
  ASSIGN_OR_FAIL(buf, DeviceBuffer::Create(ctx->allocator(), DType::kF32, 64, ctx->compute()));
  void* p = buf.data();
  auto gemm = [&](Precision precision, int m, int n, int k, DType d_type, const void* a = nullptr,
                  const void* b = nullptr, void* d = nullptr) {
    return gpu::Gemm(*ctx, precision, false, false, m, n, k, 1.0f, a ? a : p, b ? b : p, 0.0f,
                     d ? d : p, d_type);
  };
  EXPECT_EQ(gemm(Precision::kFp32, -1, 2, 2, DType::kF32).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(gemm(Precision::kFp32, 2, -1, 2, DType::kF32).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(gemm(Precision::kBf16, 2, 2, -3, DType::kF32).code(),
            absl::StatusCode::kInvalidArgument);
  // fp32 operands cannot produce bf16 D; no precision produces integer or double D.
  EXPECT_EQ(gemm(Precision::kFp32, 2, 2, 2, DType::kBF16).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(gemm(Precision::kBf16, 2, 2, 2, DType::kI32).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(gemm(Precision::kFp32, 2, 2, 2, DType::kF64).code(),
            absl::StatusCode::kInvalidArgument);
  // A wrong D type is an error even for an empty product.
  EXPECT_EQ(gemm(Precision::kFp32, 0, 2, 2, DType::kBF16).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(gpu::LinearForward(*ctx, Precision::kFp32, p, DType::kF32, p, p, -1, 2, 2).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(gpu::LinearForward(*ctx, Precision::kFp32, p, DType::kBF16, p, p, 2, 2, 2).code(),
            absl::StatusCode::kInvalidArgument);
  float* f = buf.as<float>();
  EXPECT_EQ(gpu::LinearBackward(*ctx, Precision::kFp32, f, f, p, p, p, 2, -2, 2).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(gpu::LinearBackward(*ctx, Precision::kBf16, f, f, p, p, p, 2, 2, -1).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(ctx->Synchronize().ok());
#endif
}

#ifdef LOOM_HAVE_CUDA
struct LinearShape {
  int T, IC, OC;
};
const LinearShape kLinearShapes[] = {{1, 1, 1}, {7, 13, 5}, {130, 65, 257}, {64, 96, 48}};

double Tolerance(Precision p) {
  return p == Precision::kFp32 ? test::kGpuFp32Tolerance : test::kGpuBf16Tolerance;
}

// The GPU forward (out of type out_type, pre-filled with NaN to show it is overwritten) against
// the CPU LinearForward on the same fp32 inputs.
void CheckForward(DeviceContext& ctx, Precision precision, DType out_type, const LinearShape& s,
                  uint64_t seed) {
  const DType operand = gpu::OperandType(precision);
  const std::vector<float> inp = test::RandomVector(static_cast<size_t>(s.T) * s.IC, seed);
  const std::vector<float> weight =
      test::RandomVector(static_cast<size_t>(s.OC) * s.IC, seed + 1, 0.5f);
  std::vector<float> want(static_cast<size_t>(s.T) * s.OC);
  LinearForward(want.data(), inp.data(), weight.data(), s.T, s.IC, s.OC);

  ASSIGN_OR_FAIL(inp_dev, gpu::ToDevice(ctx.allocator(), inp, operand, ctx.compute()));
  ASSIGN_OR_FAIL(w_dev, gpu::ToDevice(ctx.allocator(), weight, operand, ctx.compute()));
  ASSIGN_OR_FAIL(out_dev, gpu::ToDevice(ctx.allocator(),
                                        std::vector<float>(want.size(),
                                                           std::numeric_limits<float>::quiet_NaN()),
                                        out_type, ctx.compute()));
  const absl::Status status = gpu::LinearForward(ctx, precision, out_dev.data(), out_type,
                                                 inp_dev.data(), w_dev.data(), s.T, s.IC, s.OC);
  ASSERT_TRUE(status.ok()) << status;
  ASSERT_TRUE(ctx.Synchronize().ok());
  ASSIGN_OR_FAIL(got, gpu::ToHost(out_dev, ctx.compute()));
  EXPECT_LE(RelativeError(got, test::ToDouble(want)), Tolerance(precision));
}

// The GPU backward against the CPU LinearBackward, both accumulating into the same random
// pre-filled gradients; null outputs are skipped by both. Checks the accumulated result and,
// more strictly, the increment alone.
void CheckBackward(DeviceContext& ctx, Precision precision, const LinearShape& s, bool with_dinp,
                   bool with_dweight, uint64_t seed) {
  const DType operand = gpu::OperandType(precision);
  const size_t inp_size = static_cast<size_t>(s.T) * s.IC;
  const size_t w_size = static_cast<size_t>(s.OC) * s.IC;
  const size_t out_size = static_cast<size_t>(s.T) * s.OC;
  const std::vector<float> inp = test::RandomVector(inp_size, seed);
  const std::vector<float> weight = test::RandomVector(w_size, seed + 1, 0.5f);
  const std::vector<float> dout = test::RandomVector(out_size, seed + 2);
  const std::vector<float> dinp0 = test::RandomVector(inp_size, seed + 3);
  const std::vector<float> dweight0 = test::RandomVector(w_size, seed + 4);
  std::vector<float> dinp_want = dinp0, dweight_want = dweight0;
  LinearBackward(with_dinp ? dinp_want.data() : nullptr,
                 with_dweight ? dweight_want.data() : nullptr, dout.data(), inp.data(),
                 weight.data(), s.T, s.IC, s.OC);

  ASSIGN_OR_FAIL(inp_dev, gpu::ToDevice(ctx.allocator(), inp, operand, ctx.compute()));
  ASSIGN_OR_FAIL(w_dev, gpu::ToDevice(ctx.allocator(), weight, operand, ctx.compute()));
  ASSIGN_OR_FAIL(dout_dev, gpu::ToDevice(ctx.allocator(), dout, operand, ctx.compute()));
  ASSIGN_OR_FAIL(dinp_dev, gpu::ToDevice(ctx.allocator(), dinp0, DType::kF32, ctx.compute()));
  ASSIGN_OR_FAIL(dw_dev, gpu::ToDevice(ctx.allocator(), dweight0, DType::kF32, ctx.compute()));
  const absl::Status status =
      gpu::LinearBackward(ctx, precision, with_dinp ? dinp_dev.as<float>() : nullptr,
                          with_dweight ? dw_dev.as<float>() : nullptr, dout_dev.data(),
                          inp_dev.data(), w_dev.data(), s.T, s.IC, s.OC);
  ASSERT_TRUE(status.ok()) << status;
  ASSERT_TRUE(ctx.Synchronize().ok());
  ASSIGN_OR_FAIL(dinp_got, gpu::ToHost(dinp_dev, ctx.compute()));
  ASSIGN_OR_FAIL(dw_got, gpu::ToHost(dw_dev, ctx.compute()));

  auto increment = [](const std::vector<float>& after, const std::vector<float>& before) {
    std::vector<double> d(after.size());
    for (size_t i = 0; i < d.size(); ++i) {
      d[i] = static_cast<double>(after[i]) - static_cast<double>(before[i]);
    }
    return d;
  };
  const double tol = Tolerance(precision);
  if (with_dinp) {
    EXPECT_LE(RelativeError(dinp_got, test::ToDouble(dinp_want)), tol) << "dinp";
    EXPECT_LE(RelativeError(increment(dinp_got, dinp0), increment(dinp_want, dinp0)), tol)
        << "dinp increment";
  } else {
    EXPECT_EQ(dinp_got, dinp0) << "dinp was null: the pre-filled buffer must be untouched";
  }
  if (with_dweight) {
    EXPECT_LE(RelativeError(dw_got, test::ToDouble(dweight_want)), tol) << "dweight";
    EXPECT_LE(RelativeError(increment(dw_got, dweight0), increment(dweight_want, dweight0)), tol)
        << "dweight increment";
  } else {
    EXPECT_EQ(dw_got, dweight0) << "dweight was null: the pre-filled buffer must be untouched";
  }
}
#endif  // LOOM_HAVE_CUDA

TEST(CudaLinear, ForwardMatchesCpu) {
#ifndef LOOM_HAVE_CUDA
  LOOM_GPU_SKIP_WITHOUT_CUDA();
#else
  LOOM_GPU_CONTEXT_OR_SKIP(ctx);
  uint64_t seed = 1000;
  for (const LinearShape& s : kLinearShapes) {
    for (auto [precision, out_type] :
         {std::pair{Precision::kFp32, DType::kF32}, std::pair{Precision::kBf16, DType::kF32},
          std::pair{Precision::kBf16, DType::kBF16}}) {
      SCOPED_TRACE(testing::Message()
                   << "T " << s.T << " IC " << s.IC << " OC " << s.OC << " bf16 "
                   << (precision == Precision::kBf16) << " out " << gpu::DTypeName(out_type));
      CheckForward(*ctx, precision, out_type, s, seed);
      if (HasFatalFailure()) return;
      seed += 10;
    }
  }
#endif
}

TEST(CudaLinear, BackwardAccumulatesLikeCpu) {
#ifndef LOOM_HAVE_CUDA
  LOOM_GPU_SKIP_WITHOUT_CUDA();
#else
  LOOM_GPU_CONTEXT_OR_SKIP(ctx);
  uint64_t seed = 2000;
  for (const LinearShape& s : kLinearShapes) {
    for (Precision precision : {Precision::kFp32, Precision::kBf16}) {
      SCOPED_TRACE(testing::Message() << "T " << s.T << " IC " << s.IC << " OC " << s.OC << " bf16 "
                                      << (precision == Precision::kBf16));
      CheckBackward(*ctx, precision, s, /*with_dinp=*/true, /*with_dweight=*/true, seed);
      if (HasFatalFailure()) return;
      seed += 10;
    }
  }
#endif
}

TEST(CudaLinear, BackwardSkipsNullGradients) {
#ifndef LOOM_HAVE_CUDA
  LOOM_GPU_SKIP_WITHOUT_CUDA();
#else
  LOOM_GPU_CONTEXT_OR_SKIP(ctx);
  const LinearShape s{33, 24, 40};
  for (Precision precision : {Precision::kFp32, Precision::kBf16}) {
    SCOPED_TRACE(testing::Message() << "bf16 " << (precision == Precision::kBf16));
    CheckBackward(*ctx, precision, s, /*with_dinp=*/false, /*with_dweight=*/true, 3000);
    if (HasFatalFailure()) return;
    CheckBackward(*ctx, precision, s, /*with_dinp=*/true, /*with_dweight=*/false, 3100);
    if (HasFatalFailure()) return;
  }
#endif
}

// An empty input dimension: the forward writes zeros (over NaN), the backward changes nothing.
TEST(CudaLinear, EmptyInputFeatures) {
#ifndef LOOM_HAVE_CUDA
  LOOM_GPU_SKIP_WITHOUT_CUDA();
#else
  LOOM_GPU_CONTEXT_OR_SKIP(ctx);
  const int T = 5, OC = 6;
  ASSIGN_OR_FAIL(out_dev, gpu::ToDevice(ctx->allocator(),
                                        std::vector<float>(static_cast<size_t>(T) * OC,
                                                           std::numeric_limits<float>::quiet_NaN()),
                                        DType::kF32, ctx->compute()));
  const absl::Status status = gpu::LinearForward(*ctx, Precision::kFp32, out_dev.data(),
                                                 DType::kF32, nullptr, nullptr, T, 0, OC);
  ASSERT_TRUE(status.ok()) << status;
  ASSIGN_OR_FAIL(got, gpu::ToHost(out_dev, ctx->compute()));
  EXPECT_EQ(got, std::vector<float>(static_cast<size_t>(T) * OC, 0.0f));
  EXPECT_TRUE(gpu::LinearBackward(*ctx, Precision::kBf16, nullptr, nullptr, nullptr, nullptr,
                                  nullptr, T, 0, OC)
                  .ok());
  EXPECT_TRUE(ctx->Synchronize().ok());
#endif
}

}  // namespace
}  // namespace loom
