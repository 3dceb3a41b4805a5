#include "data/packed_batch.h"

#include <vector>

#include "data/token_dataset.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/data/temp_dir.h"

namespace loom {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using testing_util::TempDir;

constexpr uint32_t kEot = 9;

// Two shards: documents 0..2 in the first, 3..4 in the second (an empty shard in between).
TokenDataset TwoShards(const TempDir& dir) {
  EXPECT_TRUE(WriteShard(dir / "d_000000.bin", std::vector<uint32_t>{1, 2, 9, 3, 9, 4, 5, 6}).ok());
  EXPECT_TRUE(WriteShard(dir / "d_000001.bin", {}).ok());
  EXPECT_TRUE(WriteShard(dir / "d_000002.bin", std::vector<uint32_t>{7, 9, 8, 8, 8, 9}).ok());
  DatasetOptions options;
  options.vocab_size = 10;
  options.eot_token = kEot;
  absl::StatusOr<std::vector<std::string>> paths = ListShards(dir.path(), "d");
  EXPECT_TRUE(paths.ok());
  absl::StatusOr<TokenDataset> dataset = TokenDataset::Open(*paths, options);
  EXPECT_TRUE(dataset.ok()) << dataset.status();
  return std::move(dataset).value();
}

TEST(TokenDatasetTest, NumbersDocumentsAcrossShards) {
  TempDir dir;
  const TokenDataset dataset = TwoShards(dir);
  EXPECT_EQ(dataset.num_shards(), 3);
  EXPECT_EQ(dataset.num_documents(), 5);
  EXPECT_EQ(dataset.num_tokens(), 14);
  EXPECT_THAT(dataset.DocumentLengths(), ElementsAre(3, 2, 3, 2, 4));
  const TokenDataset::DocumentLocation loc = dataset.Locate(4);
  EXPECT_EQ(loc.shard, 2);
  EXPECT_EQ(loc.begin, 2);
  EXPECT_EQ(loc.length, 4);
  EXPECT_EQ(dataset.Locate(2).shard, 0);
  EXPECT_EQ(dataset.Locate(3).shard, 2);
  std::vector<int32_t> out(3);
  dataset.CopyTokens(4, 1, 3, out.data());
  EXPECT_THAT(out, ElementsAre(8, 8, 9));
  EXPECT_THAT(dataset.DescribeDocument(4), HasSubstr("document 4 (tokens [2, 6) of "));
  EXPECT_THAT(dataset.DescribeDocument(4), HasSubstr("d_000002.bin"));
}

TEST(TokenDatasetTest, ErrorsFromAnyShardSurface) {
  TempDir dir;
  ASSERT_TRUE(WriteShard(dir / "a.bin", std::vector<uint32_t>{1, 2}).ok());
  ASSERT_TRUE(WriteShard(dir / "b.bin", std::vector<uint32_t>{1, 12}).ok());
  DatasetOptions options;
  options.vocab_size = 10;
  absl::StatusOr<TokenDataset> dataset =
      TokenDataset::Open({dir / "a.bin", dir / "b.bin"}, options);
  ASSERT_FALSE(dataset.ok());
  EXPECT_THAT(dataset.status().message(), HasSubstr(dir / "b.bin"));
  EXPECT_FALSE(TokenDataset::Open({}, options).ok());
}

TEST(ListShardsTest, SortedAndFiltered) {
  TempDir dir;
  for (const char* name : {"train_000001.bin", "train_000000.bin", "val_000000.bin",
                           "train_000000.bin.idx", "trainx.bin"}) {
    testing_util::WriteFile(dir / name, "");
  }
  absl::StatusOr<std::vector<std::string>> train = ListShards(dir.path(), "train");
  ASSERT_TRUE(train.ok());
  EXPECT_THAT(*train, ElementsAre(dir / "train_000000.bin", dir / "train_000001.bin"));
  EXPECT_FALSE(ListShards(dir / "missing", "train").ok());
}

TEST(PackBatchTest, TokensTargetsPositionsAndIds) {
  TempDir dir;
  const TokenDataset dataset = TwoShards(dir);
  GlobalBatch batch;
  // Document 4 whole, then a piece of document 0, then the 1-token tail of document 2.
  batch.sequences = {{4, 0, 4}, {0, 1, 2}, {2, 2, 1}};
  batch.num_tokens = 7;
  PackedBatch packed;
  PackBatch(dataset, batch, &packed);
  EXPECT_THAT(packed.tokens, ElementsAre(8, 8, 8, 9, 2, 9, 6));
  EXPECT_THAT(packed.targets, ElementsAre(8, 8, 9, kNoTarget, 9, kNoTarget, kNoTarget));
  EXPECT_THAT(packed.positions, ElementsAre(0, 1, 2, 3, 0, 1, 0));
  EXPECT_THAT(packed.sequence_ids, ElementsAre(0, 0, 0, 0, 1, 1, 2));
  EXPECT_THAT(packed.sequence_starts, ElementsAre(0, 4, 6, 7));
  EXPECT_EQ(packed.num_targets, 4);

  // Reusing the buffers for a smaller batch leaves nothing of the old one.
  batch.sequences = {{1, 0, 2}};
  batch.num_tokens = 2;
  PackBatch(dataset, batch, &packed);
  EXPECT_THAT(packed.tokens, ElementsAre(3, 9));
  EXPECT_THAT(packed.targets, ElementsAre(9, kNoTarget));
  EXPECT_THAT(packed.sequence_starts, ElementsAre(0, 2));
  EXPECT_EQ(packed.num_targets, 1);
}

TEST(PackBatchTest, SamplerBatchesPackEveryTokenOfAnEpochOnce) {
  TempDir dir;
  const TokenDataset dataset = TwoShards(dir);
  BatchSamplerConfig config;
  config.tokens_per_batch = 5;
  config.max_sequence_length = 3;
  const std::vector<int64_t> lengths = dataset.DocumentLengths();
  absl::StatusOr<BatchSampler> sampler = BatchSampler::Create(lengths, config);
  ASSERT_TRUE(sampler.ok());
  int64_t tokens = 0;
  std::vector<int> histogram(10, 0);
  PackedBatch packed;
  while (true) {
    const GlobalBatch batch = sampler->Next();
    PackBatch(dataset, batch, &packed);
    tokens += static_cast<int64_t>(packed.tokens.size());
    for (int32_t t : packed.tokens) ++histogram[static_cast<size_t>(t)];
    if (sampler->position().epoch == 1) break;
  }
  EXPECT_EQ(tokens, dataset.num_tokens());
  EXPECT_THAT(histogram, ElementsAre(0, 1, 1, 1, 1, 1, 1, 1, 3, 4));
}

}  // namespace
}  // namespace loom
