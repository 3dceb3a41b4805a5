// Each published preset, sampled with a fixed seed, against the figures its source publishes
// (DESIGN.md section 6). One million samples put the rarest checked class (Byted's 0.05% >= 2M)
// at ~500 samples, so the tolerances below sit well outside sampling noise while still pinning
// each figure.
#include <string>

#include "data/length_distribution.h"
#include "data/length_stats.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace loom {
namespace {

using ::testing::HasSubstr;

constexpr int64_t K = 1024;
constexpr int64_t M = 1024 * 1024;
constexpr int64_t kSamples = 1'000'000;
constexpr uint64_t kSeed = 20250301;

LengthStats SamplePreset(const std::string& name) {
  absl::StatusOr<LengthDistribution> dist = LengthDistribution::Preset(name);
  EXPECT_TRUE(dist.ok()) << dist.status();
  return LengthStats(dist->Sample(kSamples, kSeed));
}

TEST(LengthPresetsTest, Byted) {
  const LengthStats s = SamplePreset("byted");
  // ~80% of samples <= 4K: +- 1 point.
  EXPECT_NEAR(1.0 - s.FractionOfSamplesAtLeast(4 * K + 1), 0.80, 0.01);
  // 1% of samples >= 128K (+- 0.2 points) holding 44.3% of tokens (+- 2 points).
  EXPECT_NEAR(s.FractionOfSamplesAtLeast(128 * K), 0.01, 0.002);
  EXPECT_NEAR(s.FractionOfTokensAtLeast(128 * K), 0.443, 0.02);
  // 0.05% of samples >= 2M (+- 0.01 points) holding 12.1% of tokens (+- 2 points).
  EXPECT_NEAR(s.FractionOfSamplesAtLeast(2 * M), 0.0005, 0.0001);
  EXPECT_NEAR(s.FractionOfTokensAtLeast(2 * M), 0.121, 0.02);
  // 37% of tokens in sequences > 256K: +- 2 points.
  EXPECT_NEAR(s.FractionOfTokensAtLeast(256 * K + 1), 0.37, 0.02);
}

TEST(LengthPresetsTest, GitHub) {
  const LengthStats s = SamplePreset("github");
  // 16.2% of tokens in sequences > 128K and 9.8% in > 256K: +- 2 points each.
  EXPECT_NEAR(s.FractionOfTokensAtLeast(128 * K + 1), 0.162, 0.02);
  EXPECT_NEAR(s.FractionOfTokensAtLeast(256 * K + 1), 0.098, 0.02);
}

TEST(LengthPresetsTest, ChunkFlow) {
  const LengthStats s = SamplePreset("chunkflow");
  const double below_1k = 1.0 - s.FractionOfSamplesAtLeast(1 * K);
  const double below_4k = 1.0 - s.FractionOfSamplesAtLeast(4 * K);
  const double below_32k = 1.0 - s.FractionOfSamplesAtLeast(32 * K);
  // ~90% < 1K, ~8% in [1K, 4K): +- 0.5 points; ~2% in [4K, 32K): +- 0.25 points.
  EXPECT_NEAR(below_1k, 0.90, 0.005);
  EXPECT_NEAR(below_4k - below_1k, 0.08, 0.005);
  EXPECT_NEAR(below_32k - below_4k, 0.02, 0.0025);
  // < 0.1% > 32K, and the class is not empty.
  EXPECT_LT(s.FractionOfSamplesAtLeast(32 * K + 1), 0.001);
  EXPECT_GT(s.FractionOfSamplesAtLeast(32 * K + 1), 0.0);
}

TEST(LengthPresetsTest, LmsysChat1m) {
  const LengthStats s = SamplePreset("lmsyschat1m");
  // > 99% of sequences < 4K.
  EXPECT_GT(1.0 - s.FractionOfSamplesAtLeast(4 * K), 0.99);
  // The longest ~300K: the distribution stops at 300,000 and a million samples reach past 250K.
  absl::StatusOr<LengthDistribution> dist = LengthDistribution::Preset("lmsyschat1m");
  ASSERT_TRUE(dist.ok());
  EXPECT_EQ(dist->max_length(), 300'000);
  EXPECT_LE(s.max(), 300'000);
  EXPECT_GE(s.max(), 250'000);
}

TEST(LengthPresetsTest, EveryPresetNamesItsSource) {
  for (const std::string& name : LengthDistribution::PresetNames()) {
    absl::StatusOr<LengthDistribution> dist = LengthDistribution::Preset(name);
    ASSERT_TRUE(dist.ok()) << name;
    EXPECT_EQ(dist->name(), name);
    EXPECT_THAT(dist->source(), HasSubstr("arXiv")) << name;
  }
  EXPECT_EQ(LengthDistribution::PresetNames().size(), 4u);
}

TEST(LengthPresetsTest, UnknownPresetListsKnownOnes) {
  absl::StatusOr<LengthDistribution> dist = LengthDistribution::Preset("bytd");
  ASSERT_FALSE(dist.ok());
  EXPECT_EQ(dist.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(dist.status().message(), HasSubstr("byted, github, chunkflow, lmsyschat1m"));
}

}  // namespace
}  // namespace loom
