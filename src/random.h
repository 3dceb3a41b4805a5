// A small, portable random source (splitmix64): the same seed gives the same numbers with any
// compiler and standard library, which std:: distributions do not promise.
#ifndef LOOM_SRC_RANDOM_H_
#define LOOM_SRC_RANDOM_H_

#include <cmath>
#include <cstdint>

namespace loom {

class Random {
 public:
  explicit Random(uint64_t seed) : state_(seed) {}

  uint64_t NextU64() {
    uint64_t z = (state_ += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
  }
  // Uniform in [0, 1) with 53 random bits.
  double Uniform() { return static_cast<double>(NextU64() >> 11) * 0x1.0p-53; }
  // Standard normal (Box-Muller; one value per call keeps the state simple to save).
  double Normal() {
    const double u1 = 1.0 - Uniform();  // (0, 1]
    const double u2 = Uniform();
    return std::sqrt(-2.0 * std::log(u1)) * std::cos(6.283185307179586 * u2);
  }
  uint64_t state() const { return state_; }

 private:
  uint64_t state_;
};

}  // namespace loom

#endif  // LOOM_SRC_RANDOM_H_
