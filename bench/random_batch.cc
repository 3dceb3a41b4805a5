#include "bench/random_batch.h"

#include <algorithm>

#include "src/random.h"

namespace loom::bench {

PackedBatch RandomPackedBatch(const std::vector<int64_t>& lengths, int vocab, uint64_t seed,
                              int64_t pad_to) {
  Random rng(seed);
  PackedBatch b;
  b.sequence_starts.push_back(0);
  for (size_t s = 0; s < lengths.size(); ++s) {
    const int64_t length = lengths[s];
    std::vector<int32_t> tokens(static_cast<size_t>(length));
    for (int32_t& t : tokens) {
      t = static_cast<int32_t>(rng.NextU64() % static_cast<uint64_t>(vocab));
    }
    const int64_t total = std::max(length, pad_to);
    for (int64_t i = 0; i < total; ++i) {
      const bool real = i < length;
      b.tokens.push_back(real ? tokens[static_cast<size_t>(i)] : 0);
      b.targets.push_back(i + 1 < length ? tokens[static_cast<size_t>(i + 1)] : kNoTarget);
      b.positions.push_back(static_cast<int32_t>(i));
      b.sequence_ids.push_back(static_cast<int32_t>(s));
    }
    b.num_targets += length - 1;
    b.sequence_starts.push_back(static_cast<int64_t>(b.tokens.size()));
  }
  return b;
}

}  // namespace loom::bench
