#include "src/kernels/cross_entropy.h"

#include <omp.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>
#include <vector>

#include "src/kernels/vec_math.h"

namespace loom {
namespace {

// Max of a row and the sum of exp(x - max) over it.
struct RowStats {
  float max;
  double sum_exp;
};

// 2 KiB of logits: a block read for its max is still in L1 when its exponentials are summed.
constexpr int kStatsBlock = 512;

// One sweep over the row, a block at a time: the block's max, then its exponentials against the
// new max, the earlier sum rescaled when the max grows. No exponent is ever positive, so logits of
// any size are safe.
RowStats SoftmaxStats(const float* x, int V) {
  RowStats stats{-INFINITY, 0.0};
  for (int j0 = 0; j0 < V; j0 += kStatsBlock) {
    const int j1 = std::min(V, j0 + kStatsBlock);
    float block_max = stats.max;
#pragma omp simd reduction(max : block_max)
    for (int j = j0; j < j1; ++j) block_max = std::max(block_max, x[j]);
    float block_sum = 0.0f;
#pragma omp simd reduction(+ : block_sum)
    for (int j = j0; j < j1; ++j) block_sum += VecExp(x[j] - block_max);
    // exp(-inf) = 0 starts the sum; the difference is exact in double.
    stats.sum_exp =
        stats.sum_exp * std::exp(static_cast<double>(stats.max) - block_max) + block_sum;
    stats.max = block_max;
  }
  return stats;
}

// Returns the row's loss; reads the target logit before dlogits (possibly the same memory as
// logits) is overwritten.
double CrossEntropyRow(float* dlogits, const float* logits, int32_t target, int V,
                       float grad_scale) {
  const RowStats stats = SoftmaxStats(logits, V);
  // The difference is taken in double, where it is exact, so logits near 1e4 lose no precision.
  const double loss = std::log(stats.sum_exp) + (static_cast<double>(stats.max) - logits[target]);
  const float scale = static_cast<float>(grad_scale / stats.sum_exp);
#pragma omp simd
  for (int j = 0; j < V; ++j) dlogits[j] = VecExp(logits[j] - stats.max) * scale;
  dlogits[target] -= grad_scale;
  return loss;
}

}  // namespace

// Rows are independent, so they split over threads; the per-thread loss sums are added in thread
// order so the total is the same on every run with the same thread count.
double SoftmaxCrossEntropy(float* dlogits, float* losses, const float* logits,
                           const int32_t* targets, int T, int V, float grad_scale) {
  std::vector<double> partial(static_cast<size_t>(omp_get_max_threads()), 0.0);
#pragma omp parallel
  {
    double sum = 0.0;
#pragma omp for schedule(static)
    for (int t = 0; t < T; ++t) {
      const int64_t offset = static_cast<int64_t>(t) * V;
      double loss = 0.0;
      if (targets[t] == kIgnoreTarget) {
        std::fill(dlogits + offset, dlogits + offset + V, 0.0f);
      } else {
        loss = CrossEntropyRow(dlogits + offset, logits + offset, targets[t], V, grad_scale);
        sum += loss;
      }
      if (losses != nullptr) losses[t] = static_cast<float>(loss);
    }
    partial[static_cast<size_t>(omp_get_thread_num())] = sum;
  }
  double total = 0.0;
  for (double s : partial) total += s;
  return total;
}

}  // namespace loom
