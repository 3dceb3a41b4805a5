#include "src/adamw.h"

#include <algorithm>
#include <cassert>
#include <cmath>

namespace loom {

AdamW::AdamW(const ParamLayout& layout, const AdamWConfig& config, Allocator* allocator)
    : AdamW(layout, config, 0, layout.total_numel(), allocator) {}

AdamW::AdamW(const ParamLayout& layout, const AdamWConfig& config, size_t begin, size_t end,
             Allocator* allocator)
    : config_(config), begin_(begin), end_(end), m_(end - begin, allocator),
      v_(end - begin, allocator) {
  assert(begin <= end && end <= layout.total_numel());
  for (const ParamEntry& e : layout.entries()) {
    const size_t lo = std::max(begin, e.offset), hi = std::min(end, e.offset + e.numel);
    if (lo < hi) ranges_.push_back(Range{lo - begin, hi - begin, e.shape.size() >= 2});
  }
}

void AdamW::Step(float* params, const float* grads, float lr) {
  ++step_;
  const float b1 = config_.beta1, b2 = config_.beta2, eps = config_.eps;
  const double bc1 = 1.0 - std::pow(static_cast<double>(b1), static_cast<double>(step_));
  const double bc2 = 1.0 - std::pow(static_cast<double>(b2), static_cast<double>(step_));
  const float step_size = static_cast<float>(lr / bc1);
  const float bc2_sqrt = static_cast<float>(std::sqrt(bc2));
  float* m = m_.data();
  float* v = v_.data();
  for (const Range& r : ranges_) {
    const float decay = r.decay ? 1.0f - lr * config_.weight_decay : 1.0f;
    const int64_t begin = static_cast<int64_t>(r.begin), end = static_cast<int64_t>(r.end);
#pragma omp parallel for schedule(static)
    for (int64_t i = begin; i < end; ++i) {
      const float g = grads[i];
      params[i] *= decay;
      m[i] = b1 * m[i] + (1.0f - b1) * g;
      v[i] = b2 * v[i] + (1.0f - b2) * g * g;
      const float denom = std::sqrt(v[i]) / bc2_sqrt + eps;
      params[i] -= step_size * m[i] / denom;
    }
  }
}

}  // namespace loom
