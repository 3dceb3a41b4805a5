// Writes a stream of documents into numbered shards `<folder>/<prefix>_000000.bin`, ... of at most
// `shard_tokens` tokens each. Prep and the synthetic generator share it, so their output is laid
// out the same way.
//
// A document is kept within one shard: when it does not fit in the rest of the current shard, a new
// shard is started. Only a document longer than `shard_tokens` is cut across shards, and each cut
// piece then reads back as a document of its own (the index works per shard).
#ifndef LOOM_DATA_SHARD_SET_WRITER_H_
#define LOOM_DATA_SHARD_SET_WRITER_H_

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "data/shard.h"

namespace loom {

// `<folder>/<prefix>_<number as 6 digits>.bin`.
std::string ShardPath(const std::string& folder, const std::string& prefix, int number);

class ShardSetWriter {
 public:
  // shard_tokens must be in [1, kMaxShardTokens]; Create() checks it.
  static absl::StatusOr<ShardSetWriter> Create(std::string folder, std::string prefix,
                                               int64_t shard_tokens, TokenWidth width);

  // Announces a document of `length` tokens (its EOT included); starts a new shard if it would not
  // fit in the current one. The document's tokens then follow through Append().
  absl::Status BeginDocument(int64_t length);
  // Appends tokens of the current document, moving on to a new shard whenever one is full.
  absl::Status Append(std::span<const uint16_t> tokens);
  // Finishes the last shard; returns the paths of all shards written, in order.
  absl::StatusOr<std::vector<std::string>> Finish();

  int64_t num_documents() const { return num_documents_; }
  int64_t num_tokens() const { return num_tokens_; }

 private:
  ShardSetWriter(std::string folder, std::string prefix, int64_t shard_tokens, TokenWidth width);
  absl::Status StartShard();
  absl::Status FinishShard();

  std::string folder_;
  std::string prefix_;
  int64_t shard_tokens_;
  TokenWidth width_;
  std::optional<ShardWriter> current_;
  std::vector<std::string> paths_;
  int64_t num_documents_ = 0;
  int64_t num_tokens_ = 0;
};

}  // namespace loom

#endif  // LOOM_DATA_SHARD_SET_WRITER_H_
