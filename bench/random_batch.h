// Global batches of random tokens for the benchmarks that run plans for real, packed as the data
// layer packs a batch.
#ifndef LOOM_BENCH_RANDOM_BATCH_H_
#define LOOM_BENCH_RANDOM_BATCH_H_

#include <cstdint>
#include <vector>

#include "data/packed_batch.h"

namespace loom::bench {

// Random tokens for every sequence. With `pad_to` > 0 every sequence is extended to pad_to tokens
// by padding tokens without targets (same sequence id, positions continuing), which cost the
// compute of a full-length sequence and add nothing to the loss or the gradient.
PackedBatch RandomPackedBatch(const std::vector<int64_t>& lengths, int vocab, uint64_t seed,
                              int64_t pad_to = 0);

}  // namespace loom::bench

#endif  // LOOM_BENCH_RANDOM_BATCH_H_
