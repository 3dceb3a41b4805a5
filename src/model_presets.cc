#include "src/model_presets.h"

#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"

namespace loom {
namespace {

struct Preset {
  const char* name;
  const char* source;
  ModelConfig shape;
};

ModelConfig Shape(int d_model, int n_layers, int n_heads, int n_kv_heads, int ffn_dim) {
  ModelConfig c;
  c.vocab_size = 32000;
  c.d_model = d_model;
  c.n_layers = n_layers;
  c.n_heads = n_heads;
  c.n_kv_heads = n_kv_heads;
  c.ffn_dim = ffn_dim;
  return c;
}

// Widths, depths and heads from the LLaMA paper's table of model sizes (Touvron et al., arXiv
// 2302.13971, table 2: 6.7B, 13.0B, 32.5B); the SwiGLU widths are those of the released
// checkpoints' config.json. The 70B is LLaMA 2's (arXiv 2307.09288), with grouped-query
// attention over 8 key/value heads.
const std::vector<Preset>& Presets() {
  static const auto* presets = new std::vector<Preset>{
      {"llama-7b", "LLaMA 7B (arXiv 2302.13971): d 4096, 32 layers, 32 heads, SwiGLU 11008",
       Shape(4096, 32, 32, 32, 11008)},
      {"llama-13b", "LLaMA 13B (arXiv 2302.13971): d 5120, 40 layers, 40 heads, SwiGLU 13824",
       Shape(5120, 40, 40, 40, 13824)},
      {"llama-30b",
       "LLaMA 30B (32.5B, arXiv 2302.13971): d 6656, 60 layers, 52 heads, SwiGLU 17920",
       Shape(6656, 60, 52, 52, 17920)},
      {"llama-70b",
       "LLaMA 2 70B (arXiv 2307.09288): d 8192, 80 layers, 64 heads sharing 8 key/value heads, "
       "SwiGLU 28672",
       Shape(8192, 80, 64, 8, 28672)},
  };
  return *presets;
}

const Preset* Find(std::string_view name) {
  for (const Preset& p : Presets()) {
    if (name == p.name) return &p;
  }
  return nullptr;
}

absl::Status Unknown(std::string_view name) {
  return absl::NotFoundError(absl::StrFormat("model preset '%s' is unknown (presets: %s)", name,
                                             absl::StrJoin(ModelPresetNames(), ", ")));
}

}  // namespace

absl::StatusOr<ModelConfig> ModelPreset(std::string_view name) {
  const Preset* p = Find(name);
  if (p == nullptr) return Unknown(name);
  return p->shape;
}

absl::StatusOr<std::string> ModelPresetSource(std::string_view name) {
  const Preset* p = Find(name);
  if (p == nullptr) return Unknown(name);
  return std::string(p->source);
}

std::vector<std::string> ModelPresetNames() {
  std::vector<std::string> names;
  for (const Preset& p : Presets()) names.push_back(p.name);
  return names;
}

double ModelParameters(const ModelConfig& model) {
  const double d = model.d_model;
  const double layer = 2 * d * model.q_dim() + 2 * d * model.kv_dim() + 3 * d * model.ffn_dim +
                       2 * d;  // attention, SwiGLU, two RMSNorm gains
  const double embedding = d * model.vocab_size;
  return model.n_layers * layer + embedding * (model.tied_embeddings ? 1 : 2) + d;
}

}  // namespace loom
