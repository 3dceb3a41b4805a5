#include "src/model_config.h"

#include <cmath>

#include "absl/strings/str_format.h"

namespace loom {

absl::Status ModelConfig::Validate() const {
  const struct {
    const char* name;
    int value;
  } positive[] = {{"vocab_size", vocab_size}, {"d_model", d_model},     {"n_layers", n_layers},
                  {"n_heads", n_heads},       {"n_kv_heads", n_kv_heads}, {"ffn_dim", ffn_dim}};
  for (const auto& field : positive) {
    if (field.value <= 0) {
      return absl::InvalidArgumentError(
          absl::StrFormat("model.%s must be positive, got %d", field.name, field.value));
    }
  }
  if (d_model % n_heads != 0) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "model.d_model (%d) must be divisible by model.n_heads (%d)", d_model, n_heads));
  }
  if (n_heads % n_kv_heads != 0) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "model.n_heads (%d) must be divisible by model.n_kv_heads (%d)", n_heads, n_kv_heads));
  }
  if (head_dim() % 2 != 0) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "model.d_model / model.n_heads = %d is odd: RoPE needs an even head_dim", head_dim()));
  }
  if (!(rope_theta > 0.0f) || !std::isfinite(rope_theta)) {
    return absl::InvalidArgumentError(
        absl::StrFormat("model.rope_theta must be positive and finite, got %g", rope_theta));
  }
  if (!(norm_eps > 0.0f) || !std::isfinite(norm_eps)) {
    return absl::InvalidArgumentError(
        absl::StrFormat("model.norm_eps must be positive and finite, got %g", norm_eps));
  }
  return absl::OkStatus();
}

}  // namespace loom
