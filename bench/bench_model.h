// The model and batch that the `step` and `vs_torch` benchmarks train on: d_model 512, 8 layers,
// 8 heads, a packed batch of 4,096 tokens in documents of mixed length.
#ifndef LOOM_BENCH_BENCH_MODEL_H_
#define LOOM_BENCH_BENCH_MODEL_H_

#include <vector>

#include "src/model_config.h"
#include "src/token_batch.h"

namespace loom::bench {

ModelConfig BenchModelConfig();
// Document lengths of the packed batch (sum 4,096; quick: 1,024).
std::vector<int> BenchDocumentLengths(bool quick);
TokenBatch BenchBatch(const ModelConfig& config, bool quick);
// Matmul FLOPs of one training step (forward + backward = 3x forward; causal attention counts
// half the square), as usually quoted for model FLOPs utilisation.
double TrainingStepFlops(const ModelConfig& config, const std::vector<int>& doc_lengths);

}  // namespace loom::bench

#endif  // LOOM_BENCH_BENCH_MODEL_H_
