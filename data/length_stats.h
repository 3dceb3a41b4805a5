// Summary statistics of a list of sequence lengths: what the length-distribution presets are
// checked against, and what `loom inspect` and the planners report. Long-tailed data is described
// by two different fractions, and both matter: the fraction of *samples* at or above a length
// (how many long sequences there are) and the fraction of *tokens* they hold (how much compute).
#ifndef LOOM_DATA_LENGTH_STATS_H_
#define LOOM_DATA_LENGTH_STATS_H_

#include <cstddef>
#include <cstdint>
#include <vector>

namespace loom {

class LengthStats {
 public:
  explicit LengthStats(std::vector<int64_t> lengths);

  int64_t count() const { return static_cast<int64_t>(sorted_.size()); }
  int64_t total_tokens() const { return prefix_tokens_.back(); }
  int64_t min() const { return sorted_.empty() ? 0 : sorted_.front(); }
  int64_t max() const { return sorted_.empty() ? 0 : sorted_.back(); }
  double mean() const;

  // Fraction of samples with length >= `length` ("above L" is AtLeast(L + 1)).
  double FractionOfSamplesAtLeast(int64_t length) const;
  // Fraction of all tokens that lie in samples with length >= `length`.
  double FractionOfTokensAtLeast(int64_t length) const;
  // The smallest length with at least a fraction q of samples at or below it (nearest rank);
  // q in [0, 1].
  int64_t Quantile(double q) const;

 private:
  // Index of the first sample >= length.
  size_t FirstAtLeast(int64_t length) const;

  std::vector<int64_t> sorted_;
  std::vector<int64_t> prefix_tokens_;  // prefix_tokens_[i]: sum of the i shortest lengths
};

}  // namespace loom

#endif  // LOOM_DATA_LENGTH_STATS_H_
