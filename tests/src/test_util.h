// Small helpers shared by the kernel tests: deterministic random data, float <-> double copies,
// relative errors and central finite differences of double-precision references.
#ifndef LOOM_TESTS_SRC_TEST_UTIL_H_
#define LOOM_TESTS_SRC_TEST_UTIL_H_

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <random>
#include <vector>

namespace loom::test {

// fp32 kernels against float64 references (norm-wise relative error): the design's equivalence
// bound for gradients. fp32 rounding on the small shapes tested gives ~1e-7, so failures are real.
inline constexpr double kFp32Tolerance = 1e-5;
// A double analytic gradient against central differences at kFiniteDifferenceStep: truncation
// error ~step^2 and cancellation ~1e-16/step, both far below this.
inline constexpr double kFiniteDifferenceTolerance = 1e-6;
inline constexpr double kFiniteDifferenceStep = 1e-6;

// n values uniform in [-scale, scale), the same for the same seed on every run.
inline std::vector<float> RandomVector(size_t n, uint64_t seed, float scale = 1.0f) {
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<float> dist(-scale, scale);
  std::vector<float> v(n);
  for (float& x : v) x = dist(rng);
  return v;
}

// n token ids uniform in [0, vocab).
inline std::vector<int32_t> RandomTokens(size_t n, uint64_t seed, int32_t vocab) {
  std::mt19937_64 rng(seed);
  std::uniform_int_distribution<int32_t> dist(0, vocab - 1);
  std::vector<int32_t> v(n);
  for (int32_t& x : v) x = dist(rng);
  return v;
}

inline std::vector<double> ToDouble(const std::vector<float>& v) {
  return std::vector<double>(v.begin(), v.end());
}

inline std::vector<float> ToFloat(const std::vector<double>& v) {
  std::vector<float> out(v.size());
  for (size_t i = 0; i < v.size(); ++i) out[i] = static_cast<float>(v[i]);
  return out;
}

inline std::vector<double> Subtract(const std::vector<double>& a, const std::vector<double>& b) {
  std::vector<double> out(a.size());
  for (size_t i = 0; i < a.size(); ++i) out[i] = a[i] - b[i];
  return out;
}

inline double Dot(const std::vector<double>& a, const std::vector<double>& b) {
  double s = 0.0;
  for (size_t i = 0; i < a.size(); ++i) s += a[i] * b[i];
  return s;
}

inline double Norm(const std::vector<double>& v) { return std::sqrt(Dot(v, v)); }

// ||got - want|| / ||want||; falls back to ||got - want|| when want is all zeros, so an exact
// zero reference still demands an (almost) zero result.
inline double RelativeError(const std::vector<double>& got, const std::vector<double>& want) {
  if (got.size() != want.size()) return INFINITY;
  double diff = 0.0;
  for (size_t i = 0; i < got.size(); ++i) diff += (got[i] - want[i]) * (got[i] - want[i]);
  const double ref = Norm(want);
  return ref > 0.0 ? std::sqrt(diff) / ref : std::sqrt(diff);
}

inline double RelativeError(const std::vector<float>& got, const std::vector<double>& want) {
  return RelativeError(ToDouble(got), want);
}

// Central differences of a scalar function f at x: grad[i] = (f(x + h e_i) - f(x - h e_i)) / 2h.
inline std::vector<double> FiniteDifferenceGradient(
    const std::function<double(const std::vector<double>&)>& f, std::vector<double> x,
    double step = kFiniteDifferenceStep) {
  std::vector<double> grad(x.size());
  for (size_t i = 0; i < x.size(); ++i) {
    const double saved = x[i];
    x[i] = saved + step;
    const double plus = f(x);
    x[i] = saved - step;
    const double minus = f(x);
    x[i] = saved;
    grad[i] = (plus - minus) / (2.0 * step);
  }
  return grad;
}

}  // namespace loom::test

#endif  // LOOM_TESTS_SRC_TEST_UTIL_H_
