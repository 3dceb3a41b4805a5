#include "src/kernels/cross_entropy.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "tests/src/test_util.h"

namespace loom {
namespace {

using test::FiniteDifferenceGradient;
using test::kFiniteDifferenceTolerance;
using test::kFp32Tolerance;
using test::RandomTokens;
using test::RandomVector;
using test::RelativeError;
using test::ToDouble;

// The design's bound for losses (section 4): tighter than for gradients.
constexpr double kLossTolerance = 1e-6;

struct Shape {
  int T;
  int V;
};

size_t Size(int a, int b) { return static_cast<size_t>(a) * b; }

// Per-row losses in double: logsumexp shifted by the row max, 0 for ignored rows.
std::vector<double> ReferenceLosses(const std::vector<double>& logits,
                                    const std::vector<int32_t>& targets, int V) {
  std::vector<double> losses(targets.size(), 0.0);
  for (size_t t = 0; t < targets.size(); ++t) {
    if (targets[t] == kIgnoreTarget) continue;
    const double* x = logits.data() + t * V;
    double m = -INFINITY;
    for (int j = 0; j < V; ++j) m = std::max(m, x[j]);
    double s = 0.0;
    for (int j = 0; j < V; ++j) s += std::exp(x[j] - m);
    losses[t] = m + std::log(s) - x[targets[t]];
  }
  return losses;
}

double ReferenceScaledLoss(const std::vector<double>& logits, const std::vector<int32_t>& targets,
                           int V, double grad_scale) {
  double sum = 0.0;
  for (double l : ReferenceLosses(logits, targets, V)) sum += l;
  return grad_scale * sum;
}

std::vector<double> ReferenceGradient(const std::vector<double>& logits,
                                      const std::vector<int32_t>& targets, int V,
                                      double grad_scale) {
  std::vector<double> d(logits.size(), 0.0);
  for (size_t t = 0; t < targets.size(); ++t) {
    if (targets[t] == kIgnoreTarget) continue;
    const double* x = logits.data() + t * V;
    double m = -INFINITY;
    for (int j = 0; j < V; ++j) m = std::max(m, x[j]);
    double s = 0.0;
    for (int j = 0; j < V; ++j) s += std::exp(x[j] - m);
    for (int j = 0; j < V; ++j) d[t * V + j] = grad_scale * std::exp(x[j] - m) / s;
    d[t * V + targets[t]] -= grad_scale;
  }
  return d;
}

// Every third row is ignored, as at document ends.
std::vector<int32_t> MakeTargets(const Shape& s, uint64_t seed) {
  std::vector<int32_t> targets = RandomTokens(s.T, seed, s.V);
  for (int t = 2; t < s.T; t += 3) targets[t] = kIgnoreTarget;
  return targets;
}

struct Result {
  std::vector<float> dlogits;
  std::vector<float> losses;
  double total;
};

Result RunKernel(const std::vector<float>& logits, const std::vector<int32_t>& targets,
                 const Shape& s, float grad_scale) {
  // NaN in the outputs must not leak through: both are overwritten.
  Result r{std::vector<float>(logits.size(), NAN), std::vector<float>(s.T, NAN), 0.0};
  r.total = SoftmaxCrossEntropy(r.dlogits.data(), r.losses.data(), logits.data(), targets.data(),
                                s.T, s.V, grad_scale);
  return r;
}

void ExpectMatchesReference(const Result& got, const std::vector<float>& logits,
                            const std::vector<int32_t>& targets, const Shape& s, float grad_scale) {
  const std::vector<double> x = ToDouble(logits);
  const std::vector<double> losses = ReferenceLosses(x, targets, s.V);
  double total = 0.0;
  for (double l : losses) total += l;
  EXPECT_LE(RelativeError(got.losses, losses), kLossTolerance);
  EXPECT_LE(std::abs(got.total - total), kLossTolerance * std::abs(total));
  EXPECT_LE(RelativeError(got.dlogits, ReferenceGradient(x, targets, s.V, grad_scale)),
            kFp32Tolerance);
}

class CrossEntropyTest : public ::testing::TestWithParam<Shape> {};

TEST_P(CrossEntropyTest, MatchesDoubleReference) {
  const Shape s = GetParam();
  const std::vector<float> logits = RandomVector(Size(s.T, s.V), 1, 6.0f);
  const std::vector<int32_t> targets = MakeTargets(s, 2);
  const float grad_scale = 1.0f / static_cast<float>(s.T);
  ExpectMatchesReference(RunKernel(logits, targets, s, grad_scale), logits, targets, s, grad_scale);
}

TEST_P(CrossEntropyTest, GradientMatchesFiniteDifferences) {
  const Shape s = GetParam();
  const std::vector<float> logits = RandomVector(Size(s.T, s.V), 3, 3.0f);
  const std::vector<int32_t> targets = MakeTargets(s, 4);
  const float grad_scale = 0.25f;
  const std::vector<double> numeric = FiniteDifferenceGradient(
      [&](const std::vector<double>& v) {
        return ReferenceScaledLoss(v, targets, s.V, grad_scale);
      },
      ToDouble(logits));
  const std::vector<double> analytic =
      ReferenceGradient(ToDouble(logits), targets, s.V, grad_scale);
  EXPECT_LE(RelativeError(analytic, numeric), kFiniteDifferenceTolerance);
  EXPECT_LE(RelativeError(RunKernel(logits, targets, s, grad_scale).dlogits, numeric),
            kFp32Tolerance);
}

// The header allows dlogits to alias logits: the in-place result must be the same bits.
TEST_P(CrossEntropyTest, InPlaceGradientIsIdentical) {
  const Shape s = GetParam();
  const std::vector<float> logits = RandomVector(Size(s.T, s.V), 5, 6.0f);
  const std::vector<int32_t> targets = MakeTargets(s, 6);
  const Result separate = RunKernel(logits, targets, s, 0.5f);
  std::vector<float> in_place = logits;
  const double total = SoftmaxCrossEntropy(in_place.data(), nullptr, in_place.data(),
                                           targets.data(), s.T, s.V, 0.5f);
  EXPECT_EQ(in_place, separate.dlogits);
  EXPECT_EQ(total, separate.total);
}

INSTANTIATE_TEST_SUITE_P(Shapes, CrossEntropyTest,
                         ::testing::Values(Shape{1, 1}, Shape{1, 5}, Shape{4, 7}, Shape{7, 33},
                                           Shape{9, 1000}));

TEST(CrossEntropy, IgnoredRowsHaveNoLossAndZeroGradient) {
  const Shape s{3, 6};
  const std::vector<float> logits = RandomVector(Size(s.T, s.V), 7);
  const std::vector<int32_t> targets = {kIgnoreTarget, 4, kIgnoreTarget};
  const Result r = RunKernel(logits, targets, s, 1.0f);
  EXPECT_EQ(r.losses[0], 0.0f);
  EXPECT_EQ(r.losses[2], 0.0f);
  EXPECT_GT(r.losses[1], 0.0f);
  EXPECT_EQ(static_cast<float>(r.total), r.losses[1]);
  for (int j = 0; j < s.V; ++j) {
    EXPECT_EQ(r.dlogits[j], 0.0f);
    EXPECT_EQ(r.dlogits[2 * s.V + j], 0.0f);
  }
  const std::vector<int32_t> none(s.T, kIgnoreTarget);
  EXPECT_EQ(RunKernel(logits, none, s, 1.0f).total, 0.0);
}

// Logits of magnitude 1e4 overflow exp() unless shifted by the row max; the target sits at the
// top, the bottom and in between.
TEST(CrossEntropy, LargeLogitsStayFiniteAndAccurate) {
  const Shape s{4, 50};
  std::vector<float> logits = RandomVector(Size(s.T, s.V), 8, 3.0f);
  for (int t = 0; t < s.T; ++t) {
    for (int j = 0; j < s.V; ++j) logits[Size(t, s.V) + j] += (j % 2 == 0) ? 1e4f : -1e4f;
  }
  const std::vector<int32_t> targets = {0, 1, 10, 33};
  const Result r = RunKernel(logits, targets, s, 0.25f);
  for (float l : r.losses) EXPECT_TRUE(std::isfinite(l));
  for (float d : r.dlogits) EXPECT_TRUE(std::isfinite(d));
  ExpectMatchesReference(r, logits, targets, s, 0.25f);
}

}  // namespace
}  // namespace loom
