#include "data/prep.h"

#include <unistd.h>

#include <filesystem>
#include <string>
#include <vector>

#include "data/document_index.h"
#include "data/token_dataset.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/data/temp_dir.h"

namespace loom {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using testing_util::ReadFile;
using testing_util::TempDir;
using testing_util::WriteFile;

// Reads back every document of a set of shards as strings (EOT shown as '|').
std::vector<std::string> Documents(const std::vector<std::string>& shards) {
  std::vector<std::string> docs;
  if (shards.empty()) return docs;
  DatasetOptions options;
  options.vocab_size = kByteVocabSize;
  options.eot_token = kByteEndOfText;
  options.index_cache = IndexCache::kOff;
  absl::StatusOr<TokenDataset> dataset = TokenDataset::Open(shards, options);
  EXPECT_TRUE(dataset.ok()) << dataset.status();
  for (int64_t d = 0; d < dataset->num_documents(); ++d) {
    std::vector<int32_t> tokens(static_cast<size_t>(dataset->DocumentLength(d)));
    dataset->CopyTokens(d, 0, std::ssize(tokens), tokens.data());
    std::string text;
    for (int32_t t : tokens) text += t == static_cast<int32_t>(kByteEndOfText) ? '|' : char(t);
    docs.push_back(text);
  }
  return docs;
}

PrepOptions Options(const std::string& input, const std::string& output) {
  PrepOptions options;
  options.input = input;
  options.output_dir = output;
  return options;
}

TEST(PrepFolderTest, OneDocumentPerFileInSortedPathOrder) {
  TempDir dir;
  WriteFile(dir / "in/b.txt", "bee");
  WriteFile(dir / "in/a.txt", "ay\n");
  WriteFile(dir / "in/sub/c.md", "sea");
  WriteFile(dir / "in/empty", "");
  absl::StatusOr<PrepResult> result = PrepareShards(Options(dir / "in", dir / "out"));
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_THAT(result->train_shards, ElementsAre(dir / "out/train_000000.bin"));
  EXPECT_TRUE(result->val_shards.empty());
  EXPECT_EQ(result->train_documents, 4);
  EXPECT_EQ(result->train_tokens, (3 + 1) + (3 + 1) + (0 + 1) + (3 + 1));
  EXPECT_EQ(result->input_bytes, 9);
  EXPECT_THAT(Documents(result->train_shards), ElementsAre("ay\n|", "bee|", "|", "sea|"));
}

TEST(PrepFolderTest, NonAsciiBytesAreTokens) {
  TempDir dir;
  WriteFile(dir / "in/x", "\xc3\xa9\xff");
  absl::StatusOr<PrepResult> result = PrepareShards(Options(dir / "in", dir / "out"));
  ASSERT_TRUE(result.ok()) << result.status();
  absl::StatusOr<Shard> shard = Shard::Open(result->train_shards[0], kByteVocabSize);
  ASSERT_TRUE(shard.ok());
  std::vector<int32_t> tokens(4);
  shard->CopyTokens(0, 4, tokens.data());
  EXPECT_THAT(tokens, ElementsAre(0xc3, 0xa9, 0xff, 256));
  EXPECT_EQ(shard->width(), TokenWidth::kUint16);
}

TEST(PrepFolderTest, TwoRunsGiveIdenticalBytes) {
  TempDir dir;
  for (int i = 0; i < 30; ++i) {
    WriteFile(dir / ("in/f" + std::to_string(i * 7 % 30)), std::string(100 + i * 13, 'a' + i % 26));
  }
  PrepOptions first = Options(dir / "in", dir / "out1");
  first.shard_tokens = 1000;
  first.val_fraction = 0.2;
  PrepOptions second = first;
  second.output_dir = dir / "out2";
  absl::StatusOr<PrepResult> a = PrepareShards(first);
  absl::StatusOr<PrepResult> b = PrepareShards(second);
  ASSERT_TRUE(a.ok() && b.ok());
  ASSERT_EQ(a->train_shards.size(), b->train_shards.size());
  ASSERT_GT(a->train_shards.size(), 1u);
  for (size_t i = 0; i < a->train_shards.size(); ++i) {
    EXPECT_EQ(ReadFile(a->train_shards[i]), ReadFile(b->train_shards[i]));
  }
  ASSERT_EQ(a->val_shards.size(), b->val_shards.size());
  for (size_t i = 0; i < a->val_shards.size(); ++i) {
    EXPECT_EQ(ReadFile(a->val_shards[i]), ReadFile(b->val_shards[i]));
  }
}

TEST(PrepFolderTest, ShardLimitKeepsDocumentsWholeUnlessTooLong) {
  TempDir dir;
  // Five 4-token documents (3 bytes + EOT), then one of 26 tokens, with 10 tokens per shard.
  for (int i = 0; i < 5; ++i) WriteFile(dir / ("in/" + std::to_string(i)), "xyz");
  WriteFile(dir / "in/9", std::string(25, 'L'));
  PrepOptions options = Options(dir / "in", dir / "out");
  options.shard_tokens = 10;
  absl::StatusOr<PrepResult> result = PrepareShards(options);
  ASSERT_TRUE(result.ok()) << result.status();
  std::vector<int64_t> sizes;
  for (const std::string& path : result->train_shards) {
    absl::StatusOr<Shard> shard = Shard::Open(path, kByteVocabSize);
    ASSERT_TRUE(shard.ok());
    sizes.push_back(shard->num_tokens());
  }
  // Two whole documents per shard; the long one cut into 10 + 10 + 6 on fresh shards.
  EXPECT_THAT(sizes, ElementsAre(8, 8, 4, 10, 10, 6));
  EXPECT_EQ(result->train_tokens, 46);
}

TEST(PrepFolderTest, RerunRemovesStaleShardsOfItsOwnNamesOnly) {
  TempDir dir;
  for (int i = 0; i < 6; ++i) WriteFile(dir / ("in/" + std::to_string(i)), "abcdefgh");
  PrepOptions options = Options(dir / "in", dir / "out");
  options.shard_tokens = 9;
  ASSERT_TRUE(PrepareShards(options).ok());
  ASSERT_TRUE(std::filesystem::exists(dir / "out/train_000005.bin"));
  WriteFile(dir / "out/train_000005.bin.idx", "cache");
  WriteFile(dir / "out/train_notes.bin", "mine");
  options.shard_tokens = 1000;
  absl::StatusOr<PrepResult> result = PrepareShards(options);
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_THAT(result->train_shards, ElementsAre(dir / "out/train_000000.bin"));
  EXPECT_FALSE(std::filesystem::exists(dir / "out/train_000001.bin"));
  EXPECT_FALSE(std::filesystem::exists(dir / "out/train_000005.bin"));
  EXPECT_FALSE(std::filesystem::exists(dir / "out/train_000005.bin.idx"));
  EXPECT_TRUE(std::filesystem::exists(dir / "out/train_notes.bin"));
}

TEST(PrepFolderTest, ProgressIsMonotoneAndEndsAtTotal) {
  TempDir dir;
  WriteFile(dir / "in/big", std::string(3 << 20, 'q'));
  WriteFile(dir / "in/small", "tiny");
  std::vector<PrepProgress> calls;
  PrepOptions options = Options(dir / "in", dir / "out");
  options.progress = [&](const PrepProgress& p) { calls.push_back(p); };
  ASSERT_TRUE(PrepareShards(options).ok());
  ASSERT_GE(calls.size(), 3u);
  for (size_t i = 0; i < calls.size(); ++i) {
    EXPECT_EQ(calls[i].bytes_total, (3u << 20) + 4);
    if (i > 0) {
      EXPECT_GE(calls[i].bytes_done, calls[i - 1].bytes_done);
    }
  }
  EXPECT_EQ(calls.back().bytes_done, calls.back().bytes_total);
}

TEST(PrepJsonlTest, OneDocumentPerLine) {
  TempDir dir;
  WriteFile(dir / "c.jsonl",
            "{\"text\": \"hello\", \"id\": 1}\n"
            "\n"
            "{\"id\": 2, \"text\": \"caf\\u00e9\\n\"}\r\n"
            "{\"text\": \"\"}\n"
            "   \n"
            "{\"text\": \"last\"}");
  absl::StatusOr<PrepResult> result = PrepareShards(Options(dir / "c.jsonl", dir / "out"));
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(result->train_documents, 4);
  EXPECT_THAT(Documents(result->train_shards),
              ElementsAre("hello|", "caf\xc3\xa9\n|", "|", "last|"));
}

TEST(PrepJsonlTest, ValidationSplitIsExactAndEvenlySpread) {
  TempDir dir;
  std::string jsonl;
  for (int i = 0; i < 20; ++i) jsonl += "{\"text\": \"d" + std::to_string(i) + "\"}\n";
  WriteFile(dir / "c.jsonl", jsonl);
  PrepOptions options = Options(dir / "c.jsonl", dir / "out");
  options.val_fraction = 0.25;
  absl::StatusOr<PrepResult> result = PrepareShards(options);
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(result->train_documents, 15);
  EXPECT_EQ(result->val_documents, 5);
  EXPECT_THAT(result->val_shards, ElementsAre(dir / "out/val_000000.bin"));
  EXPECT_THAT(Documents(result->val_shards), ElementsAre("d3|", "d7|", "d11|", "d15|", "d19|"));
  EXPECT_EQ(Documents(result->train_shards).front(), "d0|");
  EXPECT_EQ(result->val_tokens, 3 + 3 + 4 + 4 + 4);
}

TEST(PrepJsonlTest, TwoRunsGiveIdenticalBytes) {
  TempDir dir;
  std::string jsonl;
  for (int i = 0; i < 200; ++i) {
    jsonl += "{\"text\": \"" + std::string(static_cast<size_t>(i % 37 + 1), 'a' + i % 26) + "\"}\n";
  }
  WriteFile(dir / "c.jsonl", jsonl);
  PrepOptions options = Options(dir / "c.jsonl", dir / "out1");
  options.val_fraction = 0.1;
  options.shard_tokens = 500;
  absl::StatusOr<PrepResult> a = PrepareShards(options);
  options.output_dir = dir / "out2";
  absl::StatusOr<PrepResult> b = PrepareShards(options);
  ASSERT_TRUE(a.ok() && b.ok());
  ASSERT_EQ(a->train_shards.size(), b->train_shards.size());
  for (size_t i = 0; i < a->train_shards.size(); ++i) {
    EXPECT_EQ(ReadFile(a->train_shards[i]), ReadFile(b->train_shards[i]));
  }
  ASSERT_EQ(a->val_shards.size(), b->val_shards.size());
  for (size_t i = 0; i < a->val_shards.size(); ++i) {
    EXPECT_EQ(ReadFile(a->val_shards[i]), ReadFile(b->val_shards[i]));
  }
}

TEST(PrepJsonlTest, BadLinesNameFileAndLine) {
  TempDir dir;
  const std::string path = dir / "c.jsonl";
  const std::string good = "{\"text\": \"ok\"}\n\n";  // lines 1 and 2
  struct Case {
    std::string line;
    std::string says;
  };
  for (const Case& c : std::vector<Case>{{"{\"text\": \"unterminated}", "not valid JSON"},
                                         {"not json at all", "not valid JSON"},
                                         {"{\"body\": \"x\"}", "no \"text\" field"},
                                         {"{\"text\": 42}", "field \"text\" is a number"},
                                         {"[\"text\"]", "expected a JSON object"}}) {
    WriteFile(path, good + c.line + "\n{\"text\": \"after\"}\n");
    absl::StatusOr<PrepResult> result = PrepareShards(Options(path, dir / "out"));
    ASSERT_FALSE(result.ok()) << c.line;
    EXPECT_EQ(result.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(result.status().message(), HasSubstr(path + ":3:")) << c.line;
    EXPECT_THAT(result.status().message(), HasSubstr(c.says)) << c.line;
  }
}

TEST(PrepErrorsTest, MissingInput) {
  TempDir dir;
  absl::StatusOr<PrepResult> result = PrepareShards(Options(dir / "nothing", dir / "out"));
  ASSERT_FALSE(result.ok());
  EXPECT_EQ(result.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(result.status().message(), HasSubstr(dir / "nothing"));
}

TEST(PrepErrorsTest, UnreadableFileIsNamed) {
  TempDir dir;
  WriteFile(dir / "in/a", "fine");
  // A link whose target is gone cannot be read, whoever runs the test.
  std::filesystem::create_symlink(dir / "gone", dir / "in/b");
  absl::StatusOr<PrepResult> result = PrepareShards(Options(dir / "in", dir / "out"));
  ASSERT_FALSE(result.ok());
  EXPECT_THAT(result.status().message(), HasSubstr(dir / "in/b"));
  EXPECT_THAT(result.status().message(), HasSubstr("cannot read"));
}

TEST(PrepErrorsTest, FileWithoutReadPermissionIsNamed) {
  if (::geteuid() == 0) GTEST_SKIP() << "root reads files without read permission";
  TempDir dir;
  WriteFile(dir / "in/secret", "x");
  std::filesystem::permissions(dir / "in/secret", std::filesystem::perms::none);
  absl::StatusOr<PrepResult> result = PrepareShards(Options(dir / "in", dir / "out"));
  ASSERT_FALSE(result.ok());
  EXPECT_THAT(result.status().message(), HasSubstr(dir / "in/secret"));
}

TEST(PrepErrorsTest, NoDocuments) {
  TempDir dir;
  std::filesystem::create_directories(dir / "in");
  absl::StatusOr<PrepResult> folder = PrepareShards(Options(dir / "in", dir / "out"));
  ASSERT_FALSE(folder.ok());
  EXPECT_THAT(folder.status().message(), HasSubstr("no documents"));
  WriteFile(dir / "e.jsonl", "\n\n");
  absl::StatusOr<PrepResult> jsonl = PrepareShards(Options(dir / "e.jsonl", dir / "out"));
  ASSERT_FALSE(jsonl.ok());
  EXPECT_THAT(jsonl.status().message(), HasSubstr("no documents"));
}

TEST(PrepErrorsTest, OutputInsideInputFolder) {
  TempDir dir;
  WriteFile(dir / "in/a", "x");
  absl::StatusOr<PrepResult> result = PrepareShards(Options(dir / "in", dir / "in/shards"));
  ASSERT_FALSE(result.ok());
  EXPECT_THAT(result.status().message(), HasSubstr("inside the input folder"));
}

TEST(PrepErrorsTest, BadOptions) {
  TempDir dir;
  WriteFile(dir / "in/a", "x");
  PrepOptions options = Options(dir / "in", dir / "out");
  options.val_fraction = 1.0;
  EXPECT_THAT(PrepareShards(options).status().message(), HasSubstr("val_fraction"));
  options.val_fraction = -0.5;
  EXPECT_FALSE(PrepareShards(options).ok());
  options.val_fraction = 0.0;
  options.shard_tokens = 0;
  EXPECT_THAT(PrepareShards(options).status().message(), HasSubstr("shard_tokens"));
}

}  // namespace
}  // namespace loom
