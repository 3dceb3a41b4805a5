#include "src/grad_clip.h"

#include <algorithm>
#include <cmath>
#include <cstdint>

namespace loom {

double GradNorm(const float* grads, size_t n) {
  // A fixed number of partial sums added in a fixed order: the norm is bitwise the same whatever
  // the thread count, which resuming a run bit-exactly relies on.
  constexpr int64_t kParts = 64;
  double partial[kParts] = {};
  const int64_t count = static_cast<int64_t>(n);
  const int64_t per_part = (count + kParts - 1) / kParts;
#pragma omp parallel for schedule(static)
  for (int64_t part = 0; part < kParts; ++part) {
    const int64_t begin = part * per_part;
    const int64_t end = std::min(count, begin + per_part);
    double sum = 0.0;
    for (int64_t i = begin; i < end; ++i) sum += static_cast<double>(grads[i]) * grads[i];
    partial[part] = sum;
  }
  double sum = 0.0;
  for (double s : partial) sum += s;
  return std::sqrt(sum);
}

double ClipGradNorm(float* grads, size_t n, double max_norm) {
  const double norm = GradNorm(grads, n);
  if (max_norm > 0.0 && norm > max_norm) {
    const float scale = static_cast<float>(max_norm / (norm + 1e-6));
    const int64_t count = static_cast<int64_t>(n);
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < count; ++i) grads[i] *= scale;
  }
  return norm;
}

}  // namespace loom
