// Shape of a LLaMA-style decoder. Field names follow the Hugging Face LLaMA config.json where
// one exists, so checkpoints load in PyTorch tools.
#ifndef LOOM_SRC_MODEL_CONFIG_H_
#define LOOM_SRC_MODEL_CONFIG_H_

#include "absl/status/status.h"

namespace loom {

struct ModelConfig {
  int vocab_size = 257;  // byte-level tokens + end-of-text
  int d_model = 256;
  int n_layers = 4;
  int n_heads = 8;
  int n_kv_heads = 8;
  int ffn_dim = 688;
  float rope_theta = 10000.0f;
  float norm_eps = 1e-5f;
  bool tied_embeddings = false;

  int head_dim() const { return d_model / n_heads; }
  int q_dim() const { return n_heads * head_dim(); }
  int kv_dim() const { return n_kv_heads * head_dim(); }

  // An error naming the offending field for any shape the model cannot be built with.
  absl::Status Validate() const;
};

}  // namespace loom

#endif  // LOOM_SRC_MODEL_CONFIG_H_
