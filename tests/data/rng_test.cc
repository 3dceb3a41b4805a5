#include "data/rng.h"

#include <set>
#include <vector>

#include "gtest/gtest.h"

namespace loom {
namespace {

TEST(SplitMix64Test, MatchesPublishedSequence) {
  // The published test sequence for SplitMix64 seeded with 1234567.
  SplitMix64 rng(1234567);
  EXPECT_EQ(rng.Next(), 6457827717110365317ULL);
  EXPECT_EQ(rng.Next(), 3203168211198807973ULL);
  EXPECT_EQ(rng.Next(), 9817491932198370423ULL);
  EXPECT_EQ(rng.Next(), 4593380528125082431ULL);
  EXPECT_EQ(rng.Next(), 16408922859458223821ULL);
}

TEST(Xoshiro256Test, SequenceIsPinned) {
  // State expanded from seed 42 by SplitMix64; values from an independent implementation of the
  // reference algorithm. A change here changes every seeded shuffle and sample in loom.
  Xoshiro256 rng(42);
  EXPECT_EQ(rng.Next(), 1546998764402558742ULL);
  EXPECT_EQ(rng.Next(), 6990951692964543102ULL);
  EXPECT_EQ(rng.Next(), 12544586762248559009ULL);
  EXPECT_EQ(rng.Next(), 17057574109182124193ULL);
}

TEST(Xoshiro256Test, DoublesAndBoundedIntegersStayInRange) {
  Xoshiro256 rng(7);
  std::vector<int> counts(10, 0);
  for (int i = 0; i < 100000; ++i) {
    const double d = rng.NextDouble();
    ASSERT_GE(d, 0.0);
    ASSERT_LT(d, 1.0);
    const uint64_t k = rng.NextBelow(10);
    ASSERT_LT(k, 10u);
    ++counts[k];
  }
  for (int c : counts) EXPECT_NEAR(c, 10000, 500);
  EXPECT_EQ(rng.NextBelow(1), 0u);
}

TEST(StreamSeedTest, StreamsDiffer) {
  std::set<uint64_t> seeds;
  for (uint64_t seed = 0; seed < 4; ++seed) {
    for (uint64_t stream = 0; stream < 100; ++stream) seeds.insert(StreamSeed(seed, stream));
  }
  EXPECT_EQ(seeds.size(), 400u);
}

}  // namespace
}  // namespace loom
