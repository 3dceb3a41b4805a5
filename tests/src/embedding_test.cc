#include "src/kernels/embedding.h"

#include <gtest/gtest.h>

#include <cstdint>
#include <vector>

#include "tests/src/test_util.h"

namespace loom {
namespace {

using test::Dot;
using test::FiniteDifferenceGradient;
using test::kFiniteDifferenceTolerance;
using test::kFp32Tolerance;
using test::RandomTokens;
using test::RandomVector;
using test::RelativeError;
using test::Subtract;
using test::ToDouble;

struct Shape {
  int T;
  int V;
  int C;
};

std::vector<double> ReferenceForward(const std::vector<double>& table,
                                     const std::vector<int32_t>& tokens, int C) {
  std::vector<double> out(tokens.size() * C);
  for (size_t t = 0; t < tokens.size(); ++t) {
    for (int c = 0; c < C; ++c) out[t * C + c] = table[static_cast<size_t>(tokens[t]) * C + c];
  }
  return out;
}

// Gradient of sum(out * w) with respect to the table.
std::vector<double> ReferenceBackward(const std::vector<double>& w,
                                      const std::vector<int32_t>& tokens, int V, int C) {
  std::vector<double> dtable(static_cast<size_t>(V) * C, 0.0);
  for (size_t t = 0; t < tokens.size(); ++t) {
    for (int c = 0; c < C; ++c) dtable[static_cast<size_t>(tokens[t]) * C + c] += w[t * C + c];
  }
  return dtable;
}

class EmbeddingTest : public ::testing::TestWithParam<Shape> {};

TEST_P(EmbeddingTest, ForwardCopiesTableRows) {
  const Shape s = GetParam();
  const std::vector<float> table = RandomVector(static_cast<size_t>(s.V) * s.C, 1);
  const std::vector<int32_t> tokens = RandomTokens(s.T, 2, s.V);
  std::vector<float> out(static_cast<size_t>(s.T) * s.C, -1.0f);
  EmbeddingForward(out.data(), tokens.data(), table.data(), s.T, s.C);
  // A lookup is a copy: exact, not merely close.
  EXPECT_EQ(RelativeError(out, ReferenceForward(ToDouble(table), tokens, s.C)), 0.0);
}

TEST_P(EmbeddingTest, BackwardMatchesFiniteDifferences) {
  const Shape s = GetParam();
  const std::vector<float> table = RandomVector(static_cast<size_t>(s.V) * s.C, 3);
  const std::vector<int32_t> tokens = RandomTokens(s.T, 4, s.V);
  const std::vector<float> w = RandomVector(static_cast<size_t>(s.T) * s.C, 5);

  const std::vector<double> numeric = FiniteDifferenceGradient(
      [&](const std::vector<double>& x) {
        return Dot(ReferenceForward(x, tokens, s.C), ToDouble(w));
      },
      ToDouble(table));
  const std::vector<double> analytic = ReferenceBackward(ToDouble(w), tokens, s.V, s.C);
  EXPECT_LE(RelativeError(analytic, numeric), kFiniteDifferenceTolerance);

  std::vector<float> dtable(table.size(), 0.0f);
  EmbeddingBackward(dtable.data(), tokens.data(), w.data(), s.T, s.C);
  EXPECT_LE(RelativeError(dtable, numeric), kFp32Tolerance);
  EXPECT_LE(RelativeError(dtable, analytic), kFp32Tolerance);
}

TEST_P(EmbeddingTest, BackwardAccumulates) {
  const Shape s = GetParam();
  const std::vector<int32_t> tokens = RandomTokens(s.T, 6, s.V);
  const std::vector<float> dout = RandomVector(static_cast<size_t>(s.T) * s.C, 7);
  const std::vector<float> prior = RandomVector(static_cast<size_t>(s.V) * s.C, 8);
  std::vector<float> dtable = prior;
  EmbeddingBackward(dtable.data(), tokens.data(), dout.data(), s.T, s.C);
  EXPECT_LE(RelativeError(Subtract(ToDouble(dtable), ToDouble(prior)),
                          ReferenceBackward(ToDouble(dout), tokens, s.V, s.C)),
            kFp32Tolerance);
}

// V < T forces repeated tokens; C = 37 and 100 leave ragged channel slices between threads.
INSTANTIATE_TEST_SUITE_P(Shapes, EmbeddingTest,
                         ::testing::Values(Shape{1, 3, 4}, Shape{6, 4, 5}, Shape{9, 3, 37},
                                           Shape{12, 5, 100}));

// Many rows of one token: a data race on the shared table row would drop additions.
TEST(EmbeddingBackward, RepeatedTokenSumsEveryRow) {
  const int T = 4096;
  const int C = 80;
  const std::vector<int32_t> tokens(T, 2);
  const std::vector<float> dout = RandomVector(static_cast<size_t>(T) * C, 9);
  std::vector<float> dtable(4 * C, 0.0f);
  EmbeddingBackward(dtable.data(), tokens.data(), dout.data(), T, C);
  EXPECT_LE(RelativeError(dtable, ReferenceBackward(ToDouble(dout), tokens, 4, C)), kFp32Tolerance);
}

}  // namespace
}  // namespace loom
