// AdamW with decoupled weight decay and bias correction, over the flat parameter buffer or one
// contiguous range of it (a ZeRO shard). The update is written in the same order of operations as
// torch.optim.AdamW so that trajectories agree to rounding, and each element's update depends only
// on that element: a range optimizer and the full one agree bit for bit on the elements they share.
#ifndef LOOM_SRC_ADAMW_H_
#define LOOM_SRC_ADAMW_H_

#include <cstddef>
#include <cstdint>
#include <vector>

#include "src/param_layout.h"
#include "src/tensor.h"

namespace loom {

struct AdamWConfig {
  float beta1 = 0.9f;
  float beta2 = 0.95f;
  float eps = 1e-8f;
  float weight_decay = 0.1f;
};

class AdamW {
 public:
  // Weight decay applies to matrices only (embeddings, projections, head); RMSNorm gains are
  // not decayed, as is usual for LLaMA training.
  AdamW(const ParamLayout& layout, const AdamWConfig& config,
        Allocator* allocator = &Allocator::Global());
  // State for the flat elements [begin, end) only (begin <= end <= layout.total_numel()); each
  // element is decayed or not by the layout entry it falls in.
  AdamW(const ParamLayout& layout, const AdamWConfig& config, size_t begin, size_t end,
        Allocator* allocator = &Allocator::Global());

  // One update of params from grads with learning rate lr. Both point at element begin() of their
  // flat buffers and hold end() - begin() elements (the whole buffers for the full optimizer).
  void Step(float* params, const float* grads, float lr);

  int64_t step() const { return step_; }
  size_t begin() const { return begin_; }
  size_t end() const { return end_; }
  // Optimizer state for [begin, end), for checkpoints.
  Buffer& m() { return m_; }
  Buffer& v() { return v_; }
  const Buffer& m() const { return m_; }
  const Buffer& v() const { return v_; }
  void set_step(int64_t step) { step_ = step; }

 private:
  // Offsets relative to begin_.
  struct Range {
    size_t begin, end;
    bool decay;
  };
  AdamWConfig config_;
  size_t begin_, end_;
  std::vector<Range> ranges_;
  Buffer m_, v_;
  int64_t step_ = 0;
};

}  // namespace loom

#endif  // LOOM_SRC_ADAMW_H_
