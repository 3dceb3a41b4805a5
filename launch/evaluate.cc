#include "launch/evaluate.h"

#include <algorithm>

#include "src/kernels/cross_entropy.h"

namespace loom {

std::vector<TokenBatch> EvalBatches(const TokenDataset& dataset, const EvalOptions& o) {
  std::vector<TokenBatch> batches(1);
  int64_t total = 0;
  int32_t sequence = 0;
  std::vector<int32_t> piece;
  for (int64_t d = 0; d < dataset.num_documents(); ++d) {
    const int64_t length = dataset.DocumentLength(d);
    for (int64_t offset = 0; offset < length; offset += o.sequence_tokens) {
      int64_t n = std::min(o.sequence_tokens, length - offset);
      if (o.max_tokens > 0) n = std::min(n, o.max_tokens - total);
      if (n <= 0) return batches;
      if (batches.back().size() + n > o.batch_tokens && batches.back().size() > 0) {
        batches.emplace_back();
      }
      piece.resize(static_cast<size_t>(n));
      dataset.CopyTokens(d, offset, n, piece.data());
      TokenBatch& b = batches.back();
      for (int64_t i = 0; i < n; ++i) {
        b.tokens.push_back(piece[static_cast<size_t>(i)]);
        b.targets.push_back(i + 1 < n ? piece[static_cast<size_t>(i + 1)] : kIgnoreTarget);
        b.doc.push_back(sequence);
        b.pos.push_back(static_cast<int32_t>(i));
      }
      ++sequence;
      total += n;
    }
  }
  if (batches.back().size() == 0) batches.pop_back();
  return batches;
}

EvalResult Evaluate(Model& model, const std::vector<TokenBatch>& batches) {
  EvalResult r;
  for (const TokenBatch& b : batches) {
    r.loss_sum += model.Loss(b);
    r.targets += b.num_targets();
    r.tokens += b.size();
  }
  return r;
}

}  // namespace loom
