// Token shards in the llm.c layout, so that shards written here and by llm.c's scripts are
// interchangeable: a header of 256 little-endian int32 values (header[0] magic, header[1] version,
// header[2] token count, the rest zero), then the tokens.
//   magic 20240520, version 1: uint16 tokens (vocabularies up to 65536 ids)
//   magic 20240801, version 7: uint32 tokens
// The token count is an int32, so a shard holds at most 2^31 - 1 tokens.
#ifndef LOOM_DATA_SHARD_H_
#define LOOM_DATA_SHARD_H_

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "data/atomic_file.h"

namespace loom {

inline constexpr int kShardHeaderInts = 256;
inline constexpr int64_t kShardHeaderBytes = kShardHeaderInts * 4;
inline constexpr int32_t kShardMagicUint16 = 20240520;
inline constexpr int32_t kShardVersionUint16 = 1;
inline constexpr int32_t kShardMagicUint32 = 20240801;
inline constexpr int32_t kShardVersionUint32 = 7;
inline constexpr int64_t kMaxShardTokens = INT32_MAX;
// Token ids are handed to the model as int32, so a vocabulary may hold at most 2^31 ids.
inline constexpr int64_t kMaxVocabSize = int64_t{1} << 31;

// How many bytes each token takes in the file.
enum class TokenWidth { kUint16 = 2, kUint32 = 4 };

inline int TokenBytes(TokenWidth width) { return static_cast<int>(width); }
const char* TokenWidthName(TokenWidth width);
// uint16 when every id fits, else uint32.
TokenWidth NarrowestWidth(std::span<const uint32_t> tokens);

// A read-only, memory-mapped shard. Open() checks the whole file before handing it out, so a
// Shard in hand always has a valid header, the size the header promises, and only ids below the
// vocabulary size. (The mapping is shared with the file: truncating the file while it is open
// faults the reader, as for any mapped file.)
class Shard {
 public:
  static absl::StatusOr<Shard> Open(const std::string& path, int64_t vocab_size);

  Shard(Shard&& other) noexcept;
  Shard& operator=(Shard&& other) noexcept;
  Shard(const Shard&) = delete;
  Shard& operator=(const Shard&) = delete;
  ~Shard();

  const std::string& path() const { return path_; }
  TokenWidth width() const { return width_; }
  int64_t num_tokens() const { return num_tokens_; }
  uint32_t token(int64_t i) const;
  // Tokens [begin, begin + count) as int32, the type the model consumes.
  void CopyTokens(int64_t begin, int64_t count, int32_t* out) const;
  // The raw token array: uint16_t or uint32_t values as width() says.
  const void* token_data() const { return data_ + kShardHeaderBytes; }

  // The file's identity when it was opened; the document index cache is keyed on it.
  uint64_t file_size() const { return file_size_; }
  int64_t mtime_ns() const { return mtime_ns_; }
  // The status-change time, which (unlike the modification time) no tool can set back: a copy
  // that preserves timestamps still changes it.
  int64_t ctime_ns() const { return ctime_ns_; }
  uint64_t inode() const { return inode_; }

 private:
  Shard() = default;
  void Unmap();

  std::string path_;
  const unsigned char* data_ = nullptr;
  uint64_t file_size_ = 0;
  int64_t mtime_ns_ = 0;
  int64_t ctime_ns_ = 0;
  uint64_t inode_ = 0;
  TokenWidth width_ = TokenWidth::kUint16;
  int64_t num_tokens_ = 0;
};

// Streams tokens into a new shard: header placeholder first, tokens in large buffered writes, the
// header with the final count at Finish(), then an atomic rename onto `path`. A writer dropped
// before Finish() leaves no file behind.
class ShardWriter {
 public:
  static absl::StatusOr<ShardWriter> Create(const std::string& path, TokenWidth width);

  // Fails, writing nothing of `tokens`, if an id does not fit the width or the shard would pass
  // kMaxShardTokens: ids are never wrapped.
  absl::Status Append(std::span<const uint16_t> tokens);
  absl::Status Append(std::span<const uint32_t> tokens);
  absl::Status Finish();

  const std::string& path() const { return file_.path(); }
  TokenWidth width() const { return width_; }
  int64_t num_tokens() const { return num_tokens_; }

 private:
  ShardWriter(AtomicFileWriter file, TokenWidth width);
  absl::Status CheckRoom(size_t count) const;
  absl::Status AppendBytes(const void* data, size_t size);
  absl::Status Flush();

  AtomicFileWriter file_;
  TokenWidth width_;
  int64_t num_tokens_ = 0;
  std::vector<unsigned char> buffer_;
};

// Writes `tokens` as one shard, atomically. Without a width, uint16 is used when every id is below
// 65536; asking for uint16 with a larger id is an error naming the token's index and value.
absl::Status WriteShard(const std::string& path, std::span<const uint32_t> tokens,
                        std::optional<TokenWidth> width = std::nullopt);

}  // namespace loom

#endif  // LOOM_DATA_SHARD_H_
