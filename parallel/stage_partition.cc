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
  // best[s][l]: the smallest costliest stage when layers [0, l) form stages [0, s); cut[s][l]: where
  // the last of them starts. Exact dynamic programming: n and stages are small.
  constexpr double kInf = std::numeric_limits<double>::infinity();
  std::vector<std::vector<double>> best(static_cast<size_t>(stages) + 1,
                                        std::vector<double>(static_cast<size_t>(n) + 1, kInf));
  std::vector<std::vector<int>> cut(best.size(), std::vector<int>(static_cast<size_t>(n) + 1, 0));
  best[0][0] = 0.0;
  for (int s = 1; s <= stages; ++s) {
    for (int l = s; l <= n - (stages - s); ++l) {
      // Latest start first, so that on ties the last stage is the smallest.
      for (int f = l - 1; f >= s - 1; --f) {
        const double worst = std::max(best[static_cast<size_t>(s - 1)][static_cast<size_t>(f)],
                                      stage_cost(f, l));
        if (worst < best[static_cast<size_t>(s)][static_cast<size_t>(l)]) {
          best[static_cast<size_t>(s)][static_cast<size_t>(l)] = worst;
          cut[static_cast<size_t>(s)][static_cast<size_t>(l)] = f;
        }
      }
    }
  }
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
