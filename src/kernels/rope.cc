#include "src/kernels/rope.h"

#include <cmath>
#include <cstdint>
#include <vector>

namespace loom {

// The angles are formed in double: pos * inv_freq reaches ~1e5 radians for long contexts, where a
// float product would lose the phase before cos/sin ever see it.
RopeTable MakeRopeTable(const int32_t* pos, int T, int head_dim, float theta) {
  RopeTable table;
  table.T = T;
  table.half = head_dim / 2;
  const size_t n = static_cast<size_t>(T) * table.half;
  table.cos.resize(n);
  table.sin.resize(n);
  std::vector<double> inv_freq(static_cast<size_t>(table.half));
  for (int i = 0; i < table.half; ++i) {
    inv_freq[i] = std::pow(static_cast<double>(theta), -2.0 * i / head_dim);
  }
#pragma omp parallel for schedule(static)
  for (int t = 0; t < T; ++t) {
    for (int i = 0; i < table.half; ++i) {
      const double angle = static_cast<double>(pos[t]) * inv_freq[i];
      const size_t k = static_cast<size_t>(t) * table.half + i;
      table.cos[k] = static_cast<float>(std::cos(angle));
      table.sin[k] = static_cast<float>(std::sin(angle));
    }
  }
  return table;
}

// Element i and element i + D/2 form one rotated pair. Every iteration reads and writes only its
// own pair, so the loop stays vectorisable even when out aliases inp (loads precede stores).
void RopeForward(float* out, const float* inp, const RopeTable& table, int T, int H, int D) {
  const int half = D / 2;
#pragma omp parallel for collapse(2) schedule(static)
  for (int t = 0; t < T; ++t) {
    for (int h = 0; h < H; ++h) {
      const float* c = table.cos.data() + static_cast<int64_t>(t) * half;
      const float* s = table.sin.data() + static_cast<int64_t>(t) * half;
      const int64_t base = (static_cast<int64_t>(t) * H + h) * D;
      const float* x = inp + base;
      float* y = out + base;
#pragma omp simd
      for (int i = 0; i < half; ++i) {
        const float x1 = x[i];
        const float x2 = x[i + half];
        y[i] = x1 * c[i] - x2 * s[i];
        y[i + half] = x2 * c[i] + x1 * s[i];
      }
    }
  }
}

// The transpose of the rotation by +angle is the rotation by -angle.
void RopeBackward(float* dinp, const float* dout, const RopeTable& table, int T, int H, int D) {
  const int half = D / 2;
#pragma omp parallel for collapse(2) schedule(static)
  for (int t = 0; t < T; ++t) {
    for (int h = 0; h < H; ++h) {
      const float* c = table.cos.data() + static_cast<int64_t>(t) * half;
      const float* s = table.sin.data() + static_cast<int64_t>(t) * half;
      const int64_t base = (static_cast<int64_t>(t) * H + h) * D;
      const float* dy = dout + base;
      float* dx = dinp + base;
#pragma omp simd
      for (int i = 0; i < half; ++i) {
        const float d1 = dy[i];
        const float d2 = dy[i + half];
        dx[i] += d1 * c[i] + d2 * s[i];
        dx[i + half] += d2 * c[i] - d1 * s[i];
      }
    }
  }
}

}  // namespace loom
