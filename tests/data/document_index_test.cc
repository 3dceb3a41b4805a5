#include "data/document_index.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/data/temp_dir.h"

namespace loom {
namespace {

using ::testing::ElementsAre;
using testing_util::TempDir;
using testing_util::WriteFile;

constexpr uint32_t kEot = 9;

Shard OpenShard(const std::string& path, int64_t vocab = 10) {
  absl::StatusOr<Shard> shard = Shard::Open(path, vocab);
  EXPECT_TRUE(shard.ok()) << shard.status();
  return std::move(shard).value();
}

TEST(DocumentIndexTest, EotClosesAndBelongsToItsDocument) {
  TempDir dir;
  // Documents: [1 2 9] [9] [3 9] [4 5] (the last has no EOT).
  ASSERT_TRUE(WriteShard(dir / "s.bin", std::vector<uint32_t>{1, 2, 9, 9, 3, 9, 4, 5}).ok());
  const DocumentIndex index = DocumentIndex::Build(OpenShard(dir / "s.bin"), kEot);
  EXPECT_EQ(index.num_documents(), 4);
  EXPECT_EQ(index.num_tokens(), 8);
  EXPECT_THAT(index.boundaries(), ElementsAre(0, 3, 4, 6, 8));
  EXPECT_THAT(index.Lengths(), ElementsAre(3, 1, 2, 2));
  EXPECT_EQ(index.begin(2), 4);
  EXPECT_EQ(index.end(2), 6);
  EXPECT_EQ(index.length(3), 2);
}

TEST(DocumentIndexTest, ShardEndingInEotHasNoEmptyTrailingDocument) {
  TempDir dir;
  ASSERT_TRUE(WriteShard(dir / "s.bin", std::vector<uint32_t>{1, 9, 2, 2, 9}).ok());
  const DocumentIndex index = DocumentIndex::Build(OpenShard(dir / "s.bin"), kEot);
  EXPECT_THAT(index.boundaries(), ElementsAre(0, 2, 5));
}

TEST(DocumentIndexTest, EmptyShardAndShardWithoutEot) {
  TempDir dir;
  ASSERT_TRUE(WriteShard(dir / "e.bin", {}).ok());
  EXPECT_EQ(DocumentIndex::Build(OpenShard(dir / "e.bin"), kEot).num_documents(), 0);
  ASSERT_TRUE(WriteShard(dir / "n.bin", std::vector<uint32_t>{1, 2, 3}).ok());
  EXPECT_THAT(DocumentIndex::Build(OpenShard(dir / "n.bin"), kEot).boundaries(), ElementsAre(0, 3));
}

TEST(DocumentIndexTest, LlmcStyleLeadingEotGivesOneTokenFirstDocument) {
  TempDir dir;
  ASSERT_TRUE(WriteShard(dir / "s.bin", std::vector<uint32_t>{9, 1, 2, 9, 3}).ok());
  EXPECT_THAT(DocumentIndex::Build(OpenShard(dir / "s.bin"), kEot).Lengths(), ElementsAre(1, 3, 1));
}

TEST(DocumentIndexTest, LargeUint16AndUint32ShardsAgreeWithNaiveScan) {
  TempDir dir;
  std::vector<uint32_t> tokens(300000);
  uint64_t x = 1;
  for (uint32_t& t : tokens) {
    x = x * 6364136223846793005ULL + 1442695040888963407ULL;
    t = static_cast<uint32_t>((x >> 33) % 1000);  // EOT (9) about every 1000 tokens
  }
  std::vector<int64_t> expected = {0};
  for (size_t i = 0; i < tokens.size(); ++i) {
    if (tokens[i] == kEot) expected.push_back(static_cast<int64_t>(i) + 1);
  }
  if (expected.back() != static_cast<int64_t>(tokens.size())) expected.push_back(tokens.size());
  for (TokenWidth width : {TokenWidth::kUint16, TokenWidth::kUint32}) {
    ASSERT_TRUE(WriteShard(dir / "big.bin", tokens, width).ok());
    const DocumentIndex index = DocumentIndex::Build(OpenShard(dir / "big.bin", 1000), kEot);
    EXPECT_TRUE(std::equal(index.boundaries().begin(), index.boundaries().end(), expected.begin(),
                           expected.end()));
  }
}

TEST(DocumentIndexTest, EotThatCannotBeInAUint16ShardFindsNoBoundaries) {
  TempDir dir;
  ASSERT_TRUE(WriteShard(dir / "s.bin", std::vector<uint32_t>{1, 2, 3}).ok());
  EXPECT_EQ(DocumentIndex::Build(OpenShard(dir / "s.bin"), 65536 + 1).num_documents(), 1);
}

TEST(DocumentIndexCacheTest, WrittenThenReused) {
  TempDir dir;
  const std::string path = dir / "s.bin";
  ASSERT_TRUE(WriteShard(path, std::vector<uint32_t>{1, 9, 2, 3, 9, 4}).ok());
  const Shard shard = OpenShard(path);
  const DocumentIndex first = DocumentIndex::Load(shard, kEot);
  EXPECT_FALSE(first.from_cache());
  EXPECT_TRUE(first.cache_write_status().ok()) << first.cache_write_status();
  EXPECT_TRUE(std::filesystem::exists(IndexCachePath(path)));
  const DocumentIndex second = DocumentIndex::Load(shard, kEot);
  EXPECT_TRUE(second.from_cache());
  EXPECT_THAT(second.boundaries(), ElementsAre(0, 2, 5, 6));
}

TEST(DocumentIndexCacheTest, OffAndReadOnlyModes) {
  TempDir dir;
  const std::string path = dir / "s.bin";
  ASSERT_TRUE(WriteShard(path, std::vector<uint32_t>{1, 9, 2}).ok());
  const Shard shard = OpenShard(path);
  EXPECT_FALSE(DocumentIndex::Load(shard, kEot, IndexCache::kOff).from_cache());
  EXPECT_FALSE(DocumentIndex::Load(shard, kEot, IndexCache::kReadOnly).from_cache());
  EXPECT_FALSE(std::filesystem::exists(IndexCachePath(path)));
  DocumentIndex::Load(shard, kEot);
  EXPECT_TRUE(DocumentIndex::Load(shard, kEot, IndexCache::kReadOnly).from_cache());
  EXPECT_FALSE(DocumentIndex::Load(shard, kEot, IndexCache::kOff).from_cache());
}

TEST(DocumentIndexCacheTest, RewrittenShardInvalidatesCache) {
  TempDir dir;
  const std::string path = dir / "s.bin";
  ASSERT_TRUE(WriteShard(path, std::vector<uint32_t>{1, 9, 2}).ok());
  // Keeping the old shard mapped keeps its inode in use, so the new file must get another one.
  const Shard old = OpenShard(path);
  DocumentIndex::Load(old, kEot);
  // Same size, different documents: a new file under the same name.
  ASSERT_TRUE(WriteShard(path, std::vector<uint32_t>{9, 1, 2}).ok());
  const DocumentIndex index = DocumentIndex::Load(OpenShard(path), kEot);
  EXPECT_FALSE(index.from_cache());
  EXPECT_THAT(index.boundaries(), ElementsAre(0, 1, 3));
  EXPECT_TRUE(DocumentIndex::Load(OpenShard(path), kEot).from_cache());
}

TEST(DocumentIndexCacheTest, SizeChangeInvalidatesCache) {
  TempDir dir;
  const std::string path = dir / "s.bin";
  ASSERT_TRUE(WriteShard(path, std::vector<uint32_t>{1, 9, 2}).ok());
  DocumentIndex::Load(OpenShard(path), kEot);
  ASSERT_TRUE(WriteShard(path, std::vector<uint32_t>{1, 9, 2, 9}).ok());
  const DocumentIndex index = DocumentIndex::Load(OpenShard(path), kEot);
  EXPECT_FALSE(index.from_cache());
  EXPECT_THAT(index.boundaries(), ElementsAre(0, 2, 4));
}

TEST(DocumentIndexCacheTest, MtimeChangeInvalidatesCache) {
  TempDir dir;
  const std::string path = dir / "s.bin";
  ASSERT_TRUE(WriteShard(path, std::vector<uint32_t>{1, 9, 2}).ok());
  DocumentIndex::Load(OpenShard(path), kEot);
  ASSERT_TRUE(DocumentIndex::Load(OpenShard(path), kEot).from_cache());
  // Same file, same size, only the modification time moves (an in-place edit).
  const timespec times[2] = {{0, UTIME_OMIT}, {1234567890, 5}};
  ASSERT_EQ(::utimensat(AT_FDCWD, path.c_str(), times, 0), 0);
  EXPECT_FALSE(DocumentIndex::Load(OpenShard(path), kEot).from_cache());
}

TEST(DocumentIndexCacheTest, OtherEotInvalidatesCache) {
  TempDir dir;
  const std::string path = dir / "s.bin";
  ASSERT_TRUE(WriteShard(path, std::vector<uint32_t>{1, 9, 2, 3}).ok());
  const Shard shard = OpenShard(path);
  DocumentIndex::Load(shard, kEot);
  const DocumentIndex index = DocumentIndex::Load(shard, 2);
  EXPECT_FALSE(index.from_cache());
  EXPECT_THAT(index.boundaries(), ElementsAre(0, 3, 4));
}

TEST(DocumentIndexCacheTest, DamagedCacheIsRebuiltAndReplaced) {
  TempDir dir;
  const std::string path = dir / "s.bin";
  ASSERT_TRUE(WriteShard(path, std::vector<uint32_t>{1, 9, 2, 3, 9}).ok());
  const Shard shard = OpenShard(path);
  DocumentIndex::Load(shard, kEot);
  const std::string good = testing_util::ReadFile(IndexCachePath(path));
  for (const std::string& bad : {std::string(), good.substr(0, 30), good.substr(0, good.size() - 1),
                                 good + "x", std::string(good.size(), '\xff')}) {
    WriteFile(IndexCachePath(path), bad);
    const DocumentIndex index = DocumentIndex::Load(shard, kEot);
    EXPECT_FALSE(index.from_cache());
    EXPECT_THAT(index.boundaries(), ElementsAre(0, 2, 5));
    EXPECT_EQ(testing_util::ReadFile(IndexCachePath(path)), good);
  }
  // Boundaries that do not tile the shard are refused even under a matching header.
  std::string shuffled = good;
  std::swap(shuffled[shuffled.size() - 16], shuffled[shuffled.size() - 8]);
  WriteFile(IndexCachePath(path), shuffled);
  EXPECT_FALSE(DocumentIndex::Load(shard, kEot).from_cache());
}

TEST(DocumentIndexCacheTest, UnwritableFolderIsNotAnError) {
  if (::geteuid() == 0) GTEST_SKIP() << "root writes to read-only folders";
  TempDir dir;
  const std::string path = dir / "s.bin";
  ASSERT_TRUE(WriteShard(path, std::vector<uint32_t>{1, 9, 2}).ok());
  const Shard shard = OpenShard(path);
  ASSERT_EQ(::chmod(dir.path().c_str(), 0500), 0);
  const DocumentIndex index = DocumentIndex::Load(shard, kEot);
  ::chmod(dir.path().c_str(), 0700);
  EXPECT_THAT(index.boundaries(), ElementsAre(0, 2, 3));
  EXPECT_FALSE(index.cache_write_status().ok());
}

}  // namespace
}  // namespace loom
