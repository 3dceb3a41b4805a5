// The GPU elementwise kernels (src/cuda/elementwise.h) against the CPU kernels (src/kernels/,
// src/adamw.cc) on the same random inputs: fp32 storage at kGpuFp32Tolerance, and bf16 storage
// (the inputs rounded to bf16 on upload, compared with the CPU kernel on the unrounded fp32
// inputs) at kGpuBf16Tolerance. Accumulating kernels start from pre-filled gradients and are
// checked on the total and on the increment alone. Shapes include sizes that are not multiples
// of a warp or a block. Needs a CUDA device; skipped visibly without one.
#include <gtest/gtest.h>

#include "tests/src/cuda_test_util.h"

#ifdef LOOM_HAVE_CUDA
#include <cuda_bf16.h>
#include <cuda_runtime_api.h>

#include <cmath>
#include <cstdint>
#include <span>
#include <string>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "src/adamw.h"
#include "src/cuda/device_buffer.h"
#include "src/cuda/device_context.h"
#include "src/cuda/elementwise.h"
#include "src/kernels/cross_entropy.h"
#include "src/kernels/embedding.h"
#include "src/kernels/rmsnorm.h"
#include "src/kernels/rope.h"
#include "src/kernels/swiglu.h"
#include "src/model_config.h"
#include "src/param_layout.h"
#include "src/status_macros.h"
#include "tests/src/test_util.h"

// In a void function: unwraps a StatusOr into `lhs` or fails the test here.
#define LOOM_TEST_ASSIGN_OR_FAIL(lhs, expr) \
  LOOM_TEST_ASSIGN_OR_FAIL_IMPL(LOOM_CONCAT(loom_test_or_, __LINE__), lhs, expr)
#define LOOM_TEST_ASSIGN_OR_FAIL_IMPL(tmp, lhs, expr) \
  auto tmp = (expr);                                  \
  ASSERT_TRUE(tmp.ok()) << tmp.status();              \
  lhs = std::move(tmp).value()
#define LOOM_TEST_ASSERT_OK(expr)                        \
  do {                                                   \
    const ::absl::Status loom_test_st_ = (expr);         \
    ASSERT_TRUE(loom_test_st_.ok()) << loom_test_st_;    \
  } while (0)
#define LOOM_TEST_ASSERT_CUDA_OK(...)                                            \
  do {                                                                           \
    const cudaError_t loom_test_err_ = (__VA_ARGS__);                            \
    ASSERT_EQ(loom_test_err_, cudaSuccess)                                       \
        << #__VA_ARGS__ << ": " << cudaGetErrorString(loom_test_err_);           \
  } while (0)
#endif  // LOOM_HAVE_CUDA

namespace loom {
namespace {

#ifdef LOOM_HAVE_CUDA
using gpu::DeviceBuffer;
using gpu::DeviceContext;
using gpu::DType;
using test::RandomTokens;
using test::RandomVector;
using bf16 = __nv_bfloat16;

template <typename T>
constexpr bool kIsF32 = std::is_same_v<T, float>;
template <typename T>
constexpr DType kStorage = kIsF32<T> ? DType::kF32 : DType::kBF16;
template <typename T>
constexpr double kTolerance = kIsF32<T> ? test::kGpuFp32Tolerance : test::kGpuBf16Tolerance;
template <typename T>
const char* ModeName() {
  return kIsF32<T> ? "fp32" : "bf16";
}

size_t Size(int64_t a, int64_t b) { return static_cast<size_t>(a * b); }

double RelativeErrorOf(const std::vector<float>& got, const std::vector<float>& want) {
  return test::RelativeError(got, test::ToDouble(want));
}

void ExpectClose(const std::vector<float>& got, const std::vector<float>& want, double tolerance,
                 const std::string& what) {
  ASSERT_EQ(got.size(), want.size()) << what;
  EXPECT_LE(RelativeErrorOf(got, want), tolerance) << what;
}

// For `+=` outputs: the total, and the increment over `before` on its own (a pre-fill much
// larger than the increment would otherwise hide an error in it).
void ExpectAccumulated(const std::vector<float>& got, const std::vector<float>& want,
                       const std::vector<float>& before, double tolerance,
                       const std::string& what) {
  ASSERT_EQ(got.size(), want.size()) << what;
  ASSERT_EQ(before.size(), want.size()) << what;
  EXPECT_LE(RelativeErrorOf(got, want), tolerance) << what << " (total)";
  std::vector<double> got_delta(got.size()), want_delta(want.size());
  for (size_t i = 0; i < got.size(); ++i) {
    got_delta[i] = static_cast<double>(got[i]) - before[i];
    want_delta[i] = static_cast<double>(want[i]) - before[i];
  }
  EXPECT_LE(test::RelativeError(got_delta, want_delta), tolerance) << what << " (increment)";
}

// A one-element double buffer holding `value` (DeviceBuffer's copies are float and int32 only).
void WriteDouble(const DeviceBuffer& buffer, double value, cudaStream_t stream) {
  LOOM_TEST_ASSERT_CUDA_OK(
      cudaMemcpyAsync(buffer.data(), &value, sizeof(value), cudaMemcpyHostToDevice, stream));
  LOOM_TEST_ASSERT_CUDA_OK(cudaStreamSynchronize(stream));
}

double ReadDouble(const DeviceBuffer& buffer, cudaStream_t stream) {
  double value = NAN;
  EXPECT_EQ(cudaMemcpyAsync(&value, buffer.data(), sizeof(value), cudaMemcpyDeviceToHost, stream),
            cudaSuccess);
  EXPECT_EQ(cudaStreamSynchronize(stream), cudaSuccess);
  return value;
}

// ---------------------------------------------------------------------------------------------
// Embedding

template <typename T>
void CheckEmbeddingForward(DeviceContext& ctx, int n_tokens, int C, int V) {
  SCOPED_TRACE(testing::Message() << ModeName<T>() << " T=" << n_tokens << " C=" << C
                                  << " V=" << V);
  cudaStream_t s = ctx.compute();
  const std::vector<float> table = RandomVector(Size(V, C), 11);
  const std::vector<int32_t> tokens = RandomTokens(n_tokens, 12, V);
  std::vector<float> want(Size(n_tokens, C));
  loom::EmbeddingForward(want.data(), tokens.data(), table.data(), n_tokens, C);

  LOOM_TEST_ASSIGN_OR_FAIL(DeviceBuffer d_table,
                           gpu::ToDevice(ctx.allocator(), table, DType::kF32, s));
  LOOM_TEST_ASSIGN_OR_FAIL(DeviceBuffer d_tokens, gpu::ToDeviceI32(ctx.allocator(), tokens, s));
  LOOM_TEST_ASSIGN_OR_FAIL(DeviceBuffer d_out,
                           DeviceBuffer::Create(ctx.allocator(), kStorage<T>, want.size(), s));
  LOOM_TEST_ASSERT_CUDA_OK(gpu::EmbeddingForward<T>(d_out.as<T>(), d_tokens.as<int32_t>(),
                                                    d_table.as<float>(), n_tokens, C, s));
  LOOM_TEST_ASSERT_OK(ctx.Synchronize());
  LOOM_TEST_ASSIGN_OR_FAIL(std::vector<float> got, gpu::ToHost(d_out, s));
  ExpectClose(got, want, kTolerance<T>, "out");
  if constexpr (kIsF32<T>) {
    EXPECT_EQ(got, want) << "an fp32 row copy is exact";
  }
}

// ---------------------------------------------------------------------------------------------
// RMSNorm

constexpr float kNormEps = 1e-5f;

struct NormShape {
  int n_tokens;
  int C;
};
// C = 13000 needs more than 48 KiB of shared memory in the backward (the opt-in path); T = 2500
// with C = 300 has more rows than the backward's grid, so blocks stride over rows. C = 1 is left
// to the forward: there dx = r w dy (1 - x^2 r^2) cancels to ~eps / x^2 of its terms, so even two
// fp32 evaluations disagree far beyond any tolerance.
const NormShape kNormShapes[] = {{5, 13},   {17, 256},  {3, 1000},
                                 {2, 4099}, {3, 13000}, {2500, 300}};
const NormShape kNormForwardOnlyShapes[] = {{1, 1}, {4, 1}};

std::vector<float> NormWeight(int C) {
  std::vector<float> w = RandomVector(C, 31, 0.5f);
  for (float& x : w) x += 1.0f;
  return w;
}

template <typename T>
void CheckRmsNormForward(DeviceContext& ctx, const NormShape& shape) {
  const auto [n_tokens, C] = shape;
  SCOPED_TRACE(testing::Message() << ModeName<T>() << " T=" << n_tokens << " C=" << C);
  cudaStream_t s = ctx.compute();
  const std::vector<float> inp = RandomVector(Size(n_tokens, C), 32, 2.0f);
  const std::vector<float> weight = NormWeight(C);
  std::vector<float> want(inp.size()), want_rstd(n_tokens);
  loom::RmsNormForward(want.data(), want_rstd.data(), inp.data(), weight.data(), n_tokens, C,
                       kNormEps);

  LOOM_TEST_ASSIGN_OR_FAIL(DeviceBuffer d_inp, gpu::ToDevice(ctx.allocator(), inp, kStorage<T>, s));
  LOOM_TEST_ASSIGN_OR_FAIL(DeviceBuffer d_weight,
                           gpu::ToDevice(ctx.allocator(), weight, DType::kF32, s));
  LOOM_TEST_ASSIGN_OR_FAIL(DeviceBuffer d_out,
                           DeviceBuffer::Create(ctx.allocator(), kStorage<T>, inp.size(), s));
  LOOM_TEST_ASSIGN_OR_FAIL(DeviceBuffer d_rstd,
                           DeviceBuffer::Create(ctx.allocator(), DType::kF32, n_tokens, s));
  LOOM_TEST_ASSERT_CUDA_OK(gpu::RmsNormForward<T>(d_out.as<T>(), d_rstd.as<float>(),
                                                  d_inp.as<T>(), d_weight.as<float>(), n_tokens,
                                                  C, kNormEps, s));
  LOOM_TEST_ASSERT_OK(ctx.Synchronize());
  LOOM_TEST_ASSIGN_OR_FAIL(std::vector<float> got, gpu::ToHost(d_out, s));
  LOOM_TEST_ASSIGN_OR_FAIL(std::vector<float> got_rstd, gpu::ToHost(d_rstd, s));
  ExpectClose(got, want, kTolerance<T>, "out");
  ExpectClose(got_rstd, want_rstd, kTolerance<T>, "rstd");
}

// rstd comes from the CPU forward on the fp32 inputs in both modes: it is an fp32 input here.
template <typename T>
void CheckRmsNormBackward(DeviceContext& ctx, const NormShape& shape) {
  const auto [n_tokens, C] = shape;
  SCOPED_TRACE(testing::Message() << ModeName<T>() << " T=" << n_tokens << " C=" << C);
  cudaStream_t s = ctx.compute();
  const std::vector<float> inp = RandomVector(Size(n_tokens, C), 33, 2.0f);
  const std::vector<float> weight = NormWeight(C);
  const std::vector<float> dout = RandomVector(inp.size(), 34);
  const std::vector<float> dinp_before = RandomVector(inp.size(), 35, 0.5f);
  const std::vector<float> dweight_before = RandomVector(C, 36, 0.5f);
  std::vector<float> out(inp.size()), rstd(n_tokens);
  loom::RmsNormForward(out.data(), rstd.data(), inp.data(), weight.data(), n_tokens, C, kNormEps);
  std::vector<float> want_dinp = dinp_before, want_dweight = dweight_before;
  loom::RmsNormBackward(want_dinp.data(), want_dweight.data(), dout.data(), inp.data(),
                        weight.data(), rstd.data(), n_tokens, C);

  LOOM_TEST_ASSIGN_OR_FAIL(DeviceBuffer d_inp, gpu::ToDevice(ctx.allocator(), inp, kStorage<T>, s));
  LOOM_TEST_ASSIGN_OR_FAIL(DeviceBuffer d_weight,
                           gpu::ToDevice(ctx.allocator(), weight, DType::kF32, s));
  LOOM_TEST_ASSIGN_OR_FAIL(DeviceBuffer d_dout,
                           gpu::ToDevice(ctx.allocator(), dout, DType::kF32, s));
  LOOM_TEST_ASSIGN_OR_FAIL(DeviceBuffer d_rstd,
                           gpu::ToDevice(ctx.allocator(), rstd, DType::kF32, s));
  LOOM_TEST_ASSIGN_OR_FAIL(DeviceBuffer d_dinp,
                           gpu::ToDevice(ctx.allocator(), dinp_before, DType::kF32, s));
  LOOM_TEST_ASSIGN_OR_FAIL(DeviceBuffer d_dweight,
                           gpu::ToDevice(ctx.allocator(), dweight_before, DType::kF32, s));
  LOOM_TEST_ASSERT_CUDA_OK(gpu::RmsNormBackward<T>(
      d_dinp.as<float>(), d_dweight.as<float>(), d_dout.as<float>(), d_inp.as<T>(),
      d_weight.as<float>(), d_rstd.as<float>(), n_tokens, C, s));
  LOOM_TEST_ASSERT_OK(ctx.Synchronize());
  LOOM_TEST_ASSIGN_OR_FAIL(std::vector<float> got_dinp, gpu::ToHost(d_dinp, s));
  LOOM_TEST_ASSIGN_OR_FAIL(std::vector<float> got_dweight, gpu::ToHost(d_dweight, s));
  ExpectAccumulated(got_dinp, want_dinp, dinp_before, kTolerance<T>, "dinp");
  ExpectAccumulated(got_dweight, want_dweight, dweight_before, kTolerance<T>, "dweight");
}

// ---------------------------------------------------------------------------------------------
// RoPE

struct RopeShape {
  int n_tokens;
  int H;
  int D;
};
// D / 2 = 65 is not a multiple of a warp.
const RopeShape kRopeShapes[] = {{1, 1, 2}, {3, 2, 8}, {17, 5, 64}, {9, 3, 130}};

RopeTable TestRopeTable(const RopeShape& shape) {
  const std::vector<int32_t> pos = RandomTokens(shape.n_tokens, 41, 4096);
  return MakeRopeTable(pos.data(), shape.n_tokens, shape.D, 10000.0f);
}

// Out of place, and in place (out aliasing inp), which the header allows.
template <typename T>
void CheckRopeForward(DeviceContext& ctx, const RopeShape& shape) {
  const auto [n_tokens, H, D] = shape;
  SCOPED_TRACE(testing::Message() << ModeName<T>() << " T=" << n_tokens << " H=" << H
                                  << " D=" << D);
  cudaStream_t s = ctx.compute();
  const RopeTable table = TestRopeTable(shape);
  const std::vector<float> inp = RandomVector(Size(n_tokens, int64_t{H} * D), 42);
  std::vector<float> want(inp.size());
  loom::RopeForward(want.data(), inp.data(), table, n_tokens, H, D);

  LOOM_TEST_ASSIGN_OR_FAIL(DeviceBuffer d_cos,
                           gpu::ToDevice(ctx.allocator(), table.cos, DType::kF32, s));
  LOOM_TEST_ASSIGN_OR_FAIL(DeviceBuffer d_sin,
                           gpu::ToDevice(ctx.allocator(), table.sin, DType::kF32, s));
  LOOM_TEST_ASSIGN_OR_FAIL(DeviceBuffer d_inp, gpu::ToDevice(ctx.allocator(), inp, kStorage<T>, s));
  LOOM_TEST_ASSIGN_OR_FAIL(DeviceBuffer d_out,
                           DeviceBuffer::Create(ctx.allocator(), kStorage<T>, inp.size(), s));
  LOOM_TEST_ASSERT_CUDA_OK(gpu::RopeForward<T>(d_out.as<T>(), d_inp.as<T>(), d_cos.as<float>(),
                                               d_sin.as<float>(), n_tokens, H, D, s));
  LOOM_TEST_ASSERT_OK(ctx.Synchronize());
  LOOM_TEST_ASSIGN_OR_FAIL(std::vector<float> got, gpu::ToHost(d_out, s));
  ExpectClose(got, want, kTolerance<T>, "out of place");

  LOOM_TEST_ASSERT_CUDA_OK(gpu::RopeForward<T>(d_inp.as<T>(), d_inp.as<T>(), d_cos.as<float>(),
                                               d_sin.as<float>(), n_tokens, H, D, s));
  LOOM_TEST_ASSERT_OK(ctx.Synchronize());
  LOOM_TEST_ASSIGN_OR_FAIL(std::vector<float> got_in_place, gpu::ToHost(d_inp, s));
  ExpectClose(got_in_place, want, kTolerance<T>, "in place");
  EXPECT_EQ(got_in_place, got) << "in place must equal out of place";
}

// ---------------------------------------------------------------------------------------------
// SwiGLU

// Gates up to +-6, plus +-100 at the ends where the sigmoid saturates to exactly 1 and 0.
std::vector<float> SwiGluGate(int64_t n) {
  std::vector<float> gate = RandomVector(static_cast<size_t>(n), 51, 6.0f);
  gate.front() = 100.0f;
  gate.back() = -100.0f;
  return gate;
}

template <typename T>
void CheckSwiGlu(DeviceContext& ctx, int64_t n) {
  SCOPED_TRACE(testing::Message() << ModeName<T>() << " n=" << n);
  cudaStream_t s = ctx.compute();
  const std::vector<float> gate = SwiGluGate(n);
  const std::vector<float> up = RandomVector(gate.size(), 52, 2.0f);
  const std::vector<float> dout = RandomVector(gate.size(), 53);
  const std::vector<float> dgate_before = RandomVector(gate.size(), 54, 0.5f);
  const std::vector<float> dup_before = RandomVector(gate.size(), 55, 0.5f);
  std::vector<float> want(gate.size());
  loom::SwiGluForward(want.data(), gate.data(), up.data(), n);
  std::vector<float> want_dgate = dgate_before, want_dup = dup_before;
  loom::SwiGluBackward(want_dgate.data(), want_dup.data(), dout.data(), gate.data(), up.data(), n);

  LOOM_TEST_ASSIGN_OR_FAIL(DeviceBuffer d_gate,
                           gpu::ToDevice(ctx.allocator(), gate, kStorage<T>, s));
  LOOM_TEST_ASSIGN_OR_FAIL(DeviceBuffer d_up, gpu::ToDevice(ctx.allocator(), up, kStorage<T>, s));
  LOOM_TEST_ASSIGN_OR_FAIL(DeviceBuffer d_dout,
                           gpu::ToDevice(ctx.allocator(), dout, DType::kF32, s));
  LOOM_TEST_ASSIGN_OR_FAIL(DeviceBuffer d_out,
                           DeviceBuffer::Create(ctx.allocator(), kStorage<T>, gate.size(), s));
  LOOM_TEST_ASSIGN_OR_FAIL(DeviceBuffer d_dgate,
                           gpu::ToDevice(ctx.allocator(), dgate_before, DType::kF32, s));
  LOOM_TEST_ASSIGN_OR_FAIL(DeviceBuffer d_dup,
                           gpu::ToDevice(ctx.allocator(), dup_before, DType::kF32, s));
  LOOM_TEST_ASSERT_CUDA_OK(
      gpu::SwiGluForward<T>(d_out.as<T>(), d_gate.as<T>(), d_up.as<T>(), n, s));
  LOOM_TEST_ASSERT_CUDA_OK(gpu::SwiGluBackward<T>(d_dgate.as<float>(), d_dup.as<float>(),
                                                  d_dout.as<float>(), d_gate.as<T>(),
                                                  d_up.as<T>(), n, s));
  LOOM_TEST_ASSERT_OK(ctx.Synchronize());
  LOOM_TEST_ASSIGN_OR_FAIL(std::vector<float> got, gpu::ToHost(d_out, s));
  LOOM_TEST_ASSIGN_OR_FAIL(std::vector<float> got_dgate, gpu::ToHost(d_dgate, s));
  LOOM_TEST_ASSIGN_OR_FAIL(std::vector<float> got_dup, gpu::ToHost(d_dup, s));
  ExpectClose(got, want, kTolerance<T>, "out");
  ExpectAccumulated(got_dgate, want_dgate, dgate_before, kTolerance<T>, "dgate");
  ExpectAccumulated(got_dup, want_dup, dup_before, kTolerance<T>, "dup");
  // At gate = -100 the sigmoid is exactly 0: silu is (-)0, so dup and out gain nothing.
  EXPECT_EQ(got.back(), 0.0f);
  EXPECT_EQ(got_dup.back(), dup_before.back());
}

// ---------------------------------------------------------------------------------------------
// Softmax cross-entropy

// Rows t % 3 == 1 have no target. dlogits and losses are pre-filled with garbage, so the ignored
// rows' zeros must really be written; loss_sum starts at kLossBefore, so it must be added to.
template <typename T>
void CheckCrossEntropy(DeviceContext& ctx, int n_tokens, int V) {
  SCOPED_TRACE(testing::Message() << ModeName<T>() << " T=" << n_tokens << " V=" << V);
  constexpr double kLossBefore = 1.25;
  cudaStream_t s = ctx.compute();
  const std::vector<float> logits = RandomVector(Size(n_tokens, V), 61, 4.0f);
  std::vector<int32_t> targets = RandomTokens(n_tokens, 62, V);
  int n_targets = 0;
  for (int t = 0; t < n_tokens; ++t) {
    if (t % 3 == 1) targets[t] = kIgnoreTarget;
    if (targets[t] != kIgnoreTarget) ++n_targets;
  }
  ASSERT_GT(n_targets, 0);
  const float grad_scale = 1.0f / static_cast<float>(n_targets);
  std::vector<float> want_dlogits(logits.size()), want_losses(n_tokens);
  const double want_sum = loom::SoftmaxCrossEntropy(want_dlogits.data(), want_losses.data(),
                                                    logits.data(), targets.data(), n_tokens, V,
                                                    grad_scale);

  LOOM_TEST_ASSIGN_OR_FAIL(DeviceBuffer d_logits,
                           gpu::ToDevice(ctx.allocator(), logits, kStorage<T>, s));
  LOOM_TEST_ASSIGN_OR_FAIL(DeviceBuffer d_targets, gpu::ToDeviceI32(ctx.allocator(), targets, s));
  LOOM_TEST_ASSIGN_OR_FAIL(
      DeviceBuffer d_dlogits,
      gpu::ToDevice(ctx.allocator(), RandomVector(logits.size(), 63), DType::kF32, s));
  LOOM_TEST_ASSIGN_OR_FAIL(
      DeviceBuffer d_losses,
      gpu::ToDevice(ctx.allocator(), RandomVector(n_tokens, 64, 9.0f), DType::kF32, s));
  LOOM_TEST_ASSIGN_OR_FAIL(DeviceBuffer d_sum,
                           DeviceBuffer::Create(ctx.allocator(), DType::kF64, 1, s));
  WriteDouble(d_sum, kLossBefore, s);
  LOOM_TEST_ASSERT_CUDA_OK(gpu::SoftmaxCrossEntropy<T>(
      d_dlogits.as<float>(), d_losses.as<float>(), d_sum.as<double>(), d_logits.as<T>(),
      d_targets.as<int32_t>(), n_tokens, V, grad_scale, s));
  LOOM_TEST_ASSERT_OK(ctx.Synchronize());
  LOOM_TEST_ASSIGN_OR_FAIL(std::vector<float> got_dlogits, gpu::ToHost(d_dlogits, s));
  LOOM_TEST_ASSIGN_OR_FAIL(std::vector<float> got_losses, gpu::ToHost(d_losses, s));
  const double got_sum = ReadDouble(d_sum, s);
  ExpectClose(got_dlogits, want_dlogits, kTolerance<T>, "dlogits");
  ExpectClose(got_losses, want_losses, kTolerance<T>, "losses");
  EXPECT_LE(std::abs((got_sum - kLossBefore) - want_sum), kTolerance<T> * want_sum)
      << "loss_sum " << got_sum << " = " << kLossBefore << " + " << want_sum << "?";
  for (int t = 1; t < n_tokens; t += 3) {
    EXPECT_EQ(got_losses[t], 0.0f) << "ignored row " << t;
    int nonzero = 0;
    for (int j = 0; j < V; ++j) nonzero += got_dlogits[Size(t, V) + j] != 0.0f;
    EXPECT_EQ(nonzero, 0) << "ignored row " << t << " has a gradient";
  }

  // Forward only: no dlogits, no per-row losses, the sum alone.
  WriteDouble(d_sum, 0.0, s);
  LOOM_TEST_ASSERT_CUDA_OK(gpu::SoftmaxCrossEntropy<T>(nullptr, nullptr, d_sum.as<double>(),
                                                       d_logits.as<T>(), d_targets.as<int32_t>(),
                                                       n_tokens, V, grad_scale, s));
  LOOM_TEST_ASSERT_OK(ctx.Synchronize());
  const double got_forward_sum = ReadDouble(d_sum, s);
  EXPECT_LE(std::abs(got_forward_sum - want_sum), kTolerance<T> * want_sum)
      << "forward-only loss_sum " << got_forward_sum << " vs " << want_sum;
}

// ---------------------------------------------------------------------------------------------
// Add, Cast, Scale, SumSquares

template <typename T>
void CheckAdd(DeviceContext& ctx, int64_t n) {
  SCOPED_TRACE(testing::Message() << ModeName<T>() << " n=" << n);
  cudaStream_t s = ctx.compute();
  const std::vector<float> a = RandomVector(static_cast<size_t>(n), 71, 3.0f);
  const std::vector<float> b = RandomVector(a.size(), 72, 3.0f);
  std::vector<float> want(a.size());
  for (size_t i = 0; i < a.size(); ++i) want[i] = a[i] + b[i];

  LOOM_TEST_ASSIGN_OR_FAIL(DeviceBuffer d_a, gpu::ToDevice(ctx.allocator(), a, kStorage<T>, s));
  LOOM_TEST_ASSIGN_OR_FAIL(DeviceBuffer d_b, gpu::ToDevice(ctx.allocator(), b, kStorage<T>, s));
  LOOM_TEST_ASSIGN_OR_FAIL(DeviceBuffer d_out,
                           DeviceBuffer::Create(ctx.allocator(), kStorage<T>, a.size(), s));
  LOOM_TEST_ASSERT_CUDA_OK(gpu::Add<T>(d_out.as<T>(), d_a.as<T>(), d_b.as<T>(), n, s));
  LOOM_TEST_ASSERT_OK(ctx.Synchronize());
  LOOM_TEST_ASSIGN_OR_FAIL(std::vector<float> got, gpu::ToHost(d_out, s));
  ExpectClose(got, want, kTolerance<T>, "out of place");
  if constexpr (kIsF32<T>) {
    EXPECT_EQ(got, want) << "one fp32 addition is exact to the bit";
  }

  // In place: a += b.
  LOOM_TEST_ASSERT_CUDA_OK(gpu::Add<T>(d_a.as<T>(), d_a.as<T>(), d_b.as<T>(), n, s));
  LOOM_TEST_ASSERT_OK(ctx.Synchronize());
  LOOM_TEST_ASSIGN_OR_FAIL(std::vector<float> got_in_place, gpu::ToHost(d_a, s));
  EXPECT_EQ(got_in_place, got) << "in place must equal out of place";
}

float RoundToBf16(float x) { return __bfloat162float(__float2bfloat16(x)); }

// ---------------------------------------------------------------------------------------------
// AdamW

ModelConfig TinyConfig() {
  ModelConfig c;
  c.vocab_size = 11;
  c.d_model = 12;
  c.n_layers = 1;
  c.n_heads = 2;
  c.n_kv_heads = 1;
  c.ffn_dim = 20;
  return c;
}

#endif  // LOOM_HAVE_CUDA

TEST(CudaElementwise, EmbeddingForwardMatchesCpu) {
#ifndef LOOM_HAVE_CUDA
  LOOM_GPU_SKIP_WITHOUT_CUDA();
#else
  LOOM_GPU_CONTEXT_OR_SKIP(ctx);
  for (const auto& [n_tokens, C, V] : {std::tuple{1, 1, 1}, std::tuple{7, 13, 5},
                                       std::tuple{64, 256, 50}, std::tuple{33, 1000, 300}}) {
    CheckEmbeddingForward<float>(*ctx, n_tokens, C, V);
    CheckEmbeddingForward<bf16>(*ctx, n_tokens, C, V);
  }
#endif
}

// Few distinct tokens, so many rows of dout land on the same row of dtable.
TEST(CudaElementwise, EmbeddingBackwardAccumulatesRepeatedTokens) {
#ifndef LOOM_HAVE_CUDA
  LOOM_GPU_SKIP_WITHOUT_CUDA();
#else
  LOOM_GPU_CONTEXT_OR_SKIP(ctx);
  cudaStream_t s = ctx->compute();
  for (const auto& [n_tokens, C, V] :
       {std::tuple{7, 13, 3}, std::tuple{64, 256, 5}, std::tuple{300, 1000, 40}}) {
    SCOPED_TRACE(testing::Message() << "T=" << n_tokens << " C=" << C << " V=" << V);
    const std::vector<float> dout = RandomVector(Size(n_tokens, C), 21);
    const std::vector<int32_t> tokens = RandomTokens(n_tokens, 22, V);
    const std::vector<float> before = RandomVector(Size(V, C), 23);
    std::vector<float> want = before;
    loom::EmbeddingBackward(want.data(), tokens.data(), dout.data(), n_tokens, C);

    LOOM_TEST_ASSIGN_OR_FAIL(DeviceBuffer d_dout,
                             gpu::ToDevice(ctx->allocator(), dout, DType::kF32, s));
    LOOM_TEST_ASSIGN_OR_FAIL(DeviceBuffer d_tokens,
                             gpu::ToDeviceI32(ctx->allocator(), tokens, s));
    LOOM_TEST_ASSIGN_OR_FAIL(DeviceBuffer d_dtable,
                             gpu::ToDevice(ctx->allocator(), before, DType::kF32, s));
    LOOM_TEST_ASSERT_CUDA_OK(gpu::EmbeddingBackward(d_dtable.as<float>(), d_tokens.as<int32_t>(),
                                                    d_dout.as<float>(), n_tokens, C, s));
    LOOM_TEST_ASSERT_OK(ctx->Synchronize());
    LOOM_TEST_ASSIGN_OR_FAIL(std::vector<float> got, gpu::ToHost(d_dtable, s));
    ExpectAccumulated(got, want, before, test::kGpuFp32Tolerance, "dtable");
  }
#endif
}

TEST(CudaElementwise, RmsNormForwardMatchesCpu) {
#ifndef LOOM_HAVE_CUDA
  LOOM_GPU_SKIP_WITHOUT_CUDA();
#else
  LOOM_GPU_CONTEXT_OR_SKIP(ctx);
  using Shapes = std::span<const NormShape>;
  for (Shapes shapes : {Shapes(kNormForwardOnlyShapes), Shapes(kNormShapes)}) {
    for (const NormShape& shape : shapes) {
      CheckRmsNormForward<float>(*ctx, shape);
      CheckRmsNormForward<bf16>(*ctx, shape);
    }
  }
#endif
}

TEST(CudaElementwise, RmsNormBackwardAccumulatesLikeCpu) {
#ifndef LOOM_HAVE_CUDA
  LOOM_GPU_SKIP_WITHOUT_CUDA();
#else
  LOOM_GPU_CONTEXT_OR_SKIP(ctx);
  for (const NormShape& shape : kNormShapes) {
    CheckRmsNormBackward<float>(*ctx, shape);
    CheckRmsNormBackward<bf16>(*ctx, shape);
  }
#endif
}

TEST(CudaElementwise, RopeForwardMatchesCpu) {
#ifndef LOOM_HAVE_CUDA
  LOOM_GPU_SKIP_WITHOUT_CUDA();
#else
  LOOM_GPU_CONTEXT_OR_SKIP(ctx);
  for (const RopeShape& shape : kRopeShapes) {
    CheckRopeForward<float>(*ctx, shape);
    CheckRopeForward<bf16>(*ctx, shape);
  }
#endif
}

TEST(CudaElementwise, RopeBackwardAccumulatesLikeCpu) {
#ifndef LOOM_HAVE_CUDA
  LOOM_GPU_SKIP_WITHOUT_CUDA();
#else
  LOOM_GPU_CONTEXT_OR_SKIP(ctx);
  cudaStream_t s = ctx->compute();
  for (const RopeShape& shape : kRopeShapes) {
    const auto [n_tokens, H, D] = shape;
    SCOPED_TRACE(testing::Message() << "T=" << n_tokens << " H=" << H << " D=" << D);
    const RopeTable table = TestRopeTable(shape);
    const std::vector<float> dout = RandomVector(Size(n_tokens, int64_t{H} * D), 43);
    const std::vector<float> before = RandomVector(dout.size(), 44, 0.5f);
    std::vector<float> want = before;
    loom::RopeBackward(want.data(), dout.data(), table, n_tokens, H, D);

    LOOM_TEST_ASSIGN_OR_FAIL(DeviceBuffer d_cos,
                             gpu::ToDevice(ctx->allocator(), table.cos, DType::kF32, s));
    LOOM_TEST_ASSIGN_OR_FAIL(DeviceBuffer d_sin,
                             gpu::ToDevice(ctx->allocator(), table.sin, DType::kF32, s));
    LOOM_TEST_ASSIGN_OR_FAIL(DeviceBuffer d_dout,
                             gpu::ToDevice(ctx->allocator(), dout, DType::kF32, s));
    LOOM_TEST_ASSIGN_OR_FAIL(DeviceBuffer d_dinp,
                             gpu::ToDevice(ctx->allocator(), before, DType::kF32, s));
    LOOM_TEST_ASSERT_CUDA_OK(gpu::RopeBackward(d_dinp.as<float>(), d_dout.as<float>(),
                                               d_cos.as<float>(), d_sin.as<float>(), n_tokens, H,
                                               D, s));
    LOOM_TEST_ASSERT_OK(ctx->Synchronize());
    LOOM_TEST_ASSIGN_OR_FAIL(std::vector<float> got, gpu::ToHost(d_dinp, s));
    ExpectAccumulated(got, want, before, test::kGpuFp32Tolerance, "dinp");
  }
#endif
}

TEST(CudaElementwise, SwiGluMatchesCpu) {
#ifndef LOOM_HAVE_CUDA
  LOOM_GPU_SKIP_WITHOUT_CUDA();
#else
  LOOM_GPU_CONTEXT_OR_SKIP(ctx);
  for (int64_t n : {int64_t{2}, int64_t{1000}, int64_t{100003}, int64_t{3000017}}) {
    CheckSwiGlu<float>(*ctx, n);
    CheckSwiGlu<bf16>(*ctx, n);
  }
#endif
}

TEST(CudaElementwise, SoftmaxCrossEntropyMatchesCpu) {
#ifndef LOOM_HAVE_CUDA
  LOOM_GPU_SKIP_WITHOUT_CUDA();
#else
  LOOM_GPU_CONTEXT_OR_SKIP(ctx);
  for (const auto& [n_tokens, V] : {std::pair{1, 7}, std::pair{9, 1000}, std::pair{5, 32003},
                                    std::pair{4, 131079}}) {
    CheckCrossEntropy<float>(*ctx, n_tokens, V);
    CheckCrossEntropy<bf16>(*ctx, n_tokens, V);
  }
#endif
}

// Logits near 1e4 with a spread of a few units: the max must be subtracted before exp.
TEST(CudaElementwise, SoftmaxCrossEntropyLargeLogitsStayFinite) {
#ifndef LOOM_HAVE_CUDA
  LOOM_GPU_SKIP_WITHOUT_CUDA();
#else
  LOOM_GPU_CONTEXT_OR_SKIP(ctx);
  cudaStream_t s = ctx->compute();
  const int n_tokens = 3, V = 5001;
  std::vector<float> logits = RandomVector(Size(n_tokens, V), 65, 3.0f);
  for (float& x : logits) x += 1e4f;
  const std::vector<int32_t> targets = RandomTokens(n_tokens, 66, V);
  std::vector<float> want_dlogits(logits.size()), want_losses(n_tokens);
  const double want_sum = loom::SoftmaxCrossEntropy(want_dlogits.data(), want_losses.data(),
                                                    logits.data(), targets.data(), n_tokens, V,
                                                    1.0f);
  LOOM_TEST_ASSIGN_OR_FAIL(DeviceBuffer d_logits,
                           gpu::ToDevice(ctx->allocator(), logits, DType::kF32, s));
  LOOM_TEST_ASSIGN_OR_FAIL(DeviceBuffer d_targets,
                           gpu::ToDeviceI32(ctx->allocator(), targets, s));
  LOOM_TEST_ASSIGN_OR_FAIL(DeviceBuffer d_dlogits,
                           DeviceBuffer::Create(ctx->allocator(), DType::kF32, logits.size(), s));
  LOOM_TEST_ASSIGN_OR_FAIL(DeviceBuffer d_losses,
                           DeviceBuffer::Create(ctx->allocator(), DType::kF32, n_tokens, s));
  LOOM_TEST_ASSIGN_OR_FAIL(DeviceBuffer d_sum,
                           DeviceBuffer::Create(ctx->allocator(), DType::kF64, 1, s));
  LOOM_TEST_ASSERT_CUDA_OK(gpu::SoftmaxCrossEntropy<float>(
      d_dlogits.as<float>(), d_losses.as<float>(), d_sum.as<double>(), d_logits.as<float>(),
      d_targets.as<int32_t>(), n_tokens, V, 1.0f, s));
  LOOM_TEST_ASSERT_OK(ctx->Synchronize());
  LOOM_TEST_ASSIGN_OR_FAIL(std::vector<float> got_dlogits, gpu::ToHost(d_dlogits, s));
  LOOM_TEST_ASSIGN_OR_FAIL(std::vector<float> got_losses, gpu::ToHost(d_losses, s));
  ExpectClose(got_dlogits, want_dlogits, test::kGpuFp32Tolerance, "dlogits");
  ExpectClose(got_losses, want_losses, test::kGpuFp32Tolerance, "losses");
  const double got_sum = ReadDouble(d_sum, s);
  EXPECT_TRUE(std::isfinite(got_sum));
  EXPECT_LE(std::abs(got_sum - want_sum), test::kGpuFp32Tolerance * want_sum);
#endif
}

TEST(CudaElementwise, AddMatchesHost) {
#ifndef LOOM_HAVE_CUDA
  LOOM_GPU_SKIP_WITHOUT_CUDA();
#else
  LOOM_GPU_CONTEXT_OR_SKIP(ctx);
  for (int64_t n : {int64_t{1}, int64_t{1000}, int64_t{65539}, int64_t{3000017}}) {
    CheckAdd<float>(*ctx, n);
    CheckAdd<bf16>(*ctx, n);
  }
#endif
}

// Every pair of types, exactly: float -> bf16 rounds to nearest even (checked on two ties).
TEST(CudaElementwise, CastConvertsEveryPairExactly) {
#ifndef LOOM_HAVE_CUDA
  LOOM_GPU_SKIP_WITHOUT_CUDA();
#else
  LOOM_GPU_CONTEXT_OR_SKIP(ctx);
  cudaStream_t s = ctx->compute();
  std::vector<float> in = RandomVector(100003, 81, 3.0f);
  // Halfway between two bf16 values: 1 + 2^-8 rounds down to 1, 1 + 3 * 2^-8 up to 1 + 2^-6.
  constexpr float kTieDown = 1.00390625f, kTieUp = 1.01171875f;
  in[0] = kTieDown;
  in[1] = kTieUp;
  std::vector<float> rounded(in.size());
  for (size_t i = 0; i < in.size(); ++i) rounded[i] = RoundToBf16(in[i]);
  ASSERT_EQ(rounded[0], 1.0f);
  ASSERT_EQ(rounded[1], 1.015625f);
  const int64_t n = static_cast<int64_t>(in.size());
  auto* alloc = ctx->allocator();
  LOOM_TEST_ASSIGN_OR_FAIL(DeviceBuffer d_f32, gpu::ToDevice(alloc, in, DType::kF32, s));
  LOOM_TEST_ASSIGN_OR_FAIL(DeviceBuffer d_bf16, gpu::ToDevice(alloc, in, DType::kBF16, s));
  LOOM_TEST_ASSIGN_OR_FAIL(DeviceBuffer out_f32,
                           DeviceBuffer::Create(alloc, DType::kF32, in.size(), s));
  LOOM_TEST_ASSIGN_OR_FAIL(DeviceBuffer out_bf16,
                           DeviceBuffer::Create(alloc, DType::kBF16, in.size(), s));

  LOOM_TEST_ASSERT_CUDA_OK(gpu::Cast<float, float>(out_f32.as<float>(), d_f32.as<float>(), n, s));
  LOOM_TEST_ASSIGN_OR_FAIL(std::vector<float> got, gpu::ToHost(out_f32, s));
  EXPECT_EQ(got, in) << "f32 -> f32";

  LOOM_TEST_ASSERT_CUDA_OK(gpu::Cast<bf16, float>(out_bf16.as<bf16>(), d_f32.as<float>(), n, s));
  LOOM_TEST_ASSIGN_OR_FAIL(got, gpu::ToHost(out_bf16, s));
  EXPECT_EQ(got, rounded) << "f32 -> bf16";

  LOOM_TEST_ASSERT_CUDA_OK(gpu::Cast<float, bf16>(out_f32.as<float>(), d_bf16.as<bf16>(), n, s));
  LOOM_TEST_ASSIGN_OR_FAIL(got, gpu::ToHost(out_f32, s));
  EXPECT_EQ(got, rounded) << "bf16 -> f32";

  LOOM_TEST_ASSERT_OK(out_bf16.Zero(s));
  LOOM_TEST_ASSERT_CUDA_OK(gpu::Cast<bf16, bf16>(out_bf16.as<bf16>(), d_bf16.as<bf16>(), n, s));
  LOOM_TEST_ASSIGN_OR_FAIL(got, gpu::ToHost(out_bf16, s));
  EXPECT_EQ(got, rounded) << "bf16 -> bf16";
  LOOM_TEST_ASSERT_OK(ctx->Synchronize());
#endif
}

TEST(CudaElementwise, ScaleMultipliesInPlace) {
#ifndef LOOM_HAVE_CUDA
  LOOM_GPU_SKIP_WITHOUT_CUDA();
#else
  LOOM_GPU_CONTEXT_OR_SKIP(ctx);
  cudaStream_t s = ctx->compute();
  for (int64_t n : {int64_t{1}, int64_t{1000}, int64_t{3000017}}) {
    SCOPED_TRACE(testing::Message() << "n=" << n);
    const std::vector<float> x = RandomVector(static_cast<size_t>(n), 91, 5.0f);
    constexpr float kScale = 0.37f;
    std::vector<float> want(x.size());
    for (size_t i = 0; i < x.size(); ++i) want[i] = x[i] * kScale;
    LOOM_TEST_ASSIGN_OR_FAIL(DeviceBuffer d_x,
                             gpu::ToDevice(ctx->allocator(), x, DType::kF32, s));
    LOOM_TEST_ASSERT_CUDA_OK(gpu::Scale(d_x.as<float>(), kScale, n, s));
    LOOM_TEST_ASSERT_OK(ctx->Synchronize());
    LOOM_TEST_ASSIGN_OR_FAIL(std::vector<float> got, gpu::ToHost(d_x, s));
    EXPECT_EQ(got, want) << "one fp32 multiplication is exact to the bit";
  }
#endif
}

// Against a double sum on the host: the summation order moves a double sum of these sizes by
// ~1e-13 relative, a float accumulator by ~1e-7 or more.
TEST(CudaElementwise, SumSquaresAccumulatesInDouble) {
#ifndef LOOM_HAVE_CUDA
  LOOM_GPU_SKIP_WITHOUT_CUDA();
#else
  LOOM_GPU_CONTEXT_OR_SKIP(ctx);
  cudaStream_t s = ctx->compute();
  constexpr double kBefore = 2.0;
  for (int64_t n : {int64_t{1}, int64_t{1000}, int64_t{(1 << 20) + 3}, int64_t{5000011}}) {
    SCOPED_TRACE(testing::Message() << "n=" << n);
    const std::vector<float> x = RandomVector(static_cast<size_t>(n), 101, 3.0f);
    double want = kBefore;
    for (float v : x) want += static_cast<double>(v) * v;
    LOOM_TEST_ASSIGN_OR_FAIL(DeviceBuffer d_x,
                             gpu::ToDevice(ctx->allocator(), x, DType::kF32, s));
    LOOM_TEST_ASSIGN_OR_FAIL(DeviceBuffer d_sum,
                             DeviceBuffer::Create(ctx->allocator(), DType::kF64, 1, s));
    WriteDouble(d_sum, kBefore, s);
    LOOM_TEST_ASSERT_CUDA_OK(gpu::SumSquares(d_sum.as<double>(), d_x.as<float>(), n, s));
    LOOM_TEST_ASSERT_OK(ctx->Synchronize());
    const double got = ReadDouble(d_sum, s);
    EXPECT_NEAR(got, want, 1e-10 * want);
  }
#endif
}

// n = 0 returns cudaSuccess and touches nothing, even with null pointers.
TEST(CudaElementwise, ZeroSizesAreNoOps) {
#ifndef LOOM_HAVE_CUDA
  LOOM_GPU_SKIP_WITHOUT_CUDA();
#else
  LOOM_GPU_CONTEXT_OR_SKIP(ctx);
  cudaStream_t s = ctx->compute();
  EXPECT_EQ(gpu::EmbeddingForward<float>(nullptr, nullptr, nullptr, 0, 8, s), cudaSuccess);
  EXPECT_EQ(gpu::EmbeddingBackward(nullptr, nullptr, nullptr, 4, 0, s), cudaSuccess);
  EXPECT_EQ(gpu::RmsNormForward<bf16>(nullptr, nullptr, nullptr, nullptr, 0, 8, 1e-5f, s),
            cudaSuccess);
  EXPECT_EQ(gpu::RmsNormBackward<float>(nullptr, nullptr, nullptr, nullptr, nullptr, nullptr, 0,
                                        8, s),
            cudaSuccess);
  EXPECT_EQ(gpu::RopeForward<float>(nullptr, nullptr, nullptr, nullptr, 0, 2, 8, s), cudaSuccess);
  EXPECT_EQ(gpu::RopeBackward(nullptr, nullptr, nullptr, nullptr, 3, 0, 8, s), cudaSuccess);
  EXPECT_EQ(gpu::SwiGluForward<bf16>(nullptr, nullptr, nullptr, 0, s), cudaSuccess);
  EXPECT_EQ(gpu::SwiGluBackward<float>(nullptr, nullptr, nullptr, nullptr, nullptr, 0, s),
            cudaSuccess);
  EXPECT_EQ(gpu::SoftmaxCrossEntropy<float>(nullptr, nullptr, nullptr, nullptr, nullptr, 0, 100,
                                            1.0f, s),
            cudaSuccess);
  EXPECT_EQ(gpu::Add<float>(nullptr, nullptr, nullptr, 0, s), cudaSuccess);
  EXPECT_EQ((gpu::Cast<bf16, float>(nullptr, nullptr, 0, s)), cudaSuccess);
  EXPECT_EQ(gpu::Scale(nullptr, 2.0f, 0, s), cudaSuccess);
  EXPECT_EQ(gpu::SumSquares(nullptr, nullptr, 0, s), cudaSuccess);
  EXPECT_EQ(gpu::AdamWUpdate(nullptr, nullptr, nullptr, nullptr, 0, 1.0f, 0.9f, 0.95f, 1e-8f,
                             1e-3f, 1.0f, s),
            cudaSuccess);
  LOOM_TEST_ASSERT_OK(ctx->Synchronize());
#endif
}

// Several steps over every tensor of a tiny model, with the constants src/adamw.cc computes:
// matrices decayed, norm gains not. Parameters are checked on their change since the start, which
// is small next to the parameters themselves.
TEST(CudaElementwise, AdamWMatchesCpuOptimizer) {
#ifndef LOOM_HAVE_CUDA
  LOOM_GPU_SKIP_WITHOUT_CUDA();
#else
  LOOM_GPU_CONTEXT_OR_SKIP(ctx);
  cudaStream_t s = ctx->compute();
  const ParamLayout layout(TinyConfig());
  const size_t p = layout.total_numel();
  const AdamWConfig config;
  AdamW cpu(layout, config);
  const std::vector<float> init = RandomVector(p, 111);
  std::vector<float> want = init;
  LOOM_TEST_ASSIGN_OR_FAIL(DeviceBuffer d_params,
                           gpu::ToDevice(ctx->allocator(), init, DType::kF32, s));
  LOOM_TEST_ASSIGN_OR_FAIL(DeviceBuffer d_m,
                           DeviceBuffer::Create(ctx->allocator(), DType::kF32, p, s));
  LOOM_TEST_ASSIGN_OR_FAIL(DeviceBuffer d_v,
                           DeviceBuffer::Create(ctx->allocator(), DType::kF32, p, s));
  constexpr int kSteps = 4;
  for (int step = 1; step <= kSteps; ++step) {
    const std::vector<float> grads = RandomVector(p, 120 + step, 0.5f);
    const float lr = 0.05f / static_cast<float>(step);
    cpu.Step(want.data(), grads.data(), lr);

    LOOM_TEST_ASSIGN_OR_FAIL(DeviceBuffer d_grads,
                             gpu::ToDevice(ctx->allocator(), grads, DType::kF32, s));
    const double bc1 = 1.0 - std::pow(static_cast<double>(config.beta1), step);
    const double bc2 = 1.0 - std::pow(static_cast<double>(config.beta2), step);
    const float step_size = static_cast<float>(lr / bc1);
    const float bc2_sqrt = static_cast<float>(std::sqrt(bc2));
    for (const ParamEntry& e : layout.entries()) {
      const float decay = e.shape.size() >= 2 ? 1.0f - lr * config.weight_decay : 1.0f;
      LOOM_TEST_ASSERT_CUDA_OK(gpu::AdamWUpdate(
          d_params.as<float>() + e.offset, d_grads.as<float>() + e.offset,
          d_m.as<float>() + e.offset, d_v.as<float>() + e.offset,
          static_cast<int64_t>(e.numel), decay, config.beta1, config.beta2, config.eps,
          step_size, bc2_sqrt, s));
    }
    LOOM_TEST_ASSERT_OK(ctx->Synchronize());
  }
  ASSERT_EQ(cpu.step(), kSteps);
  LOOM_TEST_ASSIGN_OR_FAIL(std::vector<float> got, gpu::ToHost(d_params, s));
  LOOM_TEST_ASSIGN_OR_FAIL(std::vector<float> got_m, gpu::ToHost(d_m, s));
  LOOM_TEST_ASSIGN_OR_FAIL(std::vector<float> got_v, gpu::ToHost(d_v, s));
  const std::vector<float> want_m(cpu.m().data(), cpu.m().data() + p);
  const std::vector<float> want_v(cpu.v().data(), cpu.v().data() + p);
  ExpectAccumulated(got, want, init, test::kGpuFp32Tolerance, "params");
  ExpectClose(got_m, want_m, test::kGpuFp32Tolerance, "m");
  ExpectClose(got_v, want_v, test::kGpuFp32Tolerance, "v");
#endif
}

}  // namespace
}  // namespace loom
