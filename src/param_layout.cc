#include "src/param_layout.h"

#include "absl/strings/str_cat.h"

namespace loom {

ParamLayout::ParamLayout(const ModelConfig& c) {
  const int64_t C = c.d_model, V = c.vocab_size, F = c.ffn_dim;
  const int64_t Q = c.q_dim(), KV = c.kv_dim();
  embed_ = Add("model.embed_tokens.weight", {V, C});
  for (int l = 0; l < c.n_layers; ++l) {
    const std::string p = absl::StrCat("model.layers.", l, ".");
    const size_t begin = total_;
    LayerParams lp;
    lp.input_norm = Add(p + "input_layernorm.weight", {C});
    lp.q_proj = Add(p + "self_attn.q_proj.weight", {Q, C});
    lp.k_proj = Add(p + "self_attn.k_proj.weight", {KV, C});
    lp.v_proj = Add(p + "self_attn.v_proj.weight", {KV, C});
    lp.o_proj = Add(p + "self_attn.o_proj.weight", {C, Q});
    lp.post_norm = Add(p + "post_attention_layernorm.weight", {C});
    lp.gate_proj = Add(p + "mlp.gate_proj.weight", {F, C});
    lp.up_proj = Add(p + "mlp.up_proj.weight", {F, C});
    lp.down_proj = Add(p + "mlp.down_proj.weight", {C, F});
    layers_.push_back(lp);
    layer_ranges_.emplace_back(begin, total_);
  }
  final_norm_ = Add("model.norm.weight", {C});
  lm_head_ = c.tied_embeddings ? embed_ : Add("lm_head.weight", {V, C});
}

size_t ParamLayout::Add(const std::string& name, std::vector<int64_t> shape) {
  ParamEntry e;
  e.name = name;
  e.numel = 1;
  for (int64_t d : shape) e.numel *= static_cast<size_t>(d);
  e.shape = std::move(shape);
  e.offset = total_;
  total_ += e.numel;
  index_[e.name] = entries_.size();
  entries_.push_back(std::move(e));
  return entries_.back().offset;
}

const ParamEntry* ParamLayout::Find(const std::string& name) const {
  auto it = index_.find(name);
  return it == index_.end() ? nullptr : &entries_[it->second];
}

std::pair<size_t, size_t> ParamLayout::LayerRange(int l) const {
  return layer_ranges_[static_cast<size_t>(l)];
}

}  // namespace loom
