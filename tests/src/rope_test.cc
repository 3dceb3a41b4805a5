#include "src/kernels/rope.h"

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

constexpr float kTheta = 10000.0f;

struct Shape {
  int H;
  int D;
  std::vector<int32_t> pos;  // T = pos.size()
  int T() const { return static_cast<int>(pos.size()); }
  size_t numel() const { return pos.size() * H * D; }
};

double Angle(int32_t pos, int i, int D) {
  return pos * std::pow(static_cast<double>(kTheta), -2.0 * i / D);
}

// Rotates each (i, i + D/2) pair by +angle (sign = 1) or -angle (sign = -1), entirely in double.
std::vector<double> ReferenceRotate(const std::vector<double>& x, const Shape& s, double sign) {
  const int half = s.D / 2;
  std::vector<double> y(x.size());
  for (int t = 0; t < s.T(); ++t) {
    for (int h = 0; h < s.H; ++h) {
      const size_t base = (static_cast<size_t>(t) * s.H + h) * s.D;
      for (int i = 0; i < half; ++i) {
        const double c = std::cos(Angle(s.pos[t], i, s.D));
        const double sn = sign * std::sin(Angle(s.pos[t], i, s.D));
        y[base + i] = x[base + i] * c - x[base + i + half] * sn;
        y[base + i + half] = x[base + i + half] * c + x[base + i] * sn;
      }
    }
  }
  return y;
}

std::vector<double> ReferenceForward(const std::vector<double>& x, const Shape& s) {
  return ReferenceRotate(x, s, 1.0);
}
std::vector<double> ReferenceBackward(const std::vector<double>& dout, const Shape& s) {
  return ReferenceRotate(dout, s, -1.0);
}

// Positions restart at 0 per packed document and need not be sorted; 100000 checks that large
// angles keep their phase.
class RopeTest : public ::testing::TestWithParam<Shape> {};

TEST_P(RopeTest, TableMatchesDoublePrecisionAngles) {
  const Shape& s = GetParam();
  const RopeTable table = MakeRopeTable(s.pos.data(), s.T(), s.D, kTheta);
  ASSERT_EQ(table.T, s.T());
  ASSERT_EQ(table.half, s.D / 2);
  for (int t = 0; t < s.T(); ++t) {
    for (int i = 0; i < s.D / 2; ++i) {
      const size_t k = static_cast<size_t>(t) * (s.D / 2) + i;
      // Correctly rounded double values, so float storage is the only error: <= half an ulp of 1.
      EXPECT_NEAR(table.cos[k], std::cos(Angle(s.pos[t], i, s.D)), 6e-8) << t << " " << i;
      EXPECT_NEAR(table.sin[k], std::sin(Angle(s.pos[t], i, s.D)), 6e-8) << t << " " << i;
    }
  }
}

TEST_P(RopeTest, ForwardMatchesDoubleReferenceInPlaceToo) {
  const Shape& s = GetParam();
  const RopeTable table = MakeRopeTable(s.pos.data(), s.T(), s.D, kTheta);
  const std::vector<float> x = RandomVector(s.numel(), 1);
  std::vector<float> out(x.size());
  RopeForward(out.data(), x.data(), table, s.T(), s.H, s.D);
  EXPECT_LE(RelativeError(out, ReferenceForward(ToDouble(x), s)), kFp32Tolerance);

  std::vector<float> in_place = x;
  RopeForward(in_place.data(), in_place.data(), table, s.T(), s.H, s.D);
  EXPECT_EQ(in_place, out);
}

TEST_P(RopeTest, BackwardMatchesFiniteDifferences) {
  const Shape& s = GetParam();
  const std::vector<float> x = RandomVector(s.numel(), 2);
  const std::vector<float> w = RandomVector(s.numel(), 3);
  const std::vector<double> numeric = FiniteDifferenceGradient(
      [&](const std::vector<double>& v) { return Dot(ReferenceForward(v, s), ToDouble(w)); },
      ToDouble(x));
  const std::vector<double> analytic = ReferenceBackward(ToDouble(w), s);
  EXPECT_LE(RelativeError(analytic, numeric), kFiniteDifferenceTolerance);

  const RopeTable table = MakeRopeTable(s.pos.data(), s.T(), s.D, kTheta);
  std::vector<float> dinp(x.size(), 0.0f);
  RopeBackward(dinp.data(), w.data(), table, s.T(), s.H, s.D);
  EXPECT_LE(RelativeError(dinp, numeric), kFp32Tolerance);
  EXPECT_LE(RelativeError(dinp, analytic), kFp32Tolerance);
}

TEST_P(RopeTest, BackwardAccumulates) {
  const Shape& s = GetParam();
  const RopeTable table = MakeRopeTable(s.pos.data(), s.T(), s.D, kTheta);
  const std::vector<float> dout = RandomVector(s.numel(), 4);
  const std::vector<float> prior = RandomVector(s.numel(), 5);
  std::vector<float> dinp = prior;
  RopeBackward(dinp.data(), dout.data(), table, s.T(), s.H, s.D);
  EXPECT_LE(RelativeError(Subtract(ToDouble(dinp), ToDouble(prior)),
                          ReferenceBackward(ToDouble(dout), s)),
            kFp32Tolerance);
}

INSTANTIATE_TEST_SUITE_P(Shapes, RopeTest,
                         ::testing::Values(Shape{1, 2, {0}}, Shape{1, 8, {5}},
                                           Shape{2, 6, {0, 1, 2, 0, 1}},
                                           Shape{3, 16, {7, 0, 100000, 3}},
                                           Shape{4, 64, {0, 1, 2, 3, 4, 5, 0, 1, 2, 65535}}));

// Hugging Face "rotate_half": element i pairs with element i + D/2 (not with i + 1). With D = 4 the
// frequencies are 1 and 1/100, so a unit vector on element 0 at position 1 lands on elements 0, 2.
TEST(Rope, PairsElementWithTheOneHalfAHeadAway) {
  const int32_t pos = 1;
  const RopeTable table = MakeRopeTable(&pos, 1, 4, kTheta);
  const std::vector<float> x = {1.0f, 0.0f, 0.0f, 0.0f};
  std::vector<float> out(4);
  RopeForward(out.data(), x.data(), table, 1, 1, 4);
  EXPECT_FLOAT_EQ(out[0], static_cast<float>(std::cos(1.0)));
  EXPECT_EQ(out[1], 0.0f);
  EXPECT_FLOAT_EQ(out[2], static_cast<float>(std::sin(1.0)));
  EXPECT_EQ(out[3], 0.0f);

  const std::vector<float> y = {0.0f, 1.0f, 0.0f, 0.0f};
  RopeForward(out.data(), y.data(), table, 1, 1, 4);
  EXPECT_FLOAT_EQ(out[1], static_cast<float>(std::cos(0.01)));
  EXPECT_FLOAT_EQ(out[3], static_cast<float>(std::sin(0.01)));
}

}  // namespace
}  // namespace loom
