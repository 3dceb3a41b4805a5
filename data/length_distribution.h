// Sequence-length distributions: where the lengths of training sequences come from when planning,
// simulating or generating synthetic data.
//
// Two kinds share one type:
//  - empirical: a list of observed lengths (a shard's document index, a file of lengths), sampled
//    uniformly;
//  - parametric: a mixture of buckets, each log-uniform on [lo, hi). The published presets are of
//    this kind; see length_presets.cc for each preset's source and how it was fitted.
//
// Sampling is deterministic from a seed through the portable generator in data/rng.h. A bucket
// draw computes lo * (hi / lo)^u with the C library's exp/log, whose last bit may differ between
// C libraries; on one platform the sequence is exact.
#ifndef LOOM_DATA_LENGTH_DISTRIBUTION_H_
#define LOOM_DATA_LENGTH_DISTRIBUTION_H_

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "data/document_index.h"
#include "data/rng.h"

namespace loom {

// Lengths log-uniform on [lo, hi), chosen with `probability` (bucket probabilities sum to 1).
struct LengthBucket {
  int64_t lo = 1;
  int64_t hi = 2;
  double probability = 0.0;
};

class LengthDistribution {
 public:
  // A parametric mixture. Needs 1 <= lo < hi for each bucket, probabilities >= 0 summing to 1
  // (within 1e-9).
  static absl::StatusOr<LengthDistribution> FromBuckets(std::string name, std::string source,
                                                        std::vector<LengthBucket> buckets);
  // Empirical: every length must be >= 1; at least one length.
  static absl::StatusOr<LengthDistribution> FromLengths(std::string name,
                                                        std::vector<int64_t> lengths);
  // The document lengths of a shard's index.
  static absl::StatusOr<LengthDistribution> FromIndex(std::string name, const DocumentIndex& index);
  // A text file of lengths, one positive integer per line; blank lines and lines starting with '#'
  // are skipped. A bad line is an error naming file:line.
  static absl::StatusOr<LengthDistribution> FromLengthsFile(const std::string& path);
  // A published preset by name (see PresetNames()).
  static absl::StatusOr<LengthDistribution> Preset(std::string_view name);
  static std::vector<std::string> PresetNames();

  const std::string& name() const { return name_; }
  // Where the distribution comes from: a paper and the figures it matches, or a file.
  const std::string& source() const { return source_; }
  bool empirical() const { return !lengths_.empty(); }
  const std::vector<LengthBucket>& buckets() const { return buckets_; }
  int64_t min_length() const { return min_length_; }
  int64_t max_length() const { return max_length_; }

  int64_t Sample(Xoshiro256& rng) const;
  // `count` lengths from a generator seeded with `seed`.
  std::vector<int64_t> Sample(int64_t count, uint64_t seed) const;

 private:
  LengthDistribution() = default;

  std::string name_;
  std::string source_;
  std::vector<LengthBucket> buckets_;
  std::vector<double> cumulative_;  // running sums of bucket probabilities
  std::vector<double> log_ratio_;   // ln(hi / lo) per bucket
  std::vector<int64_t> lengths_;    // empirical lengths
  int64_t min_length_ = 0;
  int64_t max_length_ = 0;
};

}  // namespace loom

#endif  // LOOM_DATA_LENGTH_DISTRIBUTION_H_
