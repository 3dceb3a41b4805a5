#include "src/kernels/swiglu.h"

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>

#include "src/kernels/vec_math.h"

namespace loom {
namespace {

// 1 / (1 + e^-x): saturates to exactly 0 or 1 for large |x|, never NaN.
inline float Sigmoid(float x) { return 1.0f / (1.0f + VecExp(-x)); }

}  // namespace

void SwiGluForward(float* out, const float* gate, const float* up, int64_t n) {
#pragma omp parallel for simd schedule(static)
  for (int64_t i = 0; i < n; ++i) out[i] = gate[i] * Sigmoid(gate[i]) * up[i];
}

// silu'(g) = s + g * s * (1 - s) with s = sigmoid(g).
void SwiGluBackward(float* dgate, float* dup, const float* dout, const float* gate, const float* up,
                    int64_t n) {
#pragma omp parallel for simd schedule(static)
  for (int64_t i = 0; i < n; ++i) {
    const float g = gate[i];
    const float s = Sigmoid(g);
    const float silu = g * s;
    dgate[i] += dout[i] * up[i] * (s + silu * (1.0f - s));
    dup[i] += dout[i] * silu;
  }
}

}  // namespace loom
