// The tokens one rank computes in one forward/backward: documents (or pieces of documents) packed
// back to back, each token with its target, its document id and its position in the document.
#ifndef LOOM_SRC_TOKEN_BATCH_H_
#define LOOM_SRC_TOKEN_BATCH_H_

#include <cstdint>
#include <vector>

#include "absl/status/status.h"
#include "src/kernels/attention.h"

namespace loom {

struct TokenBatch {
  std::vector<int32_t> tokens;   // input ids
  std::vector<int32_t> targets;  // next-token ids; kIgnoreTarget where there is none
  std::vector<int32_t> doc;      // document id; tokens attend only within their document
  std::vector<int32_t> pos;      // position within the document (RoPE and causality)

  int size() const { return static_cast<int>(tokens.size()); }
  TokenSpans spans() const { return TokenSpans{doc.data(), pos.data(), size()}; }
  // Number of tokens that have a target (the loss is a mean over these).
  int64_t num_targets() const;

  // Whole documents packed in order: document d gets id d, positions 0..L-1, and targets shifted by
  // one with no target on its last token.
  static TokenBatch FromDocuments(const std::vector<std::vector<int32_t>>& documents);
  // Equal array sizes, token and target ids inside the vocabulary, non-negative positions.
  absl::Status Validate(int vocab_size) const;
};

}  // namespace loom

#endif  // LOOM_SRC_TOKEN_BATCH_H_
