#include "data/packed_batch.h"

namespace loom {
namespace {

// One sequence, straight from the mapped shard: each output array is written once, and the
// tokens are read from the (2- or 4-byte) source rather than back from the int32 copy.
template <typename T>
void PackSequence(const T* in, int64_t length, int32_t id, int32_t* tokens, int32_t* targets,
                  int32_t* positions, int32_t* ids) {
  // Token ids were checked against a vocabulary of at most 2^31 ids when the shard was opened.
  for (int64_t t = 0; t < length; ++t) {
    tokens[t] = static_cast<int32_t>(in[t]);
    positions[t] = static_cast<int32_t>(t);
    ids[t] = id;
  }
  for (int64_t t = 0; t + 1 < length; ++t) targets[t] = static_cast<int32_t>(in[t + 1]);
  targets[length - 1] = kNoTarget;
}

}  // namespace

void PackBatch(const TokenDataset& dataset, const GlobalBatch& batch, PackedBatch* out) {
  size_t total = 0;
  for (const SequenceRef& s : batch.sequences) total += static_cast<size_t>(s.length);
  out->tokens.resize(total);
  out->targets.resize(total);
  out->positions.resize(total);
  out->sequence_ids.resize(total);
  out->sequence_starts.resize(batch.sequences.size() + 1);
  out->num_targets = 0;
  int64_t start = 0;
  for (size_t i = 0; i < batch.sequences.size(); ++i) {
    const SequenceRef& s = batch.sequences[i];
    const TokenDataset::DocumentLocation loc = dataset.Locate(s.document);
    const Shard& shard = dataset.shard(loc.shard);
    const int64_t first = loc.begin + s.offset;
    const int32_t id = static_cast<int32_t>(i);
    out->sequence_starts[i] = start;
    int32_t* tokens = out->tokens.data() + start;
    int32_t* targets = out->targets.data() + start;
    int32_t* positions = out->positions.data() + start;
    int32_t* ids = out->sequence_ids.data() + start;
    if (shard.width() == TokenWidth::kUint16) {
      PackSequence(static_cast<const uint16_t*>(shard.token_data()) + first, s.length, id, tokens,
                   targets, positions, ids);
    } else {
      PackSequence(static_cast<const uint32_t*>(shard.token_data()) + first, s.length, id, tokens,
                   targets, positions, ids);
    }
    out->num_targets += s.length - 1;
    start += s.length;
  }
  out->sequence_starts[batch.sequences.size()] = start;
}

}  // namespace loom
