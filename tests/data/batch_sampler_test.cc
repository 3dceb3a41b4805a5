#include "data/batch_sampler.h"

#include <algorithm>
#include <string>
#include <tuple>
#include <vector>

#include "data/length_distribution.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace loom {
namespace {

using ::testing::HasSubstr;

std::vector<int64_t> SomeLengths(int count, uint64_t seed) {
  absl::StatusOr<LengthDistribution> dist = LengthDistribution::Preset("chunkflow");
  EXPECT_TRUE(dist.ok());
  return dist->Sample(count, seed);
}

BatchSamplerConfig Config(int64_t budget, int64_t max_len, uint64_t seed = 1,
                          OversizePolicy policy = OversizePolicy::kSplit) {
  BatchSamplerConfig config;
  config.tokens_per_batch = budget;
  config.max_sequence_length = max_len;
  config.oversize = policy;
  config.seed = seed;
  return config;
}

BatchSampler MakeSampler(const std::vector<int64_t>& lengths, const BatchSamplerConfig& config) {
  absl::StatusOr<BatchSampler> sampler = BatchSampler::Create(lengths, config);
  EXPECT_TRUE(sampler.ok()) << sampler.status();
  return std::move(sampler).value();
}

TEST(BatchSamplerTest, SameSeedSameBatches) {
  const std::vector<int64_t> lengths = SomeLengths(3000, 1);
  BatchSampler a = MakeSampler(lengths, Config(16384, 8192, 7));
  BatchSampler b = MakeSampler(lengths, Config(16384, 8192, 7));
  for (int i = 0; i < 500; ++i) {
    const GlobalBatch x = a.Next();
    const GlobalBatch y = b.Next();
    ASSERT_EQ(x.sequences, y.sequences) << "batch " << i;
    ASSERT_EQ(x.epoch, y.epoch);
  }
}

TEST(BatchSamplerTest, OtherSeedOtherOrder) {
  const std::vector<int64_t> lengths = SomeLengths(3000, 1);
  BatchSampler a = MakeSampler(lengths, Config(16384, 8192, 7));
  BatchSampler b = MakeSampler(lengths, Config(16384, 8192, 8));
  EXPECT_NE(a.Next().sequences, b.Next().sequences);
}

TEST(BatchSamplerTest, EachEpochCoversEverySequenceOnceWithinBudget) {
  const std::vector<int64_t> lengths = SomeLengths(5000, 2);
  const int64_t budget = 20000;
  BatchSampler sampler = MakeSampler(lengths, Config(budget, 8192));
  std::vector<std::vector<SequenceRef>> epoch_orders(3);
  uint64_t epoch = 0;
  while (epoch < 3) {
    const GlobalBatch batch = sampler.Next();
    ASSERT_EQ(batch.epoch, epoch);
    ASSERT_FALSE(batch.sequences.empty());
    int64_t tokens = 0;
    for (const SequenceRef& s : batch.sequences) tokens += s.length;
    ASSERT_EQ(tokens, batch.num_tokens);
    ASSERT_LE(tokens, budget);
    epoch_orders[epoch].insert(epoch_orders[epoch].end(), batch.sequences.begin(),
                               batch.sequences.end());
    if (sampler.position().epoch != epoch) epoch = sampler.position().epoch;
  }
  for (auto& order : epoch_orders) {
    ASSERT_EQ(order.size(), sampler.sequences().size());
    std::vector<SequenceRef> sorted = order;
    std::sort(sorted.begin(), sorted.end(), [](const SequenceRef& a, const SequenceRef& b) {
      return std::tie(a.document, a.offset) < std::tie(b.document, b.offset);
    });
    EXPECT_EQ(sorted, sampler.sequences());
  }
  // Epochs are shuffled independently.
  EXPECT_NE(epoch_orders[0], epoch_orders[1]);
  EXPECT_NE(epoch_orders[1], epoch_orders[2]);
}

TEST(BatchSamplerTest, BatchClosesOnlyWhenNextSequenceDoesNotFit) {
  const std::vector<int64_t> lengths = SomeLengths(2000, 3);
  const int64_t budget = 10000;
  BatchSampler sampler = MakeSampler(lengths, Config(budget, 4096));
  GlobalBatch batch = sampler.Next();
  for (int i = 0; i < 50; ++i) {
    const GlobalBatch next = sampler.Next();
    if (next.epoch != batch.epoch) break;
    EXPECT_GT(batch.num_tokens + next.sequences.front().length, budget);
    batch = next;
  }
}

TEST(BatchSamplerTest, ResumeFromAnyPositionRepeatsTheSameBatches) {
  const std::vector<int64_t> lengths = SomeLengths(1500, 4);
  const BatchSamplerConfig config = Config(12000, 4096, 99);
  BatchSampler original = MakeSampler(lengths, config);
  std::vector<SamplerPosition> positions;
  std::vector<GlobalBatch> batches;
  // Several epochs, so restores land mid-epoch and on epoch starts.
  for (int i = 0; i < 400; ++i) {
    positions.push_back(original.position());
    batches.push_back(original.Next());
  }
  ASSERT_GT(batches.back().epoch, 2u);
  for (size_t start : {size_t{0}, size_t{1}, size_t{57}, size_t{200}, size_t{399}}) {
    BatchSampler resumed = MakeSampler(lengths, config);
    ASSERT_TRUE(resumed.Restore(positions[start]).ok());
    for (size_t i = start; i < batches.size(); ++i) {
      const GlobalBatch batch = resumed.Next();
      ASSERT_EQ(batch.sequences, batches[i].sequences) << "from " << start << " at " << i;
      ASSERT_EQ(batch.epoch, batches[i].epoch);
    }
  }
}

TEST(BatchSamplerTest, PositionIsNormalizedAtEpochEnd) {
  BatchSampler sampler = MakeSampler({5, 5, 5, 5}, Config(10, 10));
  sampler.Next();
  EXPECT_EQ(sampler.position().epoch, 0u);
  EXPECT_EQ(sampler.position().cursor, 2u);
  sampler.Next();
  EXPECT_EQ(sampler.position().epoch, 1u);
  EXPECT_EQ(sampler.position().cursor, 0u);
}

TEST(BatchSamplerTest, RestoreRejectsForeignPositions) {
  const std::vector<int64_t> lengths = SomeLengths(100, 5);
  BatchSampler sampler = MakeSampler(lengths, Config(5000, 2048, 3));
  SamplerPosition position = sampler.position();

  SamplerPosition other_seed = position;
  other_seed.seed = 4;
  absl::Status status = sampler.Restore(other_seed);
  EXPECT_THAT(status.message(), HasSubstr("seed 4"));

  BatchSampler other_data = MakeSampler(SomeLengths(100, 6), Config(5000, 2048, 3));
  status = other_data.Restore(position);
  EXPECT_THAT(status.message(), HasSubstr("fingerprint"));

  BatchSampler other_budget = MakeSampler(lengths, Config(6000, 2048, 3));
  EXPECT_FALSE(other_budget.Restore(position).ok());

  SamplerPosition past_end = position;
  past_end.cursor = static_cast<uint64_t>(sampler.num_sequences());
  EXPECT_THAT(sampler.Restore(past_end).message(), HasSubstr("cursor"));
}

TEST(BatchSamplerTest, SplitCutsLongDocumentsIntoPiecesOfMaxLength) {
  // Document 1 (25 tokens) is longer than max_sequence_length 10.
  BatchSampler sampler = MakeSampler({4, 25, 10}, Config(100, 10));
  const std::vector<SequenceRef> expected = {
      {0, 0, 4}, {1, 0, 10}, {1, 10, 10}, {1, 20, 5}, {2, 0, 10}};
  EXPECT_EQ(sampler.sequences(), expected);
  const GlobalBatch batch = sampler.Next();
  EXPECT_EQ(batch.num_tokens, 39);
  EXPECT_EQ(batch.sequences.size(), 5u);
}

TEST(BatchSamplerTest, SplitAlsoCutsDocumentsLongerThanTheBudget) {
  // max_sequence_length allows 50, but a batch holds only 20 tokens.
  BatchSampler sampler = MakeSampler({45, 3}, Config(20, 50));
  const std::vector<SequenceRef> expected = {{0, 0, 20}, {0, 20, 20}, {0, 40, 5}, {1, 0, 3}};
  EXPECT_EQ(sampler.sequences(), expected);
  for (int i = 0; i < 10; ++i) EXPECT_LE(sampler.Next().num_tokens, 20);
}

TEST(BatchSamplerTest, RejectNamesTheDocument) {
  absl::StatusOr<BatchSampler> sampler = BatchSampler::Create(
      std::vector<int64_t>{4, 5, 25, 30}, Config(100, 10, 1, OversizePolicy::kReject));
  ASSERT_FALSE(sampler.ok());
  EXPECT_THAT(sampler.status().message(), HasSubstr("document 2 has 25 tokens"));
  EXPECT_THAT(sampler.status().message(), HasSubstr("max_sequence_length 10"));

  absl::StatusOr<BatchSampler> named = BatchSampler::Create(
      std::vector<int64_t>{4, 50}, Config(20, 100, 1, OversizePolicy::kReject),
      [](int64_t d) { return "doc #" + std::to_string(d) + " of train_000003.bin"; });
  ASSERT_FALSE(named.ok());
  EXPECT_THAT(named.status().message(), HasSubstr("doc #1 of train_000003.bin has 50 tokens"));
  EXPECT_THAT(named.status().message(), HasSubstr("tokens_per_batch 20"));

  EXPECT_TRUE(
      BatchSampler::Create(std::vector<int64_t>{4, 10}, Config(100, 10, 1, OversizePolicy::kReject))
          .ok());
}

TEST(BatchSamplerTest, BadInputs) {
  EXPECT_FALSE(BatchSampler::Create(std::vector<int64_t>{}, Config(10, 10)).ok());
  EXPECT_FALSE(BatchSampler::Create(std::vector<int64_t>{1}, Config(0, 10)).ok());
  EXPECT_FALSE(BatchSampler::Create(std::vector<int64_t>{1}, Config(10, 0)).ok());
  absl::StatusOr<BatchSampler> zero =
      BatchSampler::Create(std::vector<int64_t>{3, 0}, Config(10, 10));
  ASSERT_FALSE(zero.ok());
  EXPECT_THAT(zero.status().message(), HasSubstr("document 1 has length 0"));
}

}  // namespace
}  // namespace loom
