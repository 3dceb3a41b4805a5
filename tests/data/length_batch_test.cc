// Global batches of lengths: they reach the token budget, no length passes the context (a long
// draw is cut into pieces of it), and the same seed gives the same batch.
#include "data/length_batch.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <numeric>

namespace loom {
namespace {

TEST(LengthBatch, ReachesTheBudgetWithinTheContext) {
  const LengthDistribution dist = *LengthDistribution::Preset("byted");
  const std::vector<int64_t> batch = DrawLengthBatch(dist, 8 << 20, 65536, 3);
  const int64_t total = std::accumulate(batch.begin(), batch.end(), int64_t{0});
  EXPECT_GE(total, 8 << 20);
  EXPECT_LT(total - batch.back(), 8 << 20) << "it stops as soon as the budget is reached";
  EXPECT_LE(*std::max_element(batch.begin(), batch.end()), 65536);
  EXPECT_GE(*std::min_element(batch.begin(), batch.end()), 1);
  // Byted's longest samples (up to 4M) are cut at the context: whole pieces of 65,536 appear.
  EXPECT_GT(std::count(batch.begin(), batch.end(), 65536), 0);
  EXPECT_EQ(batch, DrawLengthBatch(dist, 8 << 20, 65536, 3));
  EXPECT_NE(batch, DrawLengthBatch(dist, 8 << 20, 65536, 4));
}

TEST(LengthBatch, APieceCutsALengthExactly) {
  // One length of 10 drawn again and again: a context of 4 cuts each into 4, 4, 2.
  const LengthDistribution dist = *LengthDistribution::FromLengths("tens", {10});
  EXPECT_EQ(DrawLengthBatch(dist, 20, 4, 1), (std::vector<int64_t>{4, 4, 2, 4, 4, 2}));
  EXPECT_EQ(DrawLengthBatch(dist, 25, 0, 1), (std::vector<int64_t>{10, 10, 10})) << "no cap";
}

}  // namespace
}  // namespace loom
