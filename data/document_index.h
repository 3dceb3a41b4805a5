// Where each document of a shard begins and ends.
//
// Convention: the end-of-text (EOT) token *closes* a document and belongs to it. A document is the
// run of tokens up to and including the next EOT; tokens after the last EOT (a shard that does not
// end in EOT) form one final document without it. Every document therefore has at least one token,
// and a shard's documents tile it exactly. loom's prep writes each document as its text followed by
// one EOT, so the index gives back exactly the documents prep wrote, and training learns to predict
// EOT at the end of a document. Shards from llm.c put EOT at the *start* of each document instead;
// read with this convention their first document is the lone leading EOT, and every other document
// ends with the EOT that llm.c placed before the next one: the same tokens, grouped one token
// later.
//
// Building an index scans the whole shard, so it is cached beside the shard as `<shard>.idx`. The
// cache records the shard's size, inode, modification and status-change times, and the EOT id it
// was built for; if any of them differs, the index is rebuilt and the cache rewritten. Replacing a
// shard (a new inode), editing it in place, or copying over it while preserving timestamps (the
// status-change time still moves) all invalidate the cache; only an in-place edit that keeps the
// size and lands within the file system's timestamp granularity of the cached state goes unseen.
// The cache is written atomically, so concurrent readers see either no cache or a complete one.
#ifndef LOOM_DATA_DOCUMENT_INDEX_H_
#define LOOM_DATA_DOCUMENT_INDEX_H_

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "data/shard.h"

namespace loom {

enum class IndexCache {
  kReadWrite,  // use a valid cache, else build and write one
  kReadOnly,   // use a valid cache, else build without writing (read-only datasets)
  kOff,        // always build; neither read nor write a cache
};

class DocumentIndex {
 public:
  // Scans the shard for `eot_token`.
  static DocumentIndex Build(const Shard& shard, uint32_t eot_token);
  // A valid cache when there is one, else Build(). A missing, stale or damaged cache is never an
  // error, and neither is failing to write one (a read-only folder): the index is the same either
  // way. cache_write_status() tells why a cache could not be written, for a warning.
  static DocumentIndex Load(const Shard& shard, uint32_t eot_token,
                            IndexCache cache = IndexCache::kReadWrite);

  int64_t num_documents() const { return static_cast<int64_t>(boundaries_.size()) - 1; }
  int64_t num_tokens() const { return boundaries_.back(); }
  int64_t begin(int64_t document) const { return boundaries_[static_cast<size_t>(document)]; }
  int64_t end(int64_t document) const { return boundaries_[static_cast<size_t>(document) + 1]; }
  int64_t length(int64_t document) const { return end(document) - begin(document); }
  // num_documents() + 1 offsets: document d is tokens [boundaries[d], boundaries[d + 1]).
  std::span<const int64_t> boundaries() const { return boundaries_; }
  std::vector<int64_t> Lengths() const;
  uint32_t eot_token() const { return eot_token_; }

  bool from_cache() const { return from_cache_; }
  const absl::Status& cache_write_status() const { return cache_write_status_; }

 private:
  DocumentIndex() = default;

  std::vector<int64_t> boundaries_{0};
  uint32_t eot_token_ = 0;
  bool from_cache_ = false;
  absl::Status cache_write_status_;
};

// The cache file of a shard: `<shard_path>.idx`.
std::string IndexCachePath(const std::string& shard_path);

}  // namespace loom

#endif  // LOOM_DATA_DOCUMENT_INDEX_H_
