#include "parallel/stage_partition.h"

#include <algorithm>
#include <limits>

#include "absl/strings/str_format.h"

namespace loom {

absl::StatusOr<std::vector<StageSpec>> PartitionLayers(const CostModel& cost, int stages,
                                                       int64_t reference_tokens) {
  const int n = cost.n_layers;
  if (stages < 1 || stages > n) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "a pipeline of %d stages needs at least as many layers, and the model has %d", stages, n));
  }
  const std::vector<TokenRange> reference = {{0, 0, std::max<int64_t>(reference_tokens, 1)}};
  auto stage_cost = [&](int first, int last) {
    return cost.StageSeconds(reference, StageSpec{first, last}, /*head=*/last == n);
  };
  // Two exact dynamic programmes over (stages so far, layers so far); n and stages are small.
  // First the smallest costliest stage; then, among splits within it, the one whose stage costs
  // are the most even (smallest sum of squares), so that memory and spare time spread evenly.
  constexpr double kInf = std::numeric_limits<double>::infinity();
  using Table = std::vector<std::vector<double>>;
  auto solve = [&](auto combine, Table& best, std::vector<std::vector<int>>& cut) {
    best.assign(static_cast<size_t>(stages) + 1, std::vector<double>(static_cast<size_t>(n) + 1, kInf));
    cut.assign(best.size(), std::vector<int>(static_cast<size_t>(n) + 1, 0));
    best[0][0] = 0.0;
    for (int s = 1; s <= stages; ++s) {
      for (int l = s; l <= n - (stages - s); ++l) {
        // Latest start first: on ties the later stages get fewer layers (the last has the head).
        for (int f = l - 1; f >= s - 1; --f) {
          const double prev = best[static_cast<size_t>(s - 1)][static_cast<size_t>(f)];
          const double value = combine(prev, stage_cost(f, l));
          if (value < best[static_cast<size_t>(s)][static_cast<size_t>(l)]) {
            best[static_cast<size_t>(s)][static_cast<size_t>(l)] = value;
            cut[static_cast<size_t>(s)][static_cast<size_t>(l)] = f;
          }
        }
      }
    }
  };
  Table best;
  std::vector<std::vector<int>> cut;
  solve([](double prev, double c) { return std::max(prev, c); }, best, cut);
  const double limit = best[static_cast<size_t>(stages)][static_cast<size_t>(n)] * (1.0 + 1e-12);
  solve([&](double prev, double c) { return c <= limit ? prev + c * c : kInf; }, best, cut);
  std::vector<StageSpec> out(static_cast<size_t>(stages));
  int last = n;
  for (int s = stages; s >= 1; --s) {
    const int first = cut[static_cast<size_t>(s)][static_cast<size_t>(last)];
    out[static_cast<size_t>(s - 1)] = StageSpec{first, last};
    last = first;
  }
  return out;
}

}  // namespace loom
