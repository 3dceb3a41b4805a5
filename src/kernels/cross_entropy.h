// Fused softmax + cross-entropy: the loss and the gradient of the logits in one pass over each
// row, so the probabilities are never stored.
#ifndef LOOM_SRC_KERNELS_CROSS_ENTROPY_H_
#define LOOM_SRC_KERNELS_CROSS_ENTROPY_H_

#include <cstdint>

namespace loom {

// Target id that marks a token with no target (the last token of a document).
inline constexpr int32_t kIgnoreTarget = -1;

// logits: [T, V]; targets: [T] (kIgnoreTarget rows contribute no loss and a zero gradient).
// Writes dlogits = grad_scale * (softmax(logits) - onehot(target)) (dlogits may alias logits) and
// losses[t] = -log softmax(logits[t])[target[t]] (0 for ignored rows; losses may be null).
// Returns the sum of the losses of the target rows, accumulated in double.
// grad_scale is 1 / (number of targets in the global batch): the token-level mean.
double SoftmaxCrossEntropy(float* dlogits, float* losses, const float* logits,
                           const int32_t* targets, int T, int V, float grad_scale);

}  // namespace loom

#endif  // LOOM_SRC_KERNELS_CROSS_ENTROPY_H_
