// Global-norm gradient clipping over the flat gradient buffer.
#ifndef LOOM_SRC_GRAD_CLIP_H_
#define LOOM_SRC_GRAD_CLIP_H_

#include <cstddef>

namespace loom {

// L2 norm of the whole buffer, accumulated in double.
double GradNorm(const float* grads, size_t n);
// Scales grads by max_norm / (norm + 1e-6) when norm exceeds max_norm (as
// torch.nn.utils.clip_grad_norm_ does); max_norm <= 0 disables clipping. Returns the norm before
// clipping.
double ClipGradNorm(float* grads, size_t n, double max_norm);

}  // namespace loom

#endif  // LOOM_SRC_GRAD_CLIP_H_
