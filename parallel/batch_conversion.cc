#include "parallel/batch_conversion.h"

#include "src/kernels/cross_entropy.h"

namespace loom {

static_assert(kNoTarget == kIgnoreTarget, "data and model must agree on 'no target'");

TokenBatch ToTokenBatch(const PackedBatch& packed) {
  TokenBatch b;
  b.tokens = packed.tokens;
  b.targets = packed.targets;
  b.doc = packed.sequence_ids;
  b.pos = packed.positions;
  return b;
}

}  // namespace loom
