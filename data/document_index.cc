#include "data/document_index.h"

#include <algorithm>
#include <cstring>
#include <fstream>
#include <functional>
#include <limits>
#include <utility>

#include "data/atomic_file.h"
#include "data/status_macros.h"

namespace loom {
namespace {

// Cache layout (host byte order: the cache is a local derivative of the shard, never shipped):
// the header below, then num_documents + 1 int64 boundaries.
constexpr char kCacheMagic[8] = {'L', 'O', 'O', 'M', 'I', 'D', 'X', '1'};
struct CacheHeader {
  char magic[8];
  uint64_t shard_size;
  int64_t shard_mtime_ns;
  int64_t shard_ctime_ns;
  uint64_t shard_inode;
  uint32_t eot_token;
  uint32_t reserved;
  uint64_t num_tokens;
  uint64_t num_documents;
};

// Appends the end offset of every document that closes with `eot`. Documents are long compared to
// a block, so blocks are first tested with a branch-free (vectorized) comparison and only blocks
// holding an EOT are walked token by token.
template <typename T>
void FindDocumentEnds(const T* tokens, int64_t count, uint32_t eot, std::vector<int64_t>* ends) {
  if (eot > std::numeric_limits<T>::max()) return;  // the shard cannot hold this id
  const T target = static_cast<T>(eot);
  constexpr int64_t kBlock = 256;
  for (int64_t begin = 0; begin < count; begin += kBlock) {
    const int64_t end = std::min(count, begin + kBlock);
    unsigned hits = 0;
    for (int64_t i = begin; i < end; ++i) hits |= tokens[i] == target;
    if (hits == 0) continue;
    for (int64_t i = begin; i < end; ++i) {
      if (tokens[i] == target) ends->push_back(i + 1);
    }
  }
}

CacheHeader ExpectedHeader(const Shard& shard, uint32_t eot_token) {
  CacheHeader header{};
  std::memcpy(header.magic, kCacheMagic, sizeof(kCacheMagic));
  header.shard_size = shard.file_size();
  header.shard_mtime_ns = shard.mtime_ns();
  header.shard_ctime_ns = shard.ctime_ns();
  header.shard_inode = shard.inode();
  header.eot_token = eot_token;
  header.num_tokens = static_cast<uint64_t>(shard.num_tokens());
  return header;
}

// The boundaries stored in a cache that matches the shard, or an empty vector when the cache is
// missing, stale or damaged.
std::vector<int64_t> ReadCache(const std::string& path, const CacheHeader& expected) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return {};
  CacheHeader header;
  if (!in.read(reinterpret_cast<char*>(&header), sizeof(header))) return {};
  if (std::memcmp(header.magic, expected.magic, sizeof(header.magic)) != 0 ||
      header.shard_size != expected.shard_size ||
      header.shard_mtime_ns != expected.shard_mtime_ns ||
      header.shard_ctime_ns != expected.shard_ctime_ns ||
      header.shard_inode != expected.shard_inode || header.eot_token != expected.eot_token ||
      header.num_tokens != expected.num_tokens || header.num_documents > header.num_tokens) {
    return {};
  }
  std::vector<int64_t> boundaries(header.num_documents + 1);
  if (!in.read(reinterpret_cast<char*>(boundaries.data()),
               static_cast<std::streamsize>(boundaries.size() * sizeof(int64_t)))) {
    return {};
  }
  if (in.peek() != std::ifstream::traits_type::eof()) return {};
  // Boundaries must tile the shard with non-empty documents.
  if (boundaries.front() != 0 || boundaries.back() != static_cast<int64_t>(header.num_tokens) ||
      std::adjacent_find(boundaries.begin(), boundaries.end(), std::greater_equal<int64_t>()) !=
          boundaries.end()) {
    return {};
  }
  return boundaries;
}

absl::Status WriteCache(const std::string& path, CacheHeader header,
                        const std::vector<int64_t>& boundaries) {
  header.num_documents = boundaries.size() - 1;
  LOOM_DATA_ASSIGN_OR_RETURN(AtomicFileWriter file, AtomicFileWriter::Create(path));
  LOOM_DATA_RETURN_IF_ERROR(file.Append(&header, sizeof(header)));
  LOOM_DATA_RETURN_IF_ERROR(file.Append(boundaries.data(), boundaries.size() * sizeof(int64_t)));
  return file.Commit();
}

}  // namespace

std::string IndexCachePath(const std::string& shard_path) { return shard_path + ".idx"; }

DocumentIndex DocumentIndex::Build(const Shard& shard, uint32_t eot_token) {
  DocumentIndex index;
  index.eot_token_ = eot_token;
  const int64_t count = shard.num_tokens();
  if (shard.width() == TokenWidth::kUint16) {
    FindDocumentEnds(static_cast<const uint16_t*>(shard.token_data()), count, eot_token,
                     &index.boundaries_);
  } else {
    FindDocumentEnds(static_cast<const uint32_t*>(shard.token_data()), count, eot_token,
                     &index.boundaries_);
  }
  if (index.boundaries_.back() != count) index.boundaries_.push_back(count);
  return index;
}

DocumentIndex DocumentIndex::Load(const Shard& shard, uint32_t eot_token, IndexCache cache) {
  if (cache == IndexCache::kOff) return Build(shard, eot_token);
  const std::string path = IndexCachePath(shard.path());
  const CacheHeader expected = ExpectedHeader(shard, eot_token);
  std::vector<int64_t> cached = ReadCache(path, expected);
  if (!cached.empty()) {
    DocumentIndex index;
    index.boundaries_ = std::move(cached);
    index.eot_token_ = eot_token;
    index.from_cache_ = true;
    return index;
  }
  DocumentIndex index = Build(shard, eot_token);
  if (cache == IndexCache::kReadWrite) {
    index.cache_write_status_ = WriteCache(path, expected, index.boundaries_);
  }
  return index;
}

std::vector<int64_t> DocumentIndex::Lengths() const {
  std::vector<int64_t> lengths(boundaries_.size() - 1);
  for (size_t d = 0; d < lengths.size(); ++d) lengths[d] = boundaries_[d + 1] - boundaries_[d];
  return lengths;
}

}  // namespace loom
