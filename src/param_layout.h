// Where each named parameter lives in the one flat parameter buffer (and, at the same offsets,
// in the gradient buffer). Names follow Hugging Face LLaMA, e.g.
// "model.layers.3.self_attn.q_proj.weight". A layer's tensors are contiguous, so a pipeline
// stage owns one contiguous range.
#ifndef LOOM_SRC_PARAM_LAYOUT_H_
#define LOOM_SRC_PARAM_LAYOUT_H_

#include <cstddef>
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "src/model_config.h"

namespace loom {

struct ParamEntry {
  std::string name;
  std::vector<int64_t> shape;
  size_t offset = 0;  // in floats
  size_t numel = 0;
};

// Offsets of one decoder layer's tensors, relative to the start of the flat buffer.
struct LayerParams {
  size_t input_norm, q_proj, k_proj, v_proj, o_proj, post_norm, gate_proj, up_proj, down_proj;
};

class ParamLayout {
 public:
  explicit ParamLayout(const ModelConfig& config);

  const std::vector<ParamEntry>& entries() const { return entries_; }
  size_t total_numel() const { return total_; }
  // The entry of a name, or nullptr.
  const ParamEntry* Find(const std::string& name) const;

  size_t embed_tokens() const { return embed_; }
  size_t final_norm() const { return final_norm_; }
  // The output head's weight: the embedding's when tied.
  size_t lm_head() const { return lm_head_; }
  const LayerParams& layer(int l) const { return layers_[static_cast<size_t>(l)]; }
  // [begin, end) float offsets of layer l's tensors.
  std::pair<size_t, size_t> LayerRange(int l) const;

 private:
  size_t Add(const std::string& name, std::vector<int64_t> shape);

  std::vector<ParamEntry> entries_;
  std::map<std::string, size_t> index_;
  std::vector<LayerParams> layers_;
  std::vector<std::pair<size_t, size_t>> layer_ranges_;
  size_t total_ = 0;
  size_t embed_ = 0, final_norm_ = 0, lm_head_ = 0;
};

}  // namespace loom

#endif  // LOOM_SRC_PARAM_LAYOUT_H_
