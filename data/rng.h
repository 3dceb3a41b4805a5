// Portable pseudo-random numbers for everything in data/ that must be reproducible from a seed:
// epoch shuffles, length sampling, synthetic tokens. The standard <random> engines are portable,
// but std::uniform_*_distribution is not (each standard library maps engine output to a range its
// own way), so the mapping to doubles and bounded integers is defined here.
#ifndef LOOM_DATA_RNG_H_
#define LOOM_DATA_RNG_H_

#include <bit>
#include <cstdint>

namespace loom {

// SplitMix64: a 64-bit counter passed through a strong mixing function. Used to expand one seed
// into a full generator state and to derive independent streams from (seed, stream) pairs.
class SplitMix64 {
 public:
  explicit SplitMix64(uint64_t seed) : state_(seed) {}
  uint64_t Next() {
    state_ += 0x9e3779b97f4a7c15ULL;
    return Mix(state_);
  }
  // The output function alone: a bijective hash of 64-bit values.
  static uint64_t Mix(uint64_t z) {
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
  }

 private:
  uint64_t state_;
};

// A seed for stream `stream` of `seed` (for example one per epoch), so that streams do not overlap
// in practice and a stream can be started without replaying the ones before it.
inline uint64_t StreamSeed(uint64_t seed, uint64_t stream) {
  return SplitMix64::Mix(seed ^ SplitMix64::Mix(stream + 0x632be59bd9b4e019ULL));
}

// xoshiro256**: fast, small state, and good statistical quality for simulation work.
class Xoshiro256 {
 public:
  explicit Xoshiro256(uint64_t seed) {
    SplitMix64 init(seed);
    for (uint64_t& word : s_) word = init.Next();
  }

  uint64_t Next() {
    const uint64_t result = std::rotl(s_[1] * 5, 7) * 9;
    const uint64_t t = s_[1] << 17;
    s_[2] ^= s_[0];
    s_[3] ^= s_[1];
    s_[1] ^= s_[2];
    s_[0] ^= s_[3];
    s_[2] ^= t;
    s_[3] = std::rotl(s_[3], 45);
    return result;
  }

  // Uniform in [0, 1) with 53 random bits.
  double NextDouble() { return static_cast<double>(Next() >> 11) * 0x1.0p-53; }

  // Uniform in [0, bound) for bound >= 1, without modulo bias: draws falling in the incomplete
  // last block of `bound` values are redrawn.
  uint64_t NextBelow(uint64_t bound) {
    const uint64_t limit = UINT64_MAX - UINT64_MAX % bound;
    uint64_t x = Next();
    while (x >= limit) x = Next();
    return x % bound;
  }

 private:
  uint64_t s_[4];
};

}  // namespace loom

#endif  // LOOM_DATA_RNG_H_
