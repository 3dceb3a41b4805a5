// Global batches by token budget, shuffled deterministically and resumable from a checkpoint.
//
// Sequences. Every document becomes one or more training sequences. A document longer than the
// longest allowed sequence, min(max_sequence_length, tokens_per_batch), is either cut into pieces
// of that length (the last piece holds the rest) or rejected with an error naming the document, as
// `oversize` says; nothing is dropped silently. Each piece is a separate training sequence: its
// positions start again at 0 and its last token has no target (see packed_batch.h), exactly as if
// the piece were a document of its own.
//
// Epochs. Each epoch visits every sequence exactly once in an order shuffled from (seed, epoch),
// independently of earlier epochs, so any epoch's order can be rebuilt without replaying the ones
// before it.
//
// Batches. Walking the epoch's order from the cursor, a batch takes sequences while their total
// length stays within tokens_per_batch and closes at the first sequence that does not fit, which
// opens the next batch. A batch never spans two epochs, so the last batch of an epoch may be short.
//
// Resuming. position() is a plain struct (epoch, cursor, seed, fingerprint) that a checkpoint
// stores. A sampler created with the same documents and config and Restore()d to a position yields
// exactly the batches the original sampler yielded after that position. The fingerprint catches a
// restore against different data or settings.
#ifndef LOOM_DATA_BATCH_SAMPLER_H_
#define LOOM_DATA_BATCH_SAMPLER_H_

#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace loom {

enum class OversizePolicy {
  kSplit,   // cut into pieces of the longest allowed length
  kReject,  // an error naming the first such document
};

struct BatchSamplerConfig {
  int64_t tokens_per_batch = 0;     // token budget of one global batch (sum of sequence lengths)
  int64_t max_sequence_length = 0;  // longest training sequence
  OversizePolicy oversize = OversizePolicy::kSplit;
  uint64_t seed = 0;
};

// Where the sampler stands: the next batch starts at `cursor` in epoch `epoch`'s order.
struct SamplerPosition {
  uint64_t epoch = 0;
  uint64_t cursor = 0;
  uint64_t seed = 0;
  // Hash of the sequence lengths and the config: a position only fits the sampler it came from.
  uint64_t fingerprint = 0;

  bool operator==(const SamplerPosition&) const = default;
};

// A piece of a document: tokens [offset, offset + length) of document `document`.
struct SequenceRef {
  int64_t document = 0;
  int64_t offset = 0;
  int64_t length = 0;

  bool operator==(const SequenceRef&) const = default;
};

struct GlobalBatch {
  uint64_t epoch = 0;
  std::vector<SequenceRef> sequences;
  int64_t num_tokens = 0;  // sum of the sequence lengths, <= tokens_per_batch
};

class BatchSampler {
 public:
  // Names a document in error messages; by default "document <number>".
  using DocumentNamer = std::function<std::string(int64_t document)>;

  // `document_lengths[d]` is the length of document d (>= 1). Fails on a bad config, an empty
  // document list, a non-positive length, or (with kReject) a document that is too long.
  static absl::StatusOr<BatchSampler> Create(std::span<const int64_t> document_lengths,
                                             const BatchSamplerConfig& config,
                                             const DocumentNamer& namer = nullptr);

  // The next global batch (there is always one: epochs follow each other without end).
  GlobalBatch Next();
  SamplerPosition position() const;
  // Moves to a position taken from position() of a sampler with the same documents and config.
  absl::Status Restore(const SamplerPosition& position);

  int64_t num_sequences() const { return static_cast<int64_t>(sequences_.size()); }
  // All sequences in document order (pieces of a document in order).
  const std::vector<SequenceRef>& sequences() const { return sequences_; }
  const BatchSamplerConfig& config() const { return config_; }

 private:
  BatchSampler() = default;
  void Shuffle();

  BatchSamplerConfig config_;
  std::vector<SequenceRef> sequences_;
  std::vector<uint32_t> order_;  // this epoch's permutation of sequences_
  uint64_t epoch_ = 0;
  uint64_t cursor_ = 0;
  uint64_t fingerprint_ = 0;
};

}  // namespace loom

#endif  // LOOM_DATA_BATCH_SAMPLER_H_
