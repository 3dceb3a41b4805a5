// A training or validation set: several shards with their document indexes, seen as one list of
// documents numbered across shards in the order the shards are given.
#ifndef LOOM_DATA_TOKEN_DATASET_H_
#define LOOM_DATA_TOKEN_DATASET_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "data/document_index.h"
#include "data/shard.h"

namespace loom {

struct DatasetOptions {
  int64_t vocab_size = 0;  // every token id must be below it
  uint32_t eot_token = 0;  // the end-of-text id that separates documents
  IndexCache index_cache = IndexCache::kReadWrite;
};

class TokenDataset {
 public:
  // Opens (and fully checks) every shard and loads its index. No shards is an error.
  static absl::StatusOr<TokenDataset> Open(const std::vector<std::string>& shard_paths,
                                           const DatasetOptions& options);

  struct DocumentLocation {
    int shard = 0;      // index into the shard list
    int64_t begin = 0;  // first token within that shard
    int64_t length = 0;
  };

  int num_shards() const { return static_cast<int>(shards_.size()); }
  const Shard& shard(int i) const { return shards_[static_cast<size_t>(i)]; }
  const DocumentIndex& index(int i) const { return indexes_[static_cast<size_t>(i)]; }
  int64_t num_documents() const { return document_starts_.back(); }
  int64_t num_tokens() const { return num_tokens_; }

  DocumentLocation Locate(int64_t document) const;
  int64_t DocumentLength(int64_t document) const { return Locate(document).length; }
  // Lengths of all documents, in document order.
  std::vector<int64_t> DocumentLengths() const;
  // For error messages: "document 12 (tokens [300, 420) of /data/train_000000.bin)".
  std::string DescribeDocument(int64_t document) const;
  // Tokens [offset, offset + count) of a document, as int32.
  void CopyTokens(int64_t document, int64_t offset, int64_t count, int32_t* out) const;

 private:
  TokenDataset() = default;

  std::vector<Shard> shards_;
  std::vector<DocumentIndex> indexes_;
  // document_starts_[s] is the number of the first document of shard s; one entry per shard plus
  // the total.
  std::vector<int64_t> document_starts_{0};
  int64_t num_tokens_ = 0;
};

// The shards `<folder>/<prefix>_*.bin`, sorted by name (prep's `train` and `val` sets). An empty
// result is not an error; a missing or unreadable folder is.
absl::StatusOr<std::vector<std::string>> ListShards(const std::string& folder,
                                                    const std::string& prefix);

}  // namespace loom

#endif  // LOOM_DATA_TOKEN_DATASET_H_
