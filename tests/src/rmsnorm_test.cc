#include "src/kernels/rmsnorm.h"

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

constexpr float kEps = 1e-5f;

struct Shape {
  int T;
  int C;
};

size_t Size(int a, int b) { return static_cast<size_t>(a) * b; }

std::vector<double> ReferenceRstd(const std::vector<double>& x, const Shape& s) {
  std::vector<double> rstd(s.T);
  for (int t = 0; t < s.T; ++t) {
    double sum_sq = 0.0;
    for (int c = 0; c < s.C; ++c) sum_sq += x[Size(t, s.C) + c] * x[Size(t, s.C) + c];
    rstd[t] = 1.0 / std::sqrt(sum_sq / s.C + static_cast<double>(kEps));
  }
  return rstd;
}

std::vector<double> ReferenceForward(const std::vector<double>& x,
                                     const std::vector<double>& weight, const Shape& s) {
  const std::vector<double> rstd = ReferenceRstd(x, s);
  std::vector<double> y(x.size());
  for (int t = 0; t < s.T; ++t) {
    for (int c = 0; c < s.C; ++c) y[Size(t, s.C) + c] = x[Size(t, s.C) + c] * rstd[t] * weight[c];
  }
  return y;
}

struct Grads {
  std::vector<double> dinp;
  std::vector<double> dweight;
};

Grads ReferenceBackward(const std::vector<double>& dout, const std::vector<double>& x,
                        const std::vector<double>& weight, const Shape& s) {
  const std::vector<double> rstd = ReferenceRstd(x, s);
  Grads g{std::vector<double>(x.size(), 0.0), std::vector<double>(s.C, 0.0)};
  for (int t = 0; t < s.T; ++t) {
    const double r = rstd[t];
    double dot = 0.0;
    for (int c = 0; c < s.C; ++c) dot += dout[Size(t, s.C) + c] * weight[c] * x[Size(t, s.C) + c];
    for (int c = 0; c < s.C; ++c) {
      const size_t k = Size(t, s.C) + c;
      g.dinp[k] = r * weight[c] * dout[k] - x[k] * r * r * r * dot / s.C;
      g.dweight[c] += dout[k] * x[k] * r;
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
  return Inputs{RandomVector(Size(s.T, s.C), seed, 2.0f), RandomVector(s.C, seed + 1),
                RandomVector(Size(s.T, s.C), seed + 2)};
}

class RmsNormTest : public ::testing::TestWithParam<Shape> {};

TEST_P(RmsNormTest, ForwardMatchesDoubleReference) {
  const Shape s = GetParam();
  const Inputs in = MakeInputs(s, 1);
  std::vector<float> out(Size(s.T, s.C));
  std::vector<float> rstd(s.T);
  RmsNormForward(out.data(), rstd.data(), in.inp.data(), in.weight.data(), s.T, s.C, kEps);
  const std::vector<double> x = ToDouble(in.inp);
  EXPECT_LE(RelativeError(out, ReferenceForward(x, ToDouble(in.weight), s)), kFp32Tolerance);
  EXPECT_LE(RelativeError(rstd, ReferenceRstd(x, s)), kFp32Tolerance);
}

TEST_P(RmsNormTest, BackwardMatchesFiniteDifferences) {
  const Shape s = GetParam();
  const Inputs in = MakeInputs(s, 10);
  const std::vector<double> x = ToDouble(in.inp);
  const std::vector<double> weight = ToDouble(in.weight);
  const std::vector<double> w = ToDouble(in.dout);  // loss = sum(out * w), so dout = w

  const std::vector<double> numeric_dinp = FiniteDifferenceGradient(
      [&](const std::vector<double>& v) { return Dot(ReferenceForward(v, weight, s), w); }, x);
  const std::vector<double> numeric_dweight = FiniteDifferenceGradient(
      [&](const std::vector<double>& v) { return Dot(ReferenceForward(x, v, s), w); }, weight);
  const Grads analytic = ReferenceBackward(w, x, weight, s);
  EXPECT_LE(RelativeError(analytic.dinp, numeric_dinp), kFiniteDifferenceTolerance);
  EXPECT_LE(RelativeError(analytic.dweight, numeric_dweight), kFiniteDifferenceTolerance);

  std::vector<float> out(Size(s.T, s.C));
  std::vector<float> rstd(s.T);
  RmsNormForward(out.data(), rstd.data(), in.inp.data(), in.weight.data(), s.T, s.C, kEps);
  std::vector<float> dinp(x.size(), 0.0f);
  std::vector<float> dweight(s.C, 0.0f);
  RmsNormBackward(dinp.data(), dweight.data(), in.dout.data(), in.inp.data(), in.weight.data(),
                  rstd.data(), s.T, s.C);
  EXPECT_LE(RelativeError(dinp, numeric_dinp), kFp32Tolerance);
  EXPECT_LE(RelativeError(dweight, numeric_dweight), kFp32Tolerance);
  EXPECT_LE(RelativeError(dinp, analytic.dinp), kFp32Tolerance);
  EXPECT_LE(RelativeError(dweight, analytic.dweight), kFp32Tolerance);
}

TEST_P(RmsNormTest, BackwardAccumulates) {
  const Shape s = GetParam();
  const Inputs in = MakeInputs(s, 20);
  std::vector<float> out(Size(s.T, s.C));
  std::vector<float> rstd(s.T);
  RmsNormForward(out.data(), rstd.data(), in.inp.data(), in.weight.data(), s.T, s.C, kEps);
  const std::vector<float> prior_dinp = RandomVector(Size(s.T, s.C), 30);
  const std::vector<float> prior_dweight = RandomVector(s.C, 31);
  std::vector<float> dinp = prior_dinp;
  std::vector<float> dweight = prior_dweight;
  RmsNormBackward(dinp.data(), dweight.data(), in.dout.data(), in.inp.data(), in.weight.data(),
                  rstd.data(), s.T, s.C);
  const Grads want = ReferenceBackward(ToDouble(in.dout), ToDouble(in.inp), ToDouble(in.weight), s);
  EXPECT_LE(RelativeError(Subtract(ToDouble(dinp), ToDouble(prior_dinp)), want.dinp),
            kFp32Tolerance);
  EXPECT_LE(RelativeError(Subtract(ToDouble(dweight), ToDouble(prior_dweight)), want.dweight),
            kFp32Tolerance);
}

// T = 1, a width that is not a multiple of the vector length, and enough rows that every thread
// contributes a partial dweight.
INSTANTIATE_TEST_SUITE_P(Shapes, RmsNormTest,
                         ::testing::Values(Shape{1, 8}, Shape{1, 13}, Shape{3, 7}, Shape{6, 64},
                                           Shape{40, 24}));

}  // namespace
}  // namespace loom
