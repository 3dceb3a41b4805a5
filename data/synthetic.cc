#include "data/synthetic.h"

#include <algorithm>
#include <filesystem>
#include <span>
#include <system_error>

#include "absl/strings/str_format.h"
#include "data/prep.h"
#include "data/rng.h"
#include "data/shard_set_writer.h"
#include "data/status_macros.h"

namespace loom {

absl::StatusOr<std::vector<std::string>> WriteSyntheticShards(
    const LengthDistribution& lengths, const SyntheticShardOptions& options) {
  if (options.total_tokens < 1) {
    return absl::InvalidArgumentError(
        absl::StrFormat("synthetic shards: total_tokens %d must be >= 1", options.total_tokens));
  }
  std::error_code ec;
  std::filesystem::create_directories(options.output_dir, ec);
  if (ec) {
    return absl::PermissionDeniedError(absl::StrFormat(
        "synthetic shards %s: cannot create the folder: %s", options.output_dir, ec.message()));
  }
  LOOM_DATA_ASSIGN_OR_RETURN(ShardSetWriter writer,
                             ShardSetWriter::Create(options.output_dir, options.prefix,
                                                    options.shard_tokens, options.width));
  // Separate streams for lengths and contents: the lengths of a seed stay the same whatever the
  // content generation consumes.
  Xoshiro256 length_rng(StreamSeed(options.seed, 0));
  Xoshiro256 token_rng(StreamSeed(options.seed, 1));
  std::vector<uint16_t> block(size_t{1} << 20);
  int64_t remaining = options.total_tokens;
  while (remaining > 0) {
    const int64_t length = std::min(lengths.Sample(length_rng), remaining);
    remaining -= length;
    LOOM_DATA_RETURN_IF_ERROR(writer.BeginDocument(length));
    // Content in blocks; each 64-bit draw gives eight byte tokens.
    for (int64_t left = length; left > 0;) {
      const int64_t n = std::min<int64_t>(left, std::ssize(block));
      for (int64_t i = 0; i < n; i += 8) {
        uint64_t bits = token_rng.Next();
        for (int64_t j = i; j < std::min(n, i + 8); ++j, bits >>= 8) {
          block[static_cast<size_t>(j)] = static_cast<uint16_t>(bits & 0xff);
        }
      }
      left -= n;
      if (left == 0) block[static_cast<size_t>(n - 1)] = static_cast<uint16_t>(kByteEndOfText);
      LOOM_DATA_RETURN_IF_ERROR(
          writer.Append(std::span<const uint16_t>(block.data(), static_cast<size_t>(n))));
    }
  }
  return writer.Finish();
}

}  // namespace loom
