// The data layer's packed batch as the model's TokenBatch: sequences become documents for
// attention masking, positions stay positions within the sequence.
#ifndef LOOM_PARALLEL_BATCH_CONVERSION_H_
#define LOOM_PARALLEL_BATCH_CONVERSION_H_

#include "data/packed_batch.h"
#include "src/token_batch.h"

namespace loom {

TokenBatch ToTokenBatch(const PackedBatch& packed);

}  // namespace loom

#endif  // LOOM_PARALLEL_BATCH_CONVERSION_H_
