#include "src/kernels/swiglu.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <vector>

#include "tests/src/test_util.h"

namespace loom {
namespace {

using test::Dot;
using test::FiniteDifferenceGradient;
using test::kFiniteDifferenceTolerance;
using test::kFp32Tolerance;
using test::RandomVector;
using test::RelativeError;
using test::Subtract;
using test::ToDouble;

double Silu(double g) { return g / (1.0 + std::exp(-g)); }

std::vector<double> ReferenceForward(const std::vector<double>& gate,
                                     const std::vector<double>& up) {
  std::vector<double> out(gate.size());
  for (size_t i = 0; i < gate.size(); ++i) out[i] = Silu(gate[i]) * up[i];
  return out;
}

struct Grads {
  std::vector<double> dgate;
  std::vector<double> dup;
};

Grads ReferenceBackward(const std::vector<double>& dout, const std::vector<double>& gate,
                        const std::vector<double>& up) {
  Grads g{std::vector<double>(gate.size()), std::vector<double>(gate.size())};
  for (size_t i = 0; i < gate.size(); ++i) {
    const double s = 1.0 / (1.0 + std::exp(-gate[i]));
    g.dgate[i] = dout[i] * up[i] * s * (1.0 + gate[i] * (1.0 - s));
    g.dup[i] = dout[i] * Silu(gate[i]);
  }
  return g;
}

struct Inputs {
  std::vector<float> gate;
  std::vector<float> up;
  std::vector<float> dout;
};

// Gates span [-8, 8): both tails of the sigmoid as well as its middle.
Inputs MakeInputs(int64_t n, uint64_t seed) {
  const size_t size = static_cast<size_t>(n);
  return Inputs{RandomVector(size, seed, 8.0f), RandomVector(size, seed + 1),
                RandomVector(size, seed + 2)};
}

class SwiGluTest : public ::testing::TestWithParam<int64_t> {};

TEST_P(SwiGluTest, ForwardMatchesDoubleReference) {
  const int64_t n = GetParam();
  const Inputs in = MakeInputs(n, 1);
  std::vector<float> out(static_cast<size_t>(n));
  SwiGluForward(out.data(), in.gate.data(), in.up.data(), n);
  EXPECT_LE(RelativeError(out, ReferenceForward(ToDouble(in.gate), ToDouble(in.up))),
            kFp32Tolerance);
}

TEST_P(SwiGluTest, BackwardMatchesFiniteDifferences) {
  const int64_t n = GetParam();
  const Inputs in = MakeInputs(n, 10);
  const std::vector<double> gate = ToDouble(in.gate);
  const std::vector<double> up = ToDouble(in.up);
  const std::vector<double> w = ToDouble(in.dout);  // loss = sum(out * w), so dout = w

  const std::vector<double> numeric_dgate = FiniteDifferenceGradient(
      [&](const std::vector<double>& v) { return Dot(ReferenceForward(v, up), w); }, gate);
  const std::vector<double> numeric_dup = FiniteDifferenceGradient(
      [&](const std::vector<double>& v) { return Dot(ReferenceForward(gate, v), w); }, up);
  const Grads analytic = ReferenceBackward(w, gate, up);
  EXPECT_LE(RelativeError(analytic.dgate, numeric_dgate), kFiniteDifferenceTolerance);
  EXPECT_LE(RelativeError(analytic.dup, numeric_dup), kFiniteDifferenceTolerance);

  std::vector<float> dgate(gate.size(), 0.0f);
  std::vector<float> dup(gate.size(), 0.0f);
  SwiGluBackward(dgate.data(), dup.data(), in.dout.data(), in.gate.data(), in.up.data(), n);
  EXPECT_LE(RelativeError(dgate, numeric_dgate), kFp32Tolerance);
  EXPECT_LE(RelativeError(dup, numeric_dup), kFp32Tolerance);
  EXPECT_LE(RelativeError(dgate, analytic.dgate), kFp32Tolerance);
  EXPECT_LE(RelativeError(dup, analytic.dup), kFp32Tolerance);
}

TEST_P(SwiGluTest, BackwardAccumulates) {
  const int64_t n = GetParam();
  const Inputs in = MakeInputs(n, 20);
  const std::vector<float> prior_dgate = RandomVector(static_cast<size_t>(n), 30);
  const std::vector<float> prior_dup = RandomVector(static_cast<size_t>(n), 31);
  std::vector<float> dgate = prior_dgate;
  std::vector<float> dup = prior_dup;
  SwiGluBackward(dgate.data(), dup.data(), in.dout.data(), in.gate.data(), in.up.data(), n);
  const Grads want = ReferenceBackward(ToDouble(in.dout), ToDouble(in.gate), ToDouble(in.up));
  EXPECT_LE(RelativeError(Subtract(ToDouble(dgate), ToDouble(prior_dgate)), want.dgate),
            kFp32Tolerance);
  EXPECT_LE(RelativeError(Subtract(ToDouble(dup), ToDouble(prior_dup)), want.dup), kFp32Tolerance);
}

INSTANTIATE_TEST_SUITE_P(Sizes, SwiGluTest, ::testing::Values(1, 7, 64, 1001));

// Every gate on a 1/64 grid over [-80, 80], element by element: the exponential inside must be
// accurate to a few ulp everywhere, not only on average (1e-6 is about 16 float ulp).
TEST(SwiGlu, AccurateElementwiseAcrossGateRange) {
  std::vector<float> gate;
  for (int i = -80 * 64; i <= 80 * 64; ++i) gate.push_back(static_cast<float>(i) / 64.0f);
  const int64_t n = static_cast<int64_t>(gate.size());
  const std::vector<float> ones(gate.size(), 1.0f);
  std::vector<float> out(gate.size());
  SwiGluForward(out.data(), gate.data(), ones.data(), n);
  std::vector<float> dgate(gate.size(), 0.0f);
  std::vector<float> dup(gate.size(), 0.0f);
  SwiGluBackward(dgate.data(), dup.data(), ones.data(), gate.data(), ones.data(), n);
  for (size_t i = 0; i < gate.size(); ++i) {
    const double want = Silu(gate[i]);
    EXPECT_NEAR(out[i], want, 1e-6 * std::abs(want)) << "gate " << gate[i];
    EXPECT_NEAR(dup[i], want, 1e-6 * std::abs(want)) << "gate " << gate[i];
  }
}

// Far in the tails e^-g overflows or vanishes; the results must still be the exact limits.
TEST(SwiGlu, SaturatesWithoutNaN) {
  const std::vector<float> gate = {-1e4f, -100.0f, 100.0f, 1e4f};
  const std::vector<float> up = {2.0f, 2.0f, 2.0f, 2.0f};
  const std::vector<float> dout = {1.0f, 1.0f, 1.0f, 1.0f};
  std::vector<float> out(4);
  SwiGluForward(out.data(), gate.data(), up.data(), 4);
  std::vector<float> dgate(4, 0.0f);
  std::vector<float> dup(4, 0.0f);
  SwiGluBackward(dgate.data(), dup.data(), dout.data(), gate.data(), up.data(), 4);
  const std::vector<float> want_out = {-0.0f, -0.0f, 200.0f, 2e4f};
  const std::vector<float> want_dgate = {0.0f, 0.0f, 2.0f, 2.0f};
  const std::vector<float> want_dup = {-0.0f, -0.0f, 100.0f, 1e4f};
  for (int i = 0; i < 4; ++i) {
    EXPECT_FLOAT_EQ(out[i], want_out[i]) << i;
    EXPECT_FLOAT_EQ(dgate[i], want_dgate[i]) << i;
    EXPECT_FLOAT_EQ(dup[i], want_dup[i]) << i;
  }
}

}  // namespace
}  // namespace loom
