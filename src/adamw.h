// AdamW with decoupled weight decay and bias correction, over the flat parameter buffer. The
// update is written in the same order of operations as torch.optim.AdamW so that trajectories
// agree to rounding.
#ifndef LOOM_SRC_ADAMW_H_
#define LOOM_SRC_ADAMW_H_

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

  // One update of params from grads with learning rate lr.
  void Step(float* params, const float* grads, float lr);

  int64_t step() const { return step_; }
  // Optimizer state, for checkpoints.
  Buffer& m() { return m_; }
  Buffer& v() { return v_; }
  void set_step(int64_t step) { step_ = step; }

 private:
  struct Range {
    size_t begin, end;
    bool decay;
  };
  AdamWConfig config_;
  std::vector<Range> ranges_;
  Buffer m_, v_;
  int64_t step_ = 0;
};

}  // namespace loom

#endif  // LOOM_SRC_ADAMW_H_
