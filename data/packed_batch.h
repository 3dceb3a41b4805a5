// The tokens of a global batch, packed back to back into flat int32 arrays: the form the model
// and the planners consume. Sequences are laid out in batch order; sequence i occupies
// [sequence_starts[i], sequence_starts[i + 1]).
//
// Targets: token t's target is the token after it in the same sequence; the last token of every
// sequence has none (kNoTarget). Packed sequences never predict across each other, and a piece of a
// split document is a sequence of its own (see batch_sampler.h). Positions count from 0 within each
// sequence, which is the position within the document for whole documents.
#ifndef LOOM_DATA_PACKED_BATCH_H_
#define LOOM_DATA_PACKED_BATCH_H_

#include <cstdint>
#include <vector>

#include "data/batch_sampler.h"
#include "data/token_dataset.h"

namespace loom {

inline constexpr int32_t kNoTarget = -1;

struct PackedBatch {
  std::vector<int32_t> tokens;
  std::vector<int32_t> targets;          // next token in the sequence, or kNoTarget
  std::vector<int32_t> positions;        // position within the sequence, from 0
  std::vector<int32_t> sequence_ids;     // index of the token's sequence within the batch
  std::vector<int64_t> sequence_starts;  // one per sequence plus the total
  int64_t num_targets = 0;               // tokens with a target: what the loss averages over
};

// Fills `out` (reusing its memory) with the batch's tokens read from `dataset`.
void PackBatch(const TokenDataset& dataset, const GlobalBatch& batch, PackedBatch* out);

}  // namespace loom

#endif  // LOOM_DATA_PACKED_BATCH_H_
