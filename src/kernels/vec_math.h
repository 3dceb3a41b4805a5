// Vectorisable math for the CPU kernels. glibc's expf is a scalar call that GCC cannot vectorise
// without -ffast-math; this exp is branch-free and vectorises under plain -O3.
#ifndef LOOM_SRC_KERNELS_VEC_MATH_H_
#define LOOM_SRC_KERNELS_VEC_MATH_H_

#include <algorithm>
#include <bit>
#include <cstdint>

namespace loom {

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

}  // namespace loom

#endif  // LOOM_SRC_KERNELS_VEC_MATH_H_
