// Synthetic token shards with a chosen length distribution, for benchmarks and scale tests: the
// data path and the planners can be exercised on a realistic long tail without a real corpus.
// Each document's length is drawn from the distribution (the length counts its EOT); its content is
// uniform random bytes (tokens 0..255) followed by the byte-level end-of-text token 256, so the
// shards read back with the same vocabulary and EOT as prep's output.
#ifndef LOOM_DATA_SYNTHETIC_H_
#define LOOM_DATA_SYNTHETIC_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "data/length_distribution.h"
#include "data/shard.h"

namespace loom {

struct SyntheticShardOptions {
  std::string output_dir;                  // created if missing
  std::string prefix = "synthetic";        // shards are <output_dir>/<prefix>_NNNNNN.bin
  int64_t total_tokens = 0;                // exactly this many tokens in all
  int64_t shard_tokens = kMaxShardTokens;  // most tokens per shard
  uint64_t seed = 0;                       // lengths and contents follow from it
  TokenWidth width = TokenWidth::kUint16;
};

// Writes documents until total_tokens is reached; the last document is shortened to end exactly
// there (it still ends with EOT). Returns the shard paths in order.
absl::StatusOr<std::vector<std::string>> WriteSyntheticShards(const LengthDistribution& lengths,
                                                              const SyntheticShardOptions& options);

}  // namespace loom

#endif  // LOOM_DATA_SYNTHETIC_H_
