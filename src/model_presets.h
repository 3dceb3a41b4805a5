// Published LLaMA-style model shapes, so that the simulator can plan for the models the papers
// train (7B to 70B) by name. Each preset names its source; the vocabulary is LLaMA's 32,000
// SentencePiece tokens throughout.
#ifndef LOOM_SRC_MODEL_PRESETS_H_
#define LOOM_SRC_MODEL_PRESETS_H_

#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "src/model_config.h"

namespace loom {

// "llama-7b", "llama-13b", "llama-30b", "llama-70b". Fails naming the known presets.
absl::StatusOr<ModelConfig> ModelPreset(std::string_view name);
std::vector<std::string> ModelPresetNames();
// Where a preset's figures come from.
absl::StatusOr<std::string> ModelPresetSource(std::string_view name);

// Parameters of the shape (embeddings, layers, final norm and, unless tied, the output head).
double ModelParameters(const ModelConfig& model);

}  // namespace loom

#endif  // LOOM_SRC_MODEL_PRESETS_H_
