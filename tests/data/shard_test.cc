#include "data/shard.h"

#include <sys/stat.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/data/temp_dir.h"

namespace loom {
namespace {

using ::testing::HasSubstr;
using testing_util::ReadFile;
using testing_util::TempDir;
using testing_util::WriteFile;

// A shard file built by hand, so corrupt variants can be made byte by byte.
std::string RawShard(int32_t magic, int32_t version, int32_t count, const std::string& payload) {
  std::string bytes(kShardHeaderBytes, '\0');
  const int32_t head[3] = {magic, version, count};
  std::memcpy(bytes.data(), head, sizeof(head));
  return bytes + payload;
}

std::string Uint16Payload(const std::vector<uint16_t>& tokens) {
  return std::string(reinterpret_cast<const char*>(tokens.data()), tokens.size() * 2);
}

TEST(ShardTest, RoundTripUint16) {
  TempDir dir;
  const std::string path = dir / "a.bin";
  const std::vector<uint32_t> tokens = {0, 1, 65535, 256, 7};
  ASSERT_TRUE(WriteShard(path, tokens).ok());
  EXPECT_EQ(std::filesystem::file_size(path), 1024u + 2 * tokens.size());
  absl::StatusOr<Shard> shard = Shard::Open(path, 65536);
  ASSERT_TRUE(shard.ok()) << shard.status();
  EXPECT_EQ(shard->width(), TokenWidth::kUint16);
  ASSERT_EQ(shard->num_tokens(), 5);
  std::vector<int32_t> out(5);
  shard->CopyTokens(0, 5, out.data());
  EXPECT_EQ(out, std::vector<int32_t>({0, 1, 65535, 256, 7}));
  EXPECT_EQ(shard->token(2), 65535u);
  // The header is exactly llm.c's.
  const std::string bytes = ReadFile(path);
  int32_t head[3];
  std::memcpy(head, bytes.data(), sizeof(head));
  EXPECT_EQ(head[0], 20240520);
  EXPECT_EQ(head[1], 1);
  EXPECT_EQ(head[2], 5);
}

TEST(ShardTest, RoundTripUint32PickedForLargeIds) {
  TempDir dir;
  const std::string path = dir / "b.bin";
  const std::vector<uint32_t> tokens = {70000, 3, 100257, 0};
  ASSERT_TRUE(WriteShard(path, tokens).ok());
  EXPECT_EQ(std::filesystem::file_size(path), 1024u + 4 * tokens.size());
  absl::StatusOr<Shard> shard = Shard::Open(path, 100258);
  ASSERT_TRUE(shard.ok()) << shard.status();
  EXPECT_EQ(shard->width(), TokenWidth::kUint32);
  std::vector<int32_t> out(3);
  shard->CopyTokens(1, 3, out.data());
  EXPECT_EQ(out, std::vector<int32_t>({3, 100257, 0}));
  const std::string bytes = ReadFile(path);
  int32_t head[3];
  std::memcpy(head, bytes.data(), sizeof(head));
  EXPECT_EQ(head[0], 20240801);
  EXPECT_EQ(head[1], 7);
  EXPECT_EQ(head[2], 4);
}

TEST(ShardTest, Uint32OnRequestForSmallIds) {
  TempDir dir;
  const std::string path = dir / "c.bin";
  ASSERT_TRUE(WriteShard(path, std::vector<uint32_t>{1, 2}, TokenWidth::kUint32).ok());
  absl::StatusOr<Shard> shard = Shard::Open(path, 3);
  ASSERT_TRUE(shard.ok()) << shard.status();
  EXPECT_EQ(shard->width(), TokenWidth::kUint32);
}

TEST(ShardTest, EmptyShardRoundTrips) {
  TempDir dir;
  ASSERT_TRUE(WriteShard(dir / "e.bin", {}).ok());
  absl::StatusOr<Shard> shard = Shard::Open(dir / "e.bin", 10);
  ASSERT_TRUE(shard.ok()) << shard.status();
  EXPECT_EQ(shard->num_tokens(), 0);
}

TEST(ShardTest, Uint16RequestRefusesLargeIdInsteadOfWrapping) {
  TempDir dir;
  const std::string path = dir / "d.bin";
  const absl::Status status =
      WriteShard(path, std::vector<uint32_t>{5, 65536, 2}, TokenWidth::kUint16);
  ASSERT_FALSE(status.ok());
  EXPECT_THAT(status.message(), HasSubstr("65536"));
  EXPECT_THAT(status.message(), HasSubstr("index 1"));
  // Nothing was left behind, not even a temporary file.
  EXPECT_TRUE(std::filesystem::is_empty(dir.path()));
}

TEST(ShardTest, WriteReplacesExistingFileAtomically) {
  TempDir dir;
  const std::string path = dir / "r.bin";
  ASSERT_TRUE(WriteShard(path, std::vector<uint32_t>{1, 2, 3}).ok());
  ASSERT_TRUE(WriteShard(path, std::vector<uint32_t>{9}).ok());
  absl::StatusOr<Shard> shard = Shard::Open(path, 10);
  ASSERT_TRUE(shard.ok()) << shard.status();
  EXPECT_EQ(shard->num_tokens(), 1);
  EXPECT_EQ(shard->token(0), 9u);
  int files = 0;
  for ([[maybe_unused]] const auto& e : std::filesystem::directory_iterator(dir.path())) ++files;
  EXPECT_EQ(files, 1);
}

TEST(ShardTest, UnfinishedWriterLeavesNoFile) {
  TempDir dir;
  {
    absl::StatusOr<ShardWriter> writer = ShardWriter::Create(dir / "u.bin", TokenWidth::kUint16);
    ASSERT_TRUE(writer.ok());
    ASSERT_TRUE(writer->Append(std::vector<uint16_t>{1, 2, 3}).ok());
  }
  EXPECT_TRUE(std::filesystem::is_empty(dir.path()));
}

TEST(ShardTest, StreamingWriterMatchesOneShotWriter) {
  TempDir dir;
  std::vector<uint32_t> tokens(100000);
  for (size_t i = 0; i < tokens.size(); ++i) tokens[i] = static_cast<uint32_t>(i * 7919 % 50000);
  ASSERT_TRUE(WriteShard(dir / "one.bin", tokens).ok());
  absl::StatusOr<ShardWriter> writer = ShardWriter::Create(dir / "two.bin", TokenWidth::kUint16);
  ASSERT_TRUE(writer.ok());
  std::vector<uint16_t> narrow(tokens.begin(), tokens.end());
  ASSERT_TRUE(writer->Append(std::span<const uint16_t>(narrow).first(33333)).ok());
  ASSERT_TRUE(writer->Append(std::span<const uint32_t>(tokens).subspan(33333)).ok());
  ASSERT_TRUE(writer->Finish().ok());
  EXPECT_EQ(ReadFile(dir / "one.bin"), ReadFile(dir / "two.bin"));
}

TEST(ShardCorruptTest, MissingFile) {
  TempDir dir;
  absl::StatusOr<Shard> shard = Shard::Open(dir / "nope.bin", 10);
  ASSERT_FALSE(shard.ok());
  EXPECT_EQ(shard.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(shard.status().message(), HasSubstr(dir / "nope.bin"));
}

TEST(ShardCorruptTest, WrongMagic) {
  TempDir dir;
  const std::string path = dir / "m.bin";
  WriteFile(path, RawShard(12345, 1, 1, Uint16Payload({1})));
  absl::StatusOr<Shard> shard = Shard::Open(path, 10);
  ASSERT_FALSE(shard.ok());
  EXPECT_EQ(shard.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(shard.status().message(), HasSubstr(path));
  EXPECT_THAT(shard.status().message(), HasSubstr("offset 0"));
  EXPECT_THAT(shard.status().message(), HasSubstr("magic 12345"));
}

TEST(ShardCorruptTest, WrongVersion) {
  TempDir dir;
  const std::string path = dir / "v.bin";
  // uint16 magic with the uint32 version.
  WriteFile(path, RawShard(kShardMagicUint16, 7, 1, Uint16Payload({1})));
  absl::StatusOr<Shard> shard = Shard::Open(path, 10);
  ASSERT_FALSE(shard.ok());
  EXPECT_THAT(shard.status().message(), HasSubstr(path));
  EXPECT_THAT(shard.status().message(), HasSubstr("offset 4"));
  EXPECT_THAT(shard.status().message(), HasSubstr("version 7"));
}

TEST(ShardCorruptTest, TruncatedHeader) {
  TempDir dir;
  for (size_t size : {size_t{0}, size_t{12}, size_t{1023}}) {
    const std::string path = dir / "t.bin";
    WriteFile(path, RawShard(kShardMagicUint16, 1, 0, "").substr(0, size));
    absl::StatusOr<Shard> shard = Shard::Open(path, 10);
    ASSERT_FALSE(shard.ok()) << size;
    EXPECT_EQ(shard.status().code(), absl::StatusCode::kDataLoss);
    EXPECT_THAT(shard.status().message(), HasSubstr(path));
    EXPECT_THAT(shard.status().message(), HasSubstr("truncated header"));
    EXPECT_THAT(shard.status().message(), HasSubstr("offset " + std::to_string(size)));
  }
}

TEST(ShardCorruptTest, FileShorterThanHeaderSays) {
  TempDir dir;
  const std::string path = dir / "s.bin";
  WriteFile(path, RawShard(kShardMagicUint16, 1, 4, Uint16Payload({1, 2, 3})));
  absl::StatusOr<Shard> shard = Shard::Open(path, 10);
  ASSERT_FALSE(shard.ok());
  EXPECT_EQ(shard.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(shard.status().message(), HasSubstr(path));
  // The data stops at byte 1030 where 1032 were promised.
  EXPECT_THAT(shard.status().message(), HasSubstr("offset 1030"));
  EXPECT_THAT(shard.status().message(), HasSubstr("4 uint16 tokens"));
}

TEST(ShardCorruptTest, FileLongerThanHeaderSays) {
  TempDir dir;
  const std::string path = dir / "l.bin";
  WriteFile(path, RawShard(kShardMagicUint32, 7, 1, std::string(8, '\0')));
  absl::StatusOr<Shard> shard = Shard::Open(path, 10);
  ASSERT_FALSE(shard.ok());
  EXPECT_THAT(shard.status().message(), HasSubstr(path));
  EXPECT_THAT(shard.status().message(), HasSubstr("offset 1028"));
}

TEST(ShardCorruptTest, NegativeCount) {
  TempDir dir;
  const std::string path = dir / "n.bin";
  WriteFile(path, RawShard(kShardMagicUint16, 1, -3, ""));
  absl::StatusOr<Shard> shard = Shard::Open(path, 10);
  ASSERT_FALSE(shard.ok());
  EXPECT_THAT(shard.status().message(), HasSubstr("offset 8"));
}

TEST(ShardCorruptTest, TokenAtOrAboveVocabNamesFirstOffenderOffsetAndValue) {
  TempDir dir;
  const std::string path = dir / "x.bin";
  std::vector<uint32_t> tokens(10000, 3);
  tokens[6000] = 50257;  // first offender
  tokens[9000] = 60000;
  ASSERT_TRUE(WriteShard(path, tokens).ok());
  absl::StatusOr<Shard> shard = Shard::Open(path, 50257);
  ASSERT_FALSE(shard.ok());
  EXPECT_EQ(shard.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(shard.status().message(), HasSubstr(path));
  EXPECT_THAT(shard.status().message(), HasSubstr("offset " + std::to_string(1024 + 2 * 6000)));
  EXPECT_THAT(shard.status().message(), HasSubstr("token 50257"));
  EXPECT_THAT(shard.status().message(), HasSubstr("vocab size 50257"));
  EXPECT_TRUE(Shard::Open(path, 60001).ok());
}

TEST(ShardCorruptTest, Uint32TokenAboveVocab) {
  TempDir dir;
  const std::string path = dir / "y.bin";
  ASSERT_TRUE(WriteShard(path, std::vector<uint32_t>{1, 4000000000u, 2}).ok());
  absl::StatusOr<Shard> shard = Shard::Open(path, 100000);
  ASSERT_FALSE(shard.ok());
  EXPECT_THAT(shard.status().message(), HasSubstr("offset 1028"));
  EXPECT_THAT(shard.status().message(), HasSubstr("token 4000000000"));
}

TEST(ShardCorruptTest, BadVocabArgument) {
  TempDir dir;
  ASSERT_TRUE(WriteShard(dir / "z.bin", std::vector<uint32_t>{1}).ok());
  EXPECT_FALSE(Shard::Open(dir / "z.bin", 0).ok());
  EXPECT_FALSE(Shard::Open(dir / "z.bin", kMaxVocabSize + 1).ok());
}

TEST(ShardCorruptTest, FolderIsNotAShard) {
  TempDir dir;
  absl::StatusOr<Shard> shard = Shard::Open(dir.path(), 10);
  ASSERT_FALSE(shard.ok());
  EXPECT_THAT(shard.status().message(), HasSubstr(dir.path()));
}

}  // namespace
}  // namespace loom
