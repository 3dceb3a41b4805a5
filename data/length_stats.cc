#include "data/length_stats.h"

#include <algorithm>
#include <cmath>
#include <utility>

namespace loom {

LengthStats::LengthStats(std::vector<int64_t> lengths) : sorted_(std::move(lengths)) {
  std::sort(sorted_.begin(), sorted_.end());
  prefix_tokens_.resize(sorted_.size() + 1);
  prefix_tokens_[0] = 0;
  for (size_t i = 0; i < sorted_.size(); ++i)
    prefix_tokens_[i + 1] = prefix_tokens_[i] + sorted_[i];
}

double LengthStats::mean() const {
  return sorted_.empty() ? 0.0 : static_cast<double>(total_tokens()) / count();
}

size_t LengthStats::FirstAtLeast(int64_t length) const {
  return static_cast<size_t>(std::lower_bound(sorted_.begin(), sorted_.end(), length) -
                             sorted_.begin());
}

double LengthStats::FractionOfSamplesAtLeast(int64_t length) const {
  if (sorted_.empty()) return 0.0;
  return static_cast<double>(sorted_.size() - FirstAtLeast(length)) / count();
}

double LengthStats::FractionOfTokensAtLeast(int64_t length) const {
  if (total_tokens() == 0) return 0.0;
  return static_cast<double>(total_tokens() - prefix_tokens_[FirstAtLeast(length)]) /
         static_cast<double>(total_tokens());
}

int64_t LengthStats::Quantile(double q) const {
  if (sorted_.empty()) return 0;
  const double rank = std::ceil(std::clamp(q, 0.0, 1.0) * count());
  const size_t index = static_cast<size_t>(std::max(rank, 1.0)) - 1;
  return sorted_[index];
}

}  // namespace loom
