#include "parallel/token_slicing.h"

#include <algorithm>
#include <limits>

namespace loom {
namespace {

// One slice run as a micro-batch of its own: every layer's overhead, attention to every earlier
// token of the sequence, and the linear layers.
double SliceSeconds(int64_t begin, int64_t end, const CostModel& cost) {
  return cost.n_layers * cost.overhead_s + cost.RangeSeconds(begin, end);
}

// The sweep of SliceForPipeline: each bound this much below the one before, and at most this many
// times the slices that cutting by capacity alone makes (planning time stays linear in the
// sequence's chunks; far finer slicings only add overhead).
constexpr double kSweepStep = 0.8;
constexpr int64_t kMaxSlicesPerChunk = 8;
constexpr int kMaxSweep = 200;

}  // namespace

TokenCuts SliceByCost(int64_t begin, int64_t end, int64_t capacity, double max_seconds,
                      const CostModel& cost) {
  if (capacity < 1) capacity = std::max<int64_t>(1, end - begin);
  TokenCuts cuts = {begin};
  int64_t x = begin;
  while (x < end) {
    // The largest y in [x + 1, min(end, x + capacity)] whose slice fits; x + 1 even if it does
    // not. Invariant of the search: lo is taken, hi is not (or hi == lo).
    int64_t lo = x + 1;
    int64_t hi = std::min(end, x + capacity);
    if (SliceSeconds(x, hi, cost) <= max_seconds) {
      lo = hi;
    } else {
      while (hi - lo > 1) {
        const int64_t mid = lo + (hi - lo) / 2;
        (SliceSeconds(x, mid, cost) <= max_seconds ? lo : hi) = mid;
      }
    }
    x = lo;
    cuts.push_back(x);
  }
  return cuts;
}

TokenCuts SliceForPipeline(int64_t begin, int64_t end, int64_t capacity, int stages,
                           const CostModel& cost) {
  if (end <= begin) return {begin};
  if (capacity < 1) capacity = std::max<int64_t>(1, end - begin);
  const int64_t by_capacity = (end - begin + capacity - 1) / capacity;
  const int64_t max_slices = kMaxSlicesPerChunk * by_capacity;
  // No slice can cost less than the sequence's last token alone.
  const double floor_s = SliceSeconds(end - 1, end, cost);
  TokenCuts best;
  double best_objective = std::numeric_limits<double>::infinity();
  // The first bound (the whole range's cost) gives the slicing by capacity alone.
  double bound = SliceSeconds(begin, end, cost);
  for (int k = 0; k < kMaxSweep && (k == 0 || (bound >= floor_s && bound > 0)); ++k) {
    TokenCuts cuts = SliceByCost(begin, end, capacity, bound, cost);
    const int64_t slices = static_cast<int64_t>(cuts.size()) - 1;
    if (slices > max_slices) break;
    double sum = 0.0, most = 0.0;
    for (size_t i = 0; i + 1 < cuts.size(); ++i) {
      const double t = SliceSeconds(cuts[i], cuts[i + 1], cost);
      sum += t;
      most = std::max(most, t);
    }
    const double objective = sum + (stages - 1) * most;
    if (objective < best_objective) {
      best_objective = objective;
      best = std::move(cuts);
    }
    bound *= kSweepStep;
  }
  return best;
}

}  // namespace loom
