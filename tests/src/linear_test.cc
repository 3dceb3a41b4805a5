#include "src/kernels/linear.h"

#include <gtest/gtest.h>

#include <cmath>
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

struct Shape {
  int T;
  int IC;
  int OC;
};

size_t Size(int a, int b) { return static_cast<size_t>(a) * b; }

std::vector<double> ReferenceForward(const std::vector<double>& inp,
                                     const std::vector<double>& weight, const Shape& s) {
  std::vector<double> out(Size(s.T, s.OC));
  for (int t = 0; t < s.T; ++t) {
    for (int o = 0; o < s.OC; ++o) {
      double sum = 0.0;
      for (int i = 0; i < s.IC; ++i) sum += inp[Size(t, s.IC) + i] * weight[Size(o, s.IC) + i];
      out[Size(t, s.OC) + o] = sum;
    }
  }
  return out;
}

struct Grads {
  std::vector<double> dinp;
  std::vector<double> dweight;
};

Grads ReferenceBackward(const std::vector<double>& dout, const std::vector<double>& inp,
                        const std::vector<double>& weight, const Shape& s) {
  Grads g{std::vector<double>(Size(s.T, s.IC), 0.0), std::vector<double>(Size(s.OC, s.IC), 0.0)};
  for (int t = 0; t < s.T; ++t) {
    for (int o = 0; o < s.OC; ++o) {
      const double d = dout[Size(t, s.OC) + o];
      for (int i = 0; i < s.IC; ++i) {
        g.dinp[Size(t, s.IC) + i] += d * weight[Size(o, s.IC) + i];
        g.dweight[Size(o, s.IC) + i] += d * inp[Size(t, s.IC) + i];
      }
    }
  }
  return g;
}

struct Inputs {
  std::vector<float> inp;
  std::vector<float> weight;
  std::vector<float> dout;
};

Inputs MakeInputs(const Shape& s, uint64_t seed) {
  return Inputs{RandomVector(Size(s.T, s.IC), seed), RandomVector(Size(s.OC, s.IC), seed + 1),
                RandomVector(Size(s.T, s.OC), seed + 2)};
}

class LinearTest : public ::testing::TestWithParam<Shape> {};

TEST_P(LinearTest, ForwardMatchesDoubleReferenceAndOverwrites) {
  const Shape s = GetParam();
  const Inputs in = MakeInputs(s, 1);
  // NaN in the output buffer must not leak through: the forward overwrites.
  std::vector<float> out(Size(s.T, s.OC), NAN);
  LinearForward(out.data(), in.inp.data(), in.weight.data(), s.T, s.IC, s.OC);
  EXPECT_LE(RelativeError(out, ReferenceForward(ToDouble(in.inp), ToDouble(in.weight), s)),
            kFp32Tolerance);
}

TEST_P(LinearTest, BackwardMatchesFiniteDifferences) {
  const Shape s = GetParam();
  const Inputs in = MakeInputs(s, 10);
  const std::vector<double> inp = ToDouble(in.inp);
  const std::vector<double> weight = ToDouble(in.weight);
  const std::vector<double> w = ToDouble(in.dout);  // loss = sum(out * w), so dout = w

  const std::vector<double> numeric_dinp = FiniteDifferenceGradient(
      [&](const std::vector<double>& x) { return Dot(ReferenceForward(x, weight, s), w); }, inp);
  const std::vector<double> numeric_dweight = FiniteDifferenceGradient(
      [&](const std::vector<double>& x) { return Dot(ReferenceForward(inp, x, s), w); }, weight);
  const Grads analytic = ReferenceBackward(w, inp, weight, s);
  EXPECT_LE(RelativeError(analytic.dinp, numeric_dinp), kFiniteDifferenceTolerance);
  EXPECT_LE(RelativeError(analytic.dweight, numeric_dweight), kFiniteDifferenceTolerance);

  std::vector<float> dinp(inp.size(), 0.0f);
  std::vector<float> dweight(weight.size(), 0.0f);
  LinearBackward(dinp.data(), dweight.data(), in.dout.data(), in.inp.data(), in.weight.data(), s.T,
                 s.IC, s.OC);
  EXPECT_LE(RelativeError(dinp, numeric_dinp), kFp32Tolerance);
  EXPECT_LE(RelativeError(dweight, numeric_dweight), kFp32Tolerance);
  EXPECT_LE(RelativeError(dinp, analytic.dinp), kFp32Tolerance);
  EXPECT_LE(RelativeError(dweight, analytic.dweight), kFp32Tolerance);
}

TEST_P(LinearTest, BackwardAccumulates) {
  const Shape s = GetParam();
  const Inputs in = MakeInputs(s, 20);
  const std::vector<float> prior_dinp = RandomVector(Size(s.T, s.IC), 30);
  const std::vector<float> prior_dweight = RandomVector(Size(s.OC, s.IC), 31);
  std::vector<float> dinp = prior_dinp;
  std::vector<float> dweight = prior_dweight;
  LinearBackward(dinp.data(), dweight.data(), in.dout.data(), in.inp.data(), in.weight.data(), s.T,
                 s.IC, s.OC);
  const Grads want = ReferenceBackward(ToDouble(in.dout), ToDouble(in.inp), ToDouble(in.weight), s);
  EXPECT_LE(RelativeError(Subtract(ToDouble(dinp), ToDouble(prior_dinp)), want.dinp),
            kFp32Tolerance);
  EXPECT_LE(RelativeError(Subtract(ToDouble(dweight), ToDouble(prior_dweight)), want.dweight),
            kFp32Tolerance);
}

TEST_P(LinearTest, NullGradientsAreSkipped) {
  const Shape s = GetParam();
  const Inputs in = MakeInputs(s, 40);
  const Grads want = ReferenceBackward(ToDouble(in.dout), ToDouble(in.inp), ToDouble(in.weight), s);

  std::vector<float> dweight(Size(s.OC, s.IC), 0.0f);
  LinearBackward(nullptr, dweight.data(), in.dout.data(), in.inp.data(), in.weight.data(), s.T,
                 s.IC, s.OC);
  EXPECT_LE(RelativeError(dweight, want.dweight), kFp32Tolerance);

  std::vector<float> dinp(Size(s.T, s.IC), 0.0f);
  LinearBackward(dinp.data(), nullptr, in.dout.data(), in.inp.data(), in.weight.data(), s.T, s.IC,
                 s.OC);
  EXPECT_LE(RelativeError(dinp, want.dinp), kFp32Tolerance);

  LinearBackward(nullptr, nullptr, in.dout.data(), in.inp.data(), in.weight.data(), s.T, s.IC,
                 s.OC);
}

// Odd sizes keep sgemm off its aligned fast paths; the last is big enough for blocked kernels.
INSTANTIATE_TEST_SUITE_P(Shapes, LinearTest,
                         ::testing::Values(Shape{1, 3, 2}, Shape{1, 16, 1}, Shape{5, 7, 4},
                                           Shape{17, 33, 9}, Shape{32, 40, 48}));

}  // namespace
}  // namespace loom
