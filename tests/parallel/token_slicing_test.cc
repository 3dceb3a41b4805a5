// Slicing a long sequence by cost for a pipeline (parallel/token_slicing.h): SliceByCost gives
// the fewest slices under a cost bound (checked against an exhaustive search), and
// SliceForPipeline's choice is within the sweep's step (1.25x) of the best of all slicings of
// small ranges, exactly the best for one stage, and never worse than cutting by capacity alone.
#include "parallel/token_slicing.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <functional>
#include <limits>
#include <vector>

namespace loom {
namespace {

// A cost model where attention dominates late tokens, as in a long sequence: per layer
// a*(y^2 - x^2) + b*(y - x) + c.
CostModel AttentionHeavy() {
  CostModel cost;
  cost.n_layers = 2;
  cost.attention_s = 1e-3;
  cost.linear_s = 2e-2;
  cost.overhead_s = 5e-2;
  return cost;
}

double SliceSeconds(int64_t x, int64_t y, const CostModel& cost) {
  return cost.n_layers * cost.overhead_s + cost.RangeSeconds(x, y);
}

void ExpectWellFormed(const TokenCuts& cuts, int64_t begin, int64_t end, int64_t capacity) {
  ASSERT_GE(cuts.size(), 2u);
  EXPECT_EQ(cuts.front(), begin);
  EXPECT_EQ(cuts.back(), end);
  for (size_t i = 0; i + 1 < cuts.size(); ++i) {
    EXPECT_LT(cuts[i], cuts[i + 1]);
    EXPECT_LE(cuts[i + 1] - cuts[i], capacity);
  }
}

// The fewest slices of [x, end) under the bound and the capacity, by trying every first cut.
int FewestSlices(int64_t x, int64_t end, int64_t capacity, double bound, const CostModel& cost) {
  if (x == end) return 0;
  int best = std::numeric_limits<int>::max();
  for (int64_t y = x + 1; y <= std::min(end, x + capacity); ++y) {
    if (y > x + 1 && SliceSeconds(x, y, cost) > bound) break;
    best = std::min(best, 1 + FewestSlices(y, end, capacity, bound, cost));
  }
  return best;
}

TEST(TokenSlicing, SliceByCostIsTheFewestSlicesUnderTheBound) {
  const CostModel cost = AttentionHeavy();
  for (const int64_t begin : {0, 5}) {
    for (const int64_t length : {1, 7, 16}) {
      for (const int64_t capacity : {1, 3, 8, 100}) {
        for (const double bound : {0.0, 0.15, 0.3, 0.6, 1.5}) {
          const int64_t end = begin + length;
          const TokenCuts cuts = SliceByCost(begin, end, capacity, bound, cost);
          ExpectWellFormed(cuts, begin, end, capacity);
          for (size_t i = 0; i + 1 < cuts.size(); ++i) {
            // Over the bound only when a single token is.
            if (cuts[i + 1] - cuts[i] > 1) {
              EXPECT_LE(SliceSeconds(cuts[i], cuts[i + 1], cost), bound);
            }
          }
          EXPECT_EQ(static_cast<int>(cuts.size()) - 1,
                    FewestSlices(begin, end, capacity, bound, cost))
              << "begin " << begin << " length " << length << " capacity " << capacity
              << " bound " << bound;
        }
      }
    }
  }
}

TEST(TokenSlicing, LaterSlicesAreShorterWhenAttentionDominates) {
  const CostModel cost = AttentionHeavy();
  const TokenCuts cuts = SliceForPipeline(0, 400, 64, 4, cost);
  ExpectWellFormed(cuts, 0, 400, 64);
  ASSERT_GT(cuts.size(), 3u);
  EXPECT_GT(cuts[1] - cuts[0], cuts[cuts.size() - 1] - cuts[cuts.size() - 2]);
  // More slices than cutting by capacity alone (7): the last chunk of 64 tokens would cost
  // several times the first.
  EXPECT_GT(cuts.size() - 1, 7u);
}

// sum(t) + (p - 1) max(t) of a slicing.
double Objective(const TokenCuts& cuts, int stages, const CostModel& cost) {
  double sum = 0.0, most = 0.0;
  for (size_t i = 0; i + 1 < cuts.size(); ++i) {
    const double t = SliceSeconds(cuts[i], cuts[i + 1], cost);
    sum += t;
    most = std::max(most, t);
  }
  return sum + (stages - 1) * most;
}

// Every slicing of [0, n) with slices of at most `capacity` tokens.
void AllSlicings(int64_t x, int64_t n, int64_t capacity, TokenCuts& prefix,
                 const std::function<void(const TokenCuts&)>& visit) {
  if (x == n) {
    visit(prefix);
    return;
  }
  for (int64_t y = x + 1; y <= std::min(n, x + capacity); ++y) {
    prefix.push_back(y);
    AllSlicings(y, n, capacity, prefix, visit);
    prefix.pop_back();
  }
}

TEST(TokenSlicing, PipelineSlicingComesCloseToTheBestOfAllSlicings) {
  const CostModel cost = AttentionHeavy();
  for (const int stages : {1, 2, 4, 8}) {
    for (const int64_t n : {1, 6, 12}) {
      for (const int64_t capacity : {3, 12}) {
        const TokenCuts chosen = SliceForPipeline(0, n, capacity, stages, cost);
        ExpectWellFormed(chosen, 0, n, capacity);
        double exact = std::numeric_limits<double>::infinity();
        TokenCuts prefix = {0};
        AllSlicings(0, n, capacity, prefix, [&](const TokenCuts& cuts) {
          exact = std::min(exact, Objective(cuts, stages, cost));
        });
        // The sweep tries bounds 0.8x apart, so it may miss the best bound by that much on max(t);
        // it never does worse than cutting by capacity alone.
        const double got = Objective(chosen, stages, cost);
        EXPECT_LE(got, exact * 1.25) << "stages " << stages << " n " << n << " capacity "
                                     << capacity;
        EXPECT_LE(got, Objective(SliceByCost(0, n, capacity, 1e30, cost), stages, cost) + 1e-12);
        if (stages == 1) {
          EXPECT_NEAR(got, exact, 1e-12 * exact) << "one stage: the fewest slices are best";
        }
      }
    }
  }
}

TEST(TokenSlicing, EmptyAndDegenerateRanges) {
  const CostModel cost = AttentionHeavy();
  EXPECT_EQ(SliceForPipeline(3, 3, 8, 4, cost), (TokenCuts{3}));
  EXPECT_EQ(SliceForPipeline(0, 1, 8, 4, cost), (TokenCuts{0, 1}));
  // Capacity 0 means no limit on a slice's length.
  EXPECT_EQ(SliceByCost(0, 50, 0, 1e30, cost), (TokenCuts{0, 50}));
  // A model with no costs at all still ends (every bound is 0).
  const CostModel free;
  const TokenCuts cuts = SliceForPipeline(0, 5, 8, 4, free);
  ExpectWellFormed(cuts, 0, 5, 8);
}

}  // namespace
}  // namespace loom
