// SwiGLU gate of the LLaMA MLP: h = silu(gate) * up, elementwise.
#ifndef LOOM_SRC_KERNELS_SWIGLU_H_
#define LOOM_SRC_KERNELS_SWIGLU_H_

#include <cstdint>

namespace loom {

void SwiGluForward(float* out, const float* gate, const float* up, int64_t n);
// Accumulates: dgate += dout * up * silu'(gate); dup += dout * silu(gate).
void SwiGluBackward(float* dgate, float* dup, const float* dout, const float* gate,
                    const float* up, int64_t n);

}  // namespace loom

#endif  // LOOM_SRC_KERNELS_SWIGLU_H_
