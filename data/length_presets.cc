// Published sequence-length distributions, as log-uniform bucket mixtures (see
// length_distribution.h). Each preset names its source and the figures it reproduces; the tests in
// tests/data/length_presets_test.cc sample each preset and check every figure listed here. Where a
// paper publishes only some statistics, the rest of the shape is our assumption and says so.
//
// How the buckets were fitted: with a bucket log-uniform on [lo, hi), its mean length is
// (hi - lo) / ln(hi / lo), so the share of all tokens held by a set of buckets is
// sum(p_b * mean_b) / sum over all buckets. The published sample fractions fix the probability of
// each length range; the published token shares then fix the probabilities inside the long ranges
// and the overall mean. Ranges are split into octaves [2^k, 2^(k+1)) whose probabilities fall off
// geometrically by a ratio solved (by bisection) to hit the token shares. K = 1024 tokens.
#include <string>
#include <vector>

#include "absl/strings/str_format.h"
#include "data/length_distribution.h"

namespace loom {
namespace {

constexpr int64_t K = 1024;
constexpr int64_t M = 1024 * 1024;

struct PresetSpec {
  const char* name;
  const char* source;
  std::vector<LengthBucket> buckets;
};

const std::vector<PresetSpec>& Presets() {
  static const auto* presets = new std::vector<PresetSpec>{
      {"byted",
       "ByteScale (arXiv 2502.21231), Byted pretraining data: ~80% of samples <= 4K tokens; the 1% "
       "of samples >= 128K hold 44.3% of tokens; the 0.05% >= 2M hold 12.1%; sequences > 256K hold "
       "37% of tokens. Assumed: shortest 128 tokens, longest 4M; mean ~12.5K tokens.",
       {
           // 80% of samples up to 4K.
           {128, 4 * K, 0.8},
           // 19% between 4K and 128K, octave probabilities falling by 0.890 per octave so that
           // all samples < 128K hold the remaining 55.7% of tokens.
           {4 * K, 8 * K, 0.047336655},
           {8 * K, 16 * K, 0.042125536},
           {16 * K, 32 * K, 0.0374880901},
           {32 * K, 64 * K, 0.0333611636},
           {64 * K, 128 * K, 0.0296885553},
           // [128K, 256K) holds 44.3% - 37% = 7.3% of tokens.
           {128 * K, 256 * K, 0.00482644628},
           // [256K, 2M) holds 37% - 12.1% = 24.9%, octaves falling by 0.532.
           {256 * K, 512 * K, 0.00257419273},
           {512 * K, 1 * M, 0.00137011587},
           {1 * M, 2 * M, 0.000729245124},
           // 0.05% of samples >= 2M hold 12.1% of tokens.
           {2 * M, 4 * M, 0.0005},
       }},
      {"github",
       "ByteScale (arXiv 2502.21231), GitHub code data: sequences > 128K hold 16.2% of tokens; "
       "sequences > 256K hold 9.8%. Only these two figures are published; the body below 128K is "
       "assumed (55% of samples 64-1K, 30% 1K-4K, 12% 4K-32K, 3% 32K-128K before the tail is "
       "added), as is the longest sequence, 2M.",
       {
           {64, 1 * K, 0.548443953055},
           {1 * K, 4 * K, 0.299151247},
           {4 * K, 32 * K, 0.119660499},
           {32 * K, 128 * K, 0.0299151247},
           // Tail octaves whose token shares fall by 0.700 per octave, so that [128K, 256K) holds
           // 16.2% - 9.8% = 6.4% of tokens and the octaves above it 9.8%.
           {128 * K, 256 * K, 0.00186755712},
           {256 * K, 512 * K, 0.000653222587},
           {512 * K, 1 * M, 0.00022848016},
           {1 * M, 2 * M, 7.99163782e-05},
       }},
      {"chunkflow",
       "ChunkFlow (arXiv 2503.02356), evaluation fine-tuning set: ~90% of sequences < 1K tokens, "
       "~8% 1K-4K, ~2% 4K-32K, < 0.1% > 32K. Assumed: shortest 32 tokens, longest 256K (the "
       "longest context ChunkFlow evaluates), 0.05% above 32K.",
       {
           {32, 1 * K, 0.90},
           {1 * K, 4 * K, 0.08},
           {4 * K, 32 * K, 0.0195},
           {32 * K, 256 * K, 0.0005},
       }},
      {"lmsyschat1m",
       "LMSYS-Chat-1M conversations (dataset: arXiv 2309.11998; figures as given in loom's "
       "DESIGN.md section 6): > 99% of sequences < 4K tokens, the longest ~300K. Assumed: shortest "
       "16 tokens, 93% below "
       "1K (chat turns are short), 0.75% 4K-32K, 0.05% 32K-300K.",
       {
           {16, 1 * K, 0.93},
           {1 * K, 4 * K, 0.062},
           {4 * K, 32 * K, 0.0075},
           {32 * K, 300'001, 0.0005},
       }},
  };
  return *presets;
}

}  // namespace

absl::StatusOr<LengthDistribution> LengthDistribution::Preset(std::string_view name) {
  for (const PresetSpec& spec : Presets()) {
    if (name == spec.name) return FromBuckets(spec.name, spec.source, spec.buckets);
  }
  std::string known;
  for (const std::string& n : PresetNames()) known += (known.empty() ? "" : ", ") + n;
  return absl::NotFoundError(
      absl::StrFormat("length distribution preset '%s' is unknown (presets: %s)", name, known));
}

std::vector<std::string> LengthDistribution::PresetNames() {
  std::vector<std::string> names;
  for (const PresetSpec& spec : Presets()) names.push_back(spec.name);
  return names;
}

}  // namespace loom
