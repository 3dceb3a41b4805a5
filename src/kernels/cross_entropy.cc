#include "src/kernels/cross_entropy.h"

#include <omp.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>
#include <vector>

namespace loom {
namespace {

// e^x written so that loops calling it vectorise (glibc's expf is an opaque scalar call, ~5 ns).
// x = k ln2 + r with |r| <= ln2/2; e^r from its Taylor series to r^7, whose truncation error
// (< 1e-8 relative) is below float rounding, so the result is within ~2 ulp; 2^k goes straight
// into the exponent bits. x is clamped to [-88, 89] first: below, k = -127 gives the bits of 0
// (e^x flushes to zero instead of a subnormal); above, k = 128 gives the bits of inf (so x > 88.4
// returns inf, its true value being within a factor 1.5 of the largest float). NaN stays NaN.
// Only integer operations choose between values: a float comparison may trap, and under the
// default -ftrapping-math that keeps GCC from vectorising. Needs IEEE arithmetic (no -ffast-math).
inline float VecExp(float x) {
  constexpr float kLog2e = 1.44269504f;
  constexpr float kLn2Hi = 0.693359375f;     // 9 significant bits, so k * kLn2Hi is exact
  constexpr float kLn2Lo = -2.12194440e-4f;  // ln 2 - kLn2Hi
  constexpr float kRound = 12582912.0f;      // 1.5 * 2^23: adding and subtracting it rounds
  constexpr int32_t kSignBit = INT32_MIN;
  constexpr int32_t kInfBits = 0x7f800000;
  constexpr int32_t kQuietNanBits = 0x7fc00000;
  constexpr int32_t kNegativeLimit = std::bit_cast<int32_t>(88.0f);
  constexpr int32_t kPositiveLimit = std::bit_cast<int32_t>(89.0f);
  const int32_t bits = std::bit_cast<int32_t>(x);
  const int32_t abs_bits = bits & ~kSignBit;
  const int32_t negative = bits >> 31;  // all ones or all zeros
  const int32_t limit = kPositiveLimit + (negative & (kNegativeLimit - kPositiveLimit));
  const float clamped = std::bit_cast<float>(std::min(abs_bits, limit) | (bits & kSignBit));
  const float k = (clamped * kLog2e + kRound) - kRound;
  const float r = (clamped - k * kLn2Hi) - k * kLn2Lo;
  float p = 1.0f / 5040.0f;
  p = p * r + 1.0f / 720.0f;
  p = p * r + 1.0f / 120.0f;
  p = p * r + 1.0f / 24.0f;
  p = p * r + 1.0f / 6.0f;
  p = p * r + 0.5f;
  p = p * r + 1.0f;
  p = p * r + 1.0f;
  const float e = p * std::bit_cast<float>((static_cast<int32_t>(k) + 127) << 23);
  const int32_t nan_mask = (kInfBits - abs_bits) >> 31;  // all ones only for NaN
  return std::bit_cast<float>(std::bit_cast<int32_t>(e) | (nan_mask & kQuietNanBits));
}

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
