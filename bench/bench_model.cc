#include "bench/bench_model.h"

#include "src/random.h"

namespace loom::bench {

ModelConfig BenchModelConfig() {
  ModelConfig c;
  c.vocab_size = 257;  // loom's byte-level vocabulary
  c.d_model = 512;
  c.n_layers = 8;
  c.n_heads = 8;
  c.n_kv_heads = 8;
  c.ffn_dim = 1376;  // about 8/3 * d_model, as LLaMA sizes it
  return c;
}

std::vector<int> BenchDocumentLengths(bool quick) {
  if (quick) return {512, 256, 128, 64, 64};
  return {2048, 1024, 512, 256, 128, 64, 64};
}

TokenBatch BenchBatch(const ModelConfig& config, bool quick) {
  Random rng(2024);
  std::vector<std::vector<int32_t>> docs;
  for (int len : BenchDocumentLengths(quick)) {
    std::vector<int32_t> d(static_cast<size_t>(len));
    for (int32_t& t : d) t = static_cast<int32_t>(rng.NextU64() % static_cast<uint64_t>(config.vocab_size));
    docs.push_back(std::move(d));
  }
  return TokenBatch::FromDocuments(docs);
}

double TrainingStepFlops(const ModelConfig& c, const std::vector<int>& doc_lengths) {
  double tokens = 0, causal_pairs = 0;
  for (int len : doc_lengths) {
    tokens += len;
    causal_pairs += 0.5 * static_cast<double>(len) * len;
  }
  const double C = c.d_model, Q = c.q_dim(), KV = c.kv_dim(), F = c.ffn_dim, V = c.vocab_size;
  const double per_token_layer = 2.0 * (C * Q + 2 * C * KV + Q * C + 3 * C * F);
  const double attention_layer = 2.0 * 2.0 * causal_pairs * c.head_dim() * c.n_heads;
  const double forward = c.n_layers * (tokens * per_token_layer + attention_layer) + tokens * 2 * C * V;
  return 3.0 * forward;
}

}  // namespace loom::bench
