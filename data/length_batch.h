// Global batches of sequence lengths drawn from a length distribution, as the simulator plans
// them: lengths are drawn until the batch holds a token budget, and a length over the context
// (the longest sequence training allows) is cut into pieces of at most the context, as
// `data.long_docs: split` does with real documents.
#ifndef LOOM_DATA_LENGTH_BATCH_H_
#define LOOM_DATA_LENGTH_BATCH_H_

#include <cstdint>
#include <vector>

#include "data/length_distribution.h"

namespace loom {

// Lengths (each in [1, max_length]) summing to at least `tokens`: the last one drawn may pass it.
// The same seed gives the same batch. max_length <= 0 means no cap.
std::vector<int64_t> DrawLengthBatch(const LengthDistribution& dist, int64_t tokens,
                                     int64_t max_length, uint64_t seed);

}  // namespace loom

#endif  // LOOM_DATA_LENGTH_BATCH_H_
