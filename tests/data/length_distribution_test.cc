#include "data/length_distribution.h"

#include <vector>

#include "data/length_stats.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/data/temp_dir.h"

namespace loom {
namespace {

using ::testing::HasSubstr;
using testing_util::TempDir;
using testing_util::WriteFile;

TEST(LengthDistributionTest, SamplingIsDeterministicFromSeed) {
  absl::StatusOr<LengthDistribution> dist = LengthDistribution::Preset("byted");
  ASSERT_TRUE(dist.ok()) << dist.status();
  EXPECT_EQ(dist->Sample(1000, 5), dist->Sample(1000, 5));
  EXPECT_NE(dist->Sample(1000, 5), dist->Sample(1000, 6));
}

TEST(LengthDistributionTest, BucketSamplesStayInsideTheirBuckets) {
  absl::StatusOr<LengthDistribution> dist =
      LengthDistribution::FromBuckets("two", "test", {{10, 11, 0.5}, {100, 200, 0.5}});
  ASSERT_TRUE(dist.ok()) << dist.status();
  EXPECT_EQ(dist->min_length(), 10);
  EXPECT_EQ(dist->max_length(), 199);
  int tens = 0;
  for (int64_t length : dist->Sample(10000, 1)) {
    if (length == 10) {
      ++tens;
    } else {
      ASSERT_GE(length, 100);
      ASSERT_LT(length, 200);
    }
  }
  EXPECT_NEAR(tens, 5000, 250);
}

TEST(LengthDistributionTest, LogUniformInsideABucket) {
  // Log-uniform on [1K, 1M): the geometric midpoint, 32K, splits the samples in half.
  absl::StatusOr<LengthDistribution> dist =
      LengthDistribution::FromBuckets("wide", "test", {{1024, 1024 * 1024, 1.0}});
  ASSERT_TRUE(dist.ok());
  const LengthStats stats(dist->Sample(100000, 3));
  EXPECT_NEAR(stats.FractionOfSamplesAtLeast(32 * 1024), 0.5, 0.01);
  EXPECT_NEAR(stats.Quantile(0.5), 32 * 1024, 32 * 1024 * 0.05);
}

TEST(LengthDistributionTest, BadBucketsAreRejected) {
  EXPECT_FALSE(LengthDistribution::FromBuckets("x", "", {}).ok());
  EXPECT_FALSE(LengthDistribution::FromBuckets("x", "", {{0, 5, 1.0}}).ok());
  EXPECT_FALSE(LengthDistribution::FromBuckets("x", "", {{5, 5, 1.0}}).ok());
  EXPECT_FALSE(LengthDistribution::FromBuckets("x", "", {{1, 5, -0.1}, {5, 6, 1.1}}).ok());
  const absl::StatusOr<LengthDistribution> sum =
      LengthDistribution::FromBuckets("x", "", {{1, 5, 0.5}, {5, 9, 0.4}});
  ASSERT_FALSE(sum.ok());
  EXPECT_THAT(sum.status().message(), HasSubstr("sum to 0.9"));
}

TEST(LengthDistributionTest, EmpiricalSamplesOnlyGivenLengths) {
  absl::StatusOr<LengthDistribution> dist = LengthDistribution::FromLengths("e", {3, 3, 7, 100});
  ASSERT_TRUE(dist.ok());
  EXPECT_TRUE(dist->empirical());
  EXPECT_EQ(dist->min_length(), 3);
  EXPECT_EQ(dist->max_length(), 100);
  int threes = 0;
  for (int64_t length : dist->Sample(20000, 2)) {
    ASSERT_TRUE(length == 3 || length == 7 || length == 100) << length;
    threes += length == 3;
  }
  EXPECT_NEAR(threes, 10000, 400);
  EXPECT_FALSE(LengthDistribution::FromLengths("e", {}).ok());
  EXPECT_FALSE(LengthDistribution::FromLengths("e", {4, 0}).ok());
}

TEST(LengthDistributionTest, FromIndex) {
  TempDir dir;
  ASSERT_TRUE(WriteShard(dir / "s.bin", std::vector<uint32_t>{1, 9, 2, 2, 9, 9}).ok());
  absl::StatusOr<Shard> shard = Shard::Open(dir / "s.bin", 10);
  ASSERT_TRUE(shard.ok());
  absl::StatusOr<LengthDistribution> dist =
      LengthDistribution::FromIndex("shard", DocumentIndex::Build(*shard, 9));
  ASSERT_TRUE(dist.ok());
  EXPECT_EQ(dist->min_length(), 1);
  EXPECT_EQ(dist->max_length(), 3);
}

TEST(LengthsFileTest, ParsesLengthsCommentsAndBlankLines) {
  TempDir dir;
  const std::string path = dir / "lengths.txt";
  WriteFile(path, "# observed lengths\n12\n\n  40 \r\n7\n");
  absl::StatusOr<LengthDistribution> dist = LengthDistribution::FromLengthsFile(path);
  ASSERT_TRUE(dist.ok()) << dist.status();
  EXPECT_EQ(dist->min_length(), 7);
  EXPECT_EQ(dist->max_length(), 40);
  EXPECT_THAT(dist->source(), HasSubstr("3 lengths"));
}

TEST(LengthsFileTest, BadLineNamesFileAndLine) {
  TempDir dir;
  const std::string path = dir / "lengths.txt";
  for (const std::string bad : {"12x", "-4", "0", "1.5", "abc", "99999999999999999999"}) {
    WriteFile(path, "10\n# fine\n" + bad + "\n20\n");
    absl::StatusOr<LengthDistribution> dist = LengthDistribution::FromLengthsFile(path);
    ASSERT_FALSE(dist.ok()) << bad;
    EXPECT_EQ(dist.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(dist.status().message(), HasSubstr(path + ":3:"));
    EXPECT_THAT(dist.status().message(), HasSubstr(bad));
  }
}

TEST(LengthsFileTest, MissingAndEmptyFiles) {
  TempDir dir;
  absl::StatusOr<LengthDistribution> missing =
      LengthDistribution::FromLengthsFile(dir / "none.txt");
  ASSERT_FALSE(missing.ok());
  EXPECT_THAT(missing.status().message(), HasSubstr(dir / "none.txt"));
  WriteFile(dir / "empty.txt", "# nothing\n\n");
  absl::StatusOr<LengthDistribution> empty = LengthDistribution::FromLengthsFile(dir / "empty.txt");
  ASSERT_FALSE(empty.ok());
  EXPECT_THAT(empty.status().message(), HasSubstr("no lengths"));
}

TEST(LengthStatsTest, FractionsAndQuantiles) {
  const LengthStats stats({1, 2, 3, 4, 10});
  EXPECT_EQ(stats.count(), 5);
  EXPECT_EQ(stats.total_tokens(), 20);
  EXPECT_DOUBLE_EQ(stats.mean(), 4.0);
  EXPECT_DOUBLE_EQ(stats.FractionOfSamplesAtLeast(4), 0.4);
  EXPECT_DOUBLE_EQ(stats.FractionOfTokensAtLeast(4), 14.0 / 20.0);
  EXPECT_DOUBLE_EQ(stats.FractionOfSamplesAtLeast(11), 0.0);
  EXPECT_DOUBLE_EQ(stats.FractionOfTokensAtLeast(1), 1.0);
  EXPECT_EQ(stats.Quantile(0.0), 1);
  EXPECT_EQ(stats.Quantile(0.5), 3);
  EXPECT_EQ(stats.Quantile(0.8), 4);
  EXPECT_EQ(stats.Quantile(1.0), 10);
  EXPECT_EQ(stats.min(), 1);
  EXPECT_EQ(stats.max(), 10);
  const LengthStats empty({});
  EXPECT_EQ(empty.FractionOfTokensAtLeast(1), 0.0);
  EXPECT_EQ(empty.Quantile(0.5), 0);
}

}  // namespace
}  // namespace loom
