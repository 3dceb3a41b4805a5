#include "data/shard.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <cassert>
#include <cerrno>
#include <cstring>
#include <limits>
#include <utility>

#include "absl/strings/str_format.h"
#include "data/status_macros.h"

namespace loom {

static_assert(std::endian::native == std::endian::little,
              "shards are little-endian and are mapped without conversion");

namespace {

constexpr size_t kWriteBufferBytes = size_t{8} << 20;

// Index of the first token >= limit, or -1. The common case (no such token) runs as a branch-free
// maximum over blocks, which the compiler vectorizes; only a block that fails is searched.
template <typename T>
int64_t FirstTokenAtLeast(const T* tokens, int64_t count, uint64_t limit) {
  if (limit > std::numeric_limits<T>::max()) return -1;  // no value of T can reach it
  constexpr int64_t kBlock = 4096;
  for (int64_t begin = 0; begin < count; begin += kBlock) {
    const int64_t end = std::min(count, begin + kBlock);
    T block_max = 0;
    for (int64_t i = begin; i < end; ++i) block_max = std::max(block_max, tokens[i]);
    if (block_max < limit) continue;
    for (int64_t i = begin; i < end; ++i) {
      if (tokens[i] >= limit) return i;
    }
  }
  return -1;
}

absl::Status ReadHeader(int fd, const std::string& path, int32_t* header) {
  size_t done = 0;
  while (done < kShardHeaderBytes) {
    const ssize_t n = ::pread(fd, reinterpret_cast<char*>(header) + done, kShardHeaderBytes - done,
                              static_cast<off_t>(done));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      return absl::ErrnoToStatus(errno,
                                 absl::StrFormat("shard %s: read of the header failed", path));
    }
    if (n == 0) {
      return absl::DataLossError(absl::StrFormat(
          "shard %s: truncated header: the file ends at offset %d, the header needs %d bytes", path,
          done, kShardHeaderBytes));
    }
    done += static_cast<size_t>(n);
  }
  return absl::OkStatus();
}

}  // namespace

const char* TokenWidthName(TokenWidth width) {
  return width == TokenWidth::kUint16 ? "uint16" : "uint32";
}

TokenWidth NarrowestWidth(std::span<const uint32_t> tokens) {
  return FirstTokenAtLeast(tokens.data(), static_cast<int64_t>(tokens.size()), 65536) < 0
             ? TokenWidth::kUint16
             : TokenWidth::kUint32;
}

absl::StatusOr<Shard> Shard::Open(const std::string& path, int64_t vocab_size) {
  if (vocab_size < 1 || vocab_size > kMaxVocabSize) {
    return absl::InvalidArgumentError(absl::StrFormat("shard %s: vocab size %d is outside [1, %d]",
                                                      path, vocab_size, kMaxVocabSize));
  }
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return absl::ErrnoToStatus(errno, absl::StrFormat("shard %s: cannot open", path));
  struct FdCloser {
    int fd;
    ~FdCloser() { ::close(fd); }
  } closer{fd};

  struct stat st;
  if (::fstat(fd, &st) != 0) {
    return absl::ErrnoToStatus(errno, absl::StrFormat("shard %s: cannot stat", path));
  }
  if (!S_ISREG(st.st_mode)) {
    return absl::InvalidArgumentError(absl::StrFormat("shard %s: not a regular file", path));
  }
  const uint64_t file_size = static_cast<uint64_t>(st.st_size);

  int32_t header[kShardHeaderInts];
  LOOM_DATA_RETURN_IF_ERROR(ReadHeader(fd, path, header));
  const int32_t magic = header[0];
  const int32_t version = header[1];
  TokenWidth width;
  if (magic == kShardMagicUint16) {
    width = TokenWidth::kUint16;
  } else if (magic == kShardMagicUint32) {
    width = TokenWidth::kUint32;
  } else {
    return absl::DataLossError(absl::StrFormat(
        "shard %s: offset 0: magic %d is not a token shard's (expected %d for uint16 tokens or %d "
        "for uint32 tokens)",
        path, magic, kShardMagicUint16, kShardMagicUint32));
  }
  const int32_t expected_version =
      width == TokenWidth::kUint16 ? kShardVersionUint16 : kShardVersionUint32;
  if (version != expected_version) {
    return absl::DataLossError(
        absl::StrFormat("shard %s: offset 4: version %d does not go with magic %d (expected %d)",
                        path, version, magic, expected_version));
  }
  const int64_t count = header[2];
  if (count < 0) {
    return absl::DataLossError(
        absl::StrFormat("shard %s: offset 8: negative token count %d", path, count));
  }
  const uint64_t expected_size =
      static_cast<uint64_t>(kShardHeaderBytes) + static_cast<uint64_t>(count) * TokenBytes(width);
  if (file_size != expected_size) {
    return absl::DataLossError(absl::StrFormat(
        "shard %s: offset %d: the header promises %d %s tokens (%d bytes in all) but the file has "
        "%d bytes",
        path, std::min(file_size, expected_size), count, TokenWidthName(width), expected_size,
        file_size));
  }

  void* map = ::mmap(nullptr, file_size, PROT_READ, MAP_SHARED, fd, 0);
  if (map == MAP_FAILED) {
    return absl::ErrnoToStatus(errno, absl::StrFormat("shard %s: mmap failed", path));
  }
  Shard shard;
  shard.path_ = path;
  shard.data_ = static_cast<const unsigned char*>(map);
  shard.file_size_ = file_size;
  shard.mtime_ns_ = static_cast<int64_t>(st.st_mtim.tv_sec) * 1'000'000'000 + st.st_mtim.tv_nsec;
  shard.ctime_ns_ = static_cast<int64_t>(st.st_ctim.tv_sec) * 1'000'000'000 + st.st_ctim.tv_nsec;
  shard.inode_ = static_cast<uint64_t>(st.st_ino);
  shard.width_ = width;
  shard.num_tokens_ = count;

  const uint64_t limit = static_cast<uint64_t>(vocab_size);
  const int64_t bad =
      width == TokenWidth::kUint16
          ? FirstTokenAtLeast(static_cast<const uint16_t*>(shard.token_data()), count, limit)
          : FirstTokenAtLeast(static_cast<const uint32_t*>(shard.token_data()), count, limit);
  if (bad >= 0) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "shard %s: offset %d: token %d (index %d) is not below the vocab size %d", path,
        kShardHeaderBytes + bad * TokenBytes(width), shard.token(bad), bad, vocab_size));
  }
  return shard;
}

Shard::Shard(Shard&& other) noexcept
    : path_(std::move(other.path_)),
      data_(std::exchange(other.data_, nullptr)),
      file_size_(std::exchange(other.file_size_, 0)),
      mtime_ns_(other.mtime_ns_),
      ctime_ns_(other.ctime_ns_),
      inode_(other.inode_),
      width_(other.width_),
      num_tokens_(std::exchange(other.num_tokens_, 0)) {}

Shard& Shard::operator=(Shard&& other) noexcept {
  if (this != &other) {
    Unmap();
    path_ = std::move(other.path_);
    data_ = std::exchange(other.data_, nullptr);
    file_size_ = std::exchange(other.file_size_, 0);
    mtime_ns_ = other.mtime_ns_;
    ctime_ns_ = other.ctime_ns_;
    inode_ = other.inode_;
    width_ = other.width_;
    num_tokens_ = std::exchange(other.num_tokens_, 0);
  }
  return *this;
}

Shard::~Shard() { Unmap(); }

void Shard::Unmap() {
  if (data_ != nullptr) ::munmap(const_cast<unsigned char*>(data_), file_size_);
  data_ = nullptr;
}

uint32_t Shard::token(int64_t i) const {
  assert(0 <= i && i < num_tokens_);
  return width_ == TokenWidth::kUint16 ? static_cast<const uint16_t*>(token_data())[i]
                                       : static_cast<const uint32_t*>(token_data())[i];
}

void Shard::CopyTokens(int64_t begin, int64_t count, int32_t* out) const {
  assert(0 <= begin && 0 <= count && begin + count <= num_tokens_);
  // Open() checked every id against a vocabulary of at most 2^31 ids, so the casts are exact.
  if (width_ == TokenWidth::kUint16) {
    const uint16_t* in = static_cast<const uint16_t*>(token_data()) + begin;
    for (int64_t i = 0; i < count; ++i) out[i] = in[i];
  } else {
    const uint32_t* in = static_cast<const uint32_t*>(token_data()) + begin;
    for (int64_t i = 0; i < count; ++i) out[i] = static_cast<int32_t>(in[i]);
  }
}

absl::StatusOr<ShardWriter> ShardWriter::Create(const std::string& path, TokenWidth width) {
  LOOM_DATA_ASSIGN_OR_RETURN(AtomicFileWriter file, AtomicFileWriter::Create(path));
  const int32_t zeros[kShardHeaderInts] = {};
  LOOM_DATA_RETURN_IF_ERROR(file.Append(zeros, sizeof(zeros)));
  return ShardWriter(std::move(file), width);
}

ShardWriter::ShardWriter(AtomicFileWriter file, TokenWidth width)
    : file_(std::move(file)), width_(width) {
  buffer_.reserve(kWriteBufferBytes);
}

absl::Status ShardWriter::CheckRoom(size_t count) const {
  if (static_cast<uint64_t>(num_tokens_) + count > static_cast<uint64_t>(kMaxShardTokens)) {
    return absl::OutOfRangeError(absl::StrFormat(
        "shard %s: more than %d tokens, the most the header can count", path(), kMaxShardTokens));
  }
  return absl::OkStatus();
}

absl::Status ShardWriter::Flush() {
  absl::Status status = file_.Append(buffer_.data(), buffer_.size());
  buffer_.clear();
  return status;
}

absl::Status ShardWriter::AppendBytes(const void* data, size_t size) {
  const unsigned char* bytes = static_cast<const unsigned char*>(data);
  // Large blocks skip the buffer: one write instead of a copy and several writes.
  if (buffer_.empty() && size >= kWriteBufferBytes) return file_.Append(bytes, size);
  while (size > 0) {
    const size_t n = std::min(size, kWriteBufferBytes - buffer_.size());
    buffer_.insert(buffer_.end(), bytes, bytes + n);
    bytes += n;
    size -= n;
    if (buffer_.size() == kWriteBufferBytes) LOOM_DATA_RETURN_IF_ERROR(Flush());
  }
  return absl::OkStatus();
}

absl::Status ShardWriter::Append(std::span<const uint16_t> tokens) {
  LOOM_DATA_RETURN_IF_ERROR(CheckRoom(tokens.size()));
  if (width_ == TokenWidth::kUint32) {
    // Widening cannot fail; go through the uint32 path in bounded pieces.
    uint32_t wide[4096];
    for (size_t begin = 0; begin < tokens.size(); begin += std::size(wide)) {
      const size_t n = std::min(std::size(wide), tokens.size() - begin);
      std::copy_n(tokens.data() + begin, n, wide);
      LOOM_DATA_RETURN_IF_ERROR(Append(std::span<const uint32_t>(wide, n)));
    }
    return absl::OkStatus();
  }
  LOOM_DATA_RETURN_IF_ERROR(AppendBytes(tokens.data(), tokens.size_bytes()));
  num_tokens_ += static_cast<int64_t>(tokens.size());
  return absl::OkStatus();
}

absl::Status ShardWriter::Append(std::span<const uint32_t> tokens) {
  LOOM_DATA_RETURN_IF_ERROR(CheckRoom(tokens.size()));
  if (width_ == TokenWidth::kUint16) {
    const int64_t bad =
        FirstTokenAtLeast(tokens.data(), static_cast<int64_t>(tokens.size()), 65536);
    if (bad >= 0) {
      return absl::OutOfRangeError(absl::StrFormat(
          "shard %s: token %d (index %d) does not fit uint16 tokens; write uint32 shards", path(),
          tokens[static_cast<size_t>(bad)], num_tokens_ + bad));
    }
    uint16_t narrow[4096];
    for (size_t begin = 0; begin < tokens.size(); begin += std::size(narrow)) {
      const size_t n = std::min(std::size(narrow), tokens.size() - begin);
      for (size_t i = 0; i < n; ++i) narrow[i] = static_cast<uint16_t>(tokens[begin + i]);
      LOOM_DATA_RETURN_IF_ERROR(Append(std::span<const uint16_t>(narrow, n)));
    }
    return absl::OkStatus();
  }
  LOOM_DATA_RETURN_IF_ERROR(AppendBytes(tokens.data(), tokens.size_bytes()));
  num_tokens_ += static_cast<int64_t>(tokens.size());
  return absl::OkStatus();
}

absl::Status ShardWriter::Finish() {
  LOOM_DATA_RETURN_IF_ERROR(Flush());
  int32_t header[kShardHeaderInts] = {};
  header[0] = width_ == TokenWidth::kUint16 ? kShardMagicUint16 : kShardMagicUint32;
  header[1] = width_ == TokenWidth::kUint16 ? kShardVersionUint16 : kShardVersionUint32;
  header[2] = static_cast<int32_t>(num_tokens_);
  LOOM_DATA_RETURN_IF_ERROR(file_.WriteAt(0, header, sizeof(header)));
  return file_.Commit();
}

absl::Status WriteShard(const std::string& path, std::span<const uint32_t> tokens,
                        std::optional<TokenWidth> width) {
  LOOM_DATA_ASSIGN_OR_RETURN(ShardWriter writer,
                             ShardWriter::Create(path, width.value_or(NarrowestWidth(tokens))));
  LOOM_DATA_RETURN_IF_ERROR(writer.Append(tokens));
  return writer.Finish();
}

}  // namespace loom
