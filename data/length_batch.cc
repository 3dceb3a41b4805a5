#include "data/length_batch.h"

#include <algorithm>

#include "data/rng.h"

namespace loom {

std::vector<int64_t> DrawLengthBatch(const LengthDistribution& dist, int64_t tokens,
                                     int64_t max_length, uint64_t seed) {
  Xoshiro256 rng(seed);
  std::vector<int64_t> lengths;
  int64_t total = 0;
  while (total < tokens) {
    int64_t length = dist.Sample(rng);
    while (length > 0 && total < tokens) {
      const int64_t piece = max_length > 0 ? std::min(length, max_length) : length;
      lengths.push_back(piece);
      total += piece;
      length -= piece;
    }
  }
  return lengths;
}

}  // namespace loom
