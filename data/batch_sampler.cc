#include "data/batch_sampler.h"

#include <algorithm>
#include <numeric>
#include <utility>

#include "absl/strings/str_format.h"
#include "data/rng.h"

namespace loom {
namespace {

uint64_t HashCombine(uint64_t hash, uint64_t value) {
  return SplitMix64::Mix(hash ^ (value + 0x9e3779b97f4a7c15ULL + (hash << 6) + (hash >> 2)));
}

}  // namespace

absl::StatusOr<BatchSampler> BatchSampler::Create(std::span<const int64_t> document_lengths,
                                                  const BatchSamplerConfig& config,
                                                  const DocumentNamer& namer) {
  if (config.tokens_per_batch < 1 || config.max_sequence_length < 1) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "batch sampler: tokens_per_batch (%d) and max_sequence_length (%d) must be >= 1",
        config.tokens_per_batch, config.max_sequence_length));
  }
  if (document_lengths.empty()) return absl::InvalidArgumentError("batch sampler: no documents");
  auto name = [&](int64_t d) { return namer ? namer(d) : absl::StrFormat("document %d", d); };
  // A sequence must fit both the model's context and a batch.
  const int64_t longest = std::min(config.max_sequence_length, config.tokens_per_batch);
  BatchSampler sampler;
  sampler.config_ = config;
  for (int64_t d = 0; d < std::ssize(document_lengths); ++d) {
    const int64_t length = document_lengths[static_cast<size_t>(d)];
    if (length < 1) {
      return absl::InvalidArgumentError(
          absl::StrFormat("batch sampler: %s has length %d", name(d), length));
    }
    if (length > longest && config.oversize == OversizePolicy::kReject) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "batch sampler: %s has %d tokens, more than %s %d (oversize policy: reject)", name(d),
          length,
          config.max_sequence_length <= config.tokens_per_batch ? "max_sequence_length"
                                                                : "tokens_per_batch",
          longest));
    }
    for (int64_t offset = 0; offset < length; offset += longest) {
      sampler.sequences_.push_back({d, offset, std::min(longest, length - offset)});
    }
  }
  if (sampler.sequences_.size() > UINT32_MAX) {
    return absl::InvalidArgumentError(absl::StrFormat("batch sampler: %d sequences, more than %d",
                                                      sampler.sequences_.size(), UINT32_MAX));
  }
  uint64_t hash = HashCombine(0, static_cast<uint64_t>(config.tokens_per_batch));
  hash = HashCombine(hash, static_cast<uint64_t>(config.max_sequence_length));
  hash = HashCombine(hash, static_cast<uint64_t>(config.oversize));
  for (const SequenceRef& s : sampler.sequences_) {
    hash = HashCombine(hash, static_cast<uint64_t>(s.length));
  }
  sampler.fingerprint_ = hash;
  sampler.Shuffle();
  return sampler;
}

void BatchSampler::Shuffle() {
  order_.resize(sequences_.size());
  std::iota(order_.begin(), order_.end(), 0u);
  // Fisher-Yates with the portable generator: the order depends on (seed, epoch) only.
  Xoshiro256 rng(StreamSeed(config_.seed, epoch_));
  for (size_t i = order_.size(); i > 1; --i) {
    std::swap(order_[i - 1], order_[rng.NextBelow(i)]);
  }
}

GlobalBatch BatchSampler::Next() {
  GlobalBatch batch;
  batch.epoch = epoch_;
  // Every sequence fits a batch on its own (Create() guarantees it), so a batch is never empty.
  while (cursor_ < order_.size()) {
    const SequenceRef& s = sequences_[order_[cursor_]];
    if (batch.num_tokens + s.length > config_.tokens_per_batch) break;
    batch.sequences.push_back(s);
    batch.num_tokens += s.length;
    ++cursor_;
  }
  if (cursor_ == order_.size()) {
    // Move to the next epoch now, so that a position is never "at the end of an epoch" and one
    // state has one position.
    ++epoch_;
    cursor_ = 0;
    Shuffle();
  }
  return batch;
}

SamplerPosition BatchSampler::position() const {
  return {epoch_, cursor_, config_.seed, fingerprint_};
}

absl::Status BatchSampler::Restore(const SamplerPosition& position) {
  if (position.seed != config_.seed) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "batch sampler: the position was saved with seed %d, this sampler has seed %d",
        position.seed, config_.seed));
  }
  if (position.fingerprint != fingerprint_) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "batch sampler: the position was saved for other documents or settings (fingerprint "
        "%016x, this sampler %016x)",
        position.fingerprint, fingerprint_));
  }
  if (position.cursor >= sequences_.size()) {
    return absl::InvalidArgumentError(
        absl::StrFormat("batch sampler: cursor %d is past the %d sequences of an epoch",
                        position.cursor, sequences_.size()));
  }
  if (position.epoch != epoch_) {
    epoch_ = position.epoch;
    Shuffle();
  }
  cursor_ = position.cursor;
  return absl::OkStatus();
}

}  // namespace loom
