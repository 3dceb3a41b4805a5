#include "src/token_batch.h"

#include "absl/strings/str_format.h"
#include "src/kernels/cross_entropy.h"

namespace loom {

int64_t TokenBatch::num_targets() const {
  int64_t n = 0;
  for (int32_t t : targets) n += t != kIgnoreTarget;
  return n;
}

TokenBatch TokenBatch::FromDocuments(const std::vector<std::vector<int32_t>>& documents) {
  TokenBatch b;
  for (size_t d = 0; d < documents.size(); ++d) {
    const auto& doc = documents[d];
    for (size_t i = 0; i < doc.size(); ++i) {
      b.tokens.push_back(doc[i]);
      b.targets.push_back(i + 1 < doc.size() ? doc[i + 1] : kIgnoreTarget);
      b.doc.push_back(static_cast<int32_t>(d));
      b.pos.push_back(static_cast<int32_t>(i));
    }
  }
  return b;
}

absl::Status TokenBatch::Validate(int vocab_size) const {
  const size_t n = tokens.size();
  if (targets.size() != n || doc.size() != n || pos.size() != n) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "token batch arrays differ in size: tokens %d, targets %d, doc %d, pos %d", n,
        targets.size(), doc.size(), pos.size()));
  }
  for (size_t i = 0; i < n; ++i) {
    if (tokens[i] < 0 || tokens[i] >= vocab_size) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "token %d at batch index %d is outside the vocabulary [0, %d)", tokens[i], i, vocab_size));
    }
    if (targets[i] != kIgnoreTarget && (targets[i] < 0 || targets[i] >= vocab_size)) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "target %d at batch index %d is outside the vocabulary [0, %d)", targets[i], i,
          vocab_size));
    }
    if (pos[i] < 0) {
      return absl::InvalidArgumentError(
          absl::StrFormat("negative position %d at batch index %d", pos[i], i));
    }
  }
  return absl::OkStatus();
}

}  // namespace loom
