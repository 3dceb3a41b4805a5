#include "data/synthetic.h"

#include <vector>

#include "data/prep.h"
#include "data/token_dataset.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/data/temp_dir.h"

namespace loom {
namespace {

using testing_util::ReadFile;
using testing_util::TempDir;

TokenDataset OpenAll(const std::vector<std::string>& paths) {
  DatasetOptions options;
  options.vocab_size = kByteVocabSize;
  options.eot_token = kByteEndOfText;
  options.index_cache = IndexCache::kOff;
  absl::StatusOr<TokenDataset> dataset = TokenDataset::Open(paths, options);
  EXPECT_TRUE(dataset.ok()) << dataset.status();
  return std::move(dataset).value();
}

TEST(SyntheticShardsTest, LengthsFollowTheDistributionAndTotalIsExact) {
  TempDir dir;
  absl::StatusOr<LengthDistribution> dist = LengthDistribution::FromLengths("fixed", {5, 50, 500});
  ASSERT_TRUE(dist.ok());
  SyntheticShardOptions options;
  options.output_dir = dir.path();
  options.total_tokens = 200000;
  options.shard_tokens = 30000;
  options.seed = 3;
  absl::StatusOr<std::vector<std::string>> paths = WriteSyntheticShards(*dist, options);
  ASSERT_TRUE(paths.ok()) << paths.status();
  EXPECT_GE(paths->size(), 7u);
  const TokenDataset dataset = OpenAll(*paths);
  EXPECT_EQ(dataset.num_tokens(), 200000);
  const std::vector<int64_t> lengths = dataset.DocumentLengths();
  // Every document but the shortened last one has a length from the list.
  for (size_t d = 0; d + 1 < lengths.size(); ++d) {
    ASSERT_TRUE(lengths[d] == 5 || lengths[d] == 50 || lengths[d] == 500) << d;
  }
  // And every document ends with EOT.
  std::vector<int32_t> last(1);
  for (int64_t d = 0; d < dataset.num_documents(); ++d) {
    dataset.CopyTokens(d, dataset.DocumentLength(d) - 1, 1, last.data());
    ASSERT_EQ(last[0], static_cast<int32_t>(kByteEndOfText));
  }
}

TEST(SyntheticShardsTest, SameSeedSameBytes) {
  TempDir dir;
  absl::StatusOr<LengthDistribution> dist = LengthDistribution::Preset("chunkflow");
  ASSERT_TRUE(dist.ok());
  SyntheticShardOptions options;
  options.output_dir = dir / "a";
  options.total_tokens = 100000;
  options.seed = 11;
  absl::StatusOr<std::vector<std::string>> a = WriteSyntheticShards(*dist, options);
  options.output_dir = dir / "b";
  absl::StatusOr<std::vector<std::string>> b = WriteSyntheticShards(*dist, options);
  options.output_dir = dir / "c";
  options.seed = 12;
  absl::StatusOr<std::vector<std::string>> c = WriteSyntheticShards(*dist, options);
  ASSERT_TRUE(a.ok() && b.ok() && c.ok());
  EXPECT_EQ(ReadFile(a->front()), ReadFile(b->front()));
  EXPECT_NE(ReadFile(a->front()), ReadFile(c->front()));
}

TEST(SyntheticShardsTest, Uint32Width) {
  TempDir dir;
  absl::StatusOr<LengthDistribution> dist = LengthDistribution::FromLengths("l", {10});
  ASSERT_TRUE(dist.ok());
  SyntheticShardOptions options;
  options.output_dir = dir.path();
  options.total_tokens = 100;
  options.width = TokenWidth::kUint32;
  absl::StatusOr<std::vector<std::string>> paths = WriteSyntheticShards(*dist, options);
  ASSERT_TRUE(paths.ok());
  const TokenDataset dataset = OpenAll(*paths);
  EXPECT_EQ(dataset.shard(0).width(), TokenWidth::kUint32);
  EXPECT_EQ(dataset.num_documents(), 10);
}

TEST(SyntheticShardsTest, BadOptions) {
  TempDir dir;
  absl::StatusOr<LengthDistribution> dist = LengthDistribution::FromLengths("l", {10});
  ASSERT_TRUE(dist.ok());
  SyntheticShardOptions options;
  options.output_dir = dir.path();
  EXPECT_FALSE(WriteSyntheticShards(*dist, options).ok());  // no tokens asked for
  options.total_tokens = 10;
  options.shard_tokens = 0;
  EXPECT_FALSE(WriteSyntheticShards(*dist, options).ok());
}

}  // namespace
}  // namespace loom
