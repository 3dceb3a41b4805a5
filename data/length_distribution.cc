#include "data/length_distribution.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <fstream>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/str_format.h"

namespace loom {

absl::StatusOr<LengthDistribution> LengthDistribution::FromBuckets(
    std::string name, std::string source, std::vector<LengthBucket> buckets) {
  if (buckets.empty()) {
    return absl::InvalidArgumentError(absl::StrFormat("length distribution %s: no buckets", name));
  }
  LengthDistribution dist;
  double total = 0.0;
  dist.min_length_ = INT64_MAX;
  for (size_t b = 0; b < buckets.size(); ++b) {
    const LengthBucket& bucket = buckets[b];
    if (bucket.lo < 1 || bucket.hi <= bucket.lo || !(bucket.probability >= 0.0)) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "length distribution %s: bucket %d [%d, %d) with probability %g: need 1 <= lo < hi and "
          "probability >= 0",
          name, b, bucket.lo, bucket.hi, bucket.probability));
    }
    total += bucket.probability;
    dist.cumulative_.push_back(total);
    dist.log_ratio_.push_back(std::log(static_cast<double>(bucket.hi) / bucket.lo));
    if (bucket.probability > 0.0) {
      dist.min_length_ = std::min(dist.min_length_, bucket.lo);
      dist.max_length_ = std::max(dist.max_length_, bucket.hi - 1);
    }
  }
  if (std::abs(total - 1.0) > 1e-9) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "length distribution %s: bucket probabilities sum to %.12g, not 1", name, total));
  }
  // Rounding must not leave a sliver of [0, 1) above the last running sum.
  dist.cumulative_.back() = 1.0;
  dist.name_ = std::move(name);
  dist.source_ = std::move(source);
  dist.buckets_ = std::move(buckets);
  return dist;
}

absl::StatusOr<LengthDistribution> LengthDistribution::FromLengths(std::string name,
                                                                   std::vector<int64_t> lengths) {
  if (lengths.empty()) {
    return absl::InvalidArgumentError(absl::StrFormat("length distribution %s: no lengths", name));
  }
  for (size_t i = 0; i < lengths.size(); ++i) {
    if (lengths[i] < 1) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "length distribution %s: length %d at position %d is not positive", name, lengths[i], i));
    }
  }
  LengthDistribution dist;
  const auto [lo, hi] = std::minmax_element(lengths.begin(), lengths.end());
  dist.min_length_ = *lo;
  dist.max_length_ = *hi;
  dist.name_ = name;
  dist.source_ = absl::StrFormat("empirical: %d lengths", lengths.size());
  dist.lengths_ = std::move(lengths);
  return dist;
}

absl::StatusOr<LengthDistribution> LengthDistribution::FromIndex(std::string name,
                                                                 const DocumentIndex& index) {
  return FromLengths(std::move(name), index.Lengths());
}

absl::StatusOr<LengthDistribution> LengthDistribution::FromLengthsFile(const std::string& path) {
  std::ifstream in(path);
  if (!in) return absl::NotFoundError(absl::StrFormat("lengths file %s: cannot open", path));
  std::vector<int64_t> lengths;
  std::string line;
  int64_t line_number = 0;
  while (std::getline(in, line)) {
    ++line_number;
    const absl::string_view text = absl::StripAsciiWhitespace(line);
    if (text.empty() || text.front() == '#') continue;
    int64_t value = 0;
    const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
    if (ec != std::errc() || end != text.data() + text.size() || value < 1) {
      return absl::InvalidArgumentError(
          absl::StrFormat("%s:%d: '%s' is not a positive integer length", path, line_number, text));
    }
    lengths.push_back(value);
  }
  if (in.bad()) {
    return absl::DataLossError(
        absl::StrFormat("lengths file %s: read failed after line %d", path, line_number));
  }
  if (lengths.empty()) {
    return absl::InvalidArgumentError(absl::StrFormat("lengths file %s: no lengths", path));
  }
  const size_t count = lengths.size();
  absl::StatusOr<LengthDistribution> dist = FromLengths(path, std::move(lengths));
  if (dist.ok()) dist->source_ = absl::StrFormat("empirical: %d lengths from %s", count, path);
  return dist;
}

int64_t LengthDistribution::Sample(Xoshiro256& rng) const {
  if (!lengths_.empty()) return lengths_[rng.NextBelow(lengths_.size())];
  const double pick = rng.NextDouble();
  const size_t b = static_cast<size_t>(
      std::upper_bound(cumulative_.begin(), cumulative_.end(), pick) - cumulative_.begin());
  // pick < 1 == cumulative_.back(), so b is a valid bucket, and never one of probability 0.
  const LengthBucket& bucket = buckets_[b];
  const double x = static_cast<double>(bucket.lo) * std::exp(rng.NextDouble() * log_ratio_[b]);
  // exp() may round the top of the range up to hi itself.
  return std::clamp(static_cast<int64_t>(x), bucket.lo, bucket.hi - 1);
}

std::vector<int64_t> LengthDistribution::Sample(int64_t count, uint64_t seed) const {
  Xoshiro256 rng(seed);
  std::vector<int64_t> out(static_cast<size_t>(std::max<int64_t>(count, 0)));
  for (int64_t& length : out) length = Sample(rng);
  return out;
}

}  // namespace loom
