// Mean token loss of a model on a dataset, reading documents in order (no shuffling), so that the
// same data gives the same figure every time: used for validation during training and `loom eval`.
#ifndef LOOM_LAUNCH_EVALUATE_H_
#define LOOM_LAUNCH_EVALUATE_H_

#include <cstdint>
#include <vector>

#include "data/token_dataset.h"
#include "src/model.h"
#include "src/token_batch.h"

namespace loom {

struct EvalOptions {
  int64_t max_tokens = 0;       // stop after this many tokens (0 = the whole dataset)
  int64_t sequence_tokens = 0;  // longer documents are cut into pieces of this length
  int64_t batch_tokens = 0;     // tokens per forward pass
};

struct EvalResult {
  double loss_sum = 0;  // summed token losses
  int64_t targets = 0;
  int64_t tokens = 0;
  double mean_loss() const { return targets > 0 ? loss_sum / static_cast<double>(targets) : 0; }
};

// The evaluation batches: documents in order, cut at sequence_tokens, packed up to batch_tokens.
std::vector<TokenBatch> EvalBatches(const TokenDataset& dataset, const EvalOptions& options);
EvalResult Evaluate(Model& model, const std::vector<TokenBatch>& batches);

}  // namespace loom

#endif  // LOOM_LAUNCH_EVALUATE_H_
