// Layers to pipeline stages: equal layers split evenly (the earlier stages taking the remainder),
// a costly output head leaves the last stage fewer layers, the split minimises the costliest
// stage (checked against every split by brute force), and too many stages is an error.
#include "parallel/stage_partition.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <functional>
#include <limits>
#include <vector>

namespace loom {
namespace {

using ::testing::HasSubstr;

CostModel Layers(int n, double head_s) {
  CostModel cost;
  cost.n_layers = n;
  cost.linear_s = 1.0 + head_s / n;  // per layer and token, the head spread in (cost_model.h)
  cost.head_s = head_s;
  return cost;
}

std::vector<int> Sizes(const std::vector<StageSpec>& stages) {
  std::vector<int> out;
  for (const StageSpec& s : stages) out.push_back(s.last_layer - s.first_layer);
  return out;
}

TEST(StagePartition, EqualLayersSplitEvenly) {
  EXPECT_EQ(Sizes(*PartitionLayers(Layers(8, 0), 4, 16)), (std::vector<int>{2, 2, 2, 2}));
  EXPECT_EQ(Sizes(*PartitionLayers(Layers(10, 0), 4, 16)), (std::vector<int>{3, 3, 2, 2}));
  EXPECT_EQ(Sizes(*PartitionLayers(Layers(4, 0), 4, 16)), (std::vector<int>{1, 1, 1, 1}));
  const std::vector<StageSpec> stages = *PartitionLayers(Layers(7, 0), 3, 16);
  EXPECT_EQ(stages.front().first_layer, 0);
  EXPECT_EQ(stages.back().last_layer, 7);
  for (size_t i = 1; i < stages.size(); ++i) {
    EXPECT_EQ(stages[i].first_layer, stages[i - 1].last_layer);
  }
}

TEST(StagePartition, TheHeadLeavesTheLastStageFewerLayers) {
  // The head costs three layers' worth: the last stage takes one layer (1 + 3 = 4 = 4 layers).
  EXPECT_EQ(Sizes(*PartitionLayers(Layers(13, 3.0), 4, 16)), (std::vector<int>{4, 4, 4, 1}));
}

TEST(StagePartition, MinimisesTheCostliestStage) {
  for (int n = 2; n <= 9; ++n) {
    for (int stages = 1; stages <= n; ++stages) {
      for (double head : {0.0, 0.5, 2.5}) {
        const CostModel cost = Layers(n, head);
        const std::vector<TokenRange> reference = {{0, 0, 16}};
        auto worst = [&](const std::vector<StageSpec>& split) {
          double w = 0.0;
          for (const StageSpec& s : split) {
            w = std::max(w, cost.StageSeconds(reference, s, s.last_layer == n));
          }
          return w;
        };
        // Every split into `stages` non-empty ranges.
        double best = std::numeric_limits<double>::infinity();
        std::vector<StageSpec> split;
        std::function<void(int)> search = [&](int first) {
          if (static_cast<int>(split.size()) == stages - 1) {
            split.push_back({first, n});
            best = std::min(best, worst(split));
            split.pop_back();
            return;
          }
          for (int last = first + 1; last <= n - (stages - 1 - static_cast<int>(split.size()));
               ++last) {
            split.push_back({first, last});
            search(last);
            split.pop_back();
          }
        };
        search(0);
        EXPECT_DOUBLE_EQ(worst(*PartitionLayers(cost, stages, 16)), best)
            << n << " layers, " << stages << " stages, head " << head;
      }
    }
  }
}

TEST(StagePartition, MoreStagesThanLayersIsAnError) {
  EXPECT_THAT(PartitionLayers(Layers(3, 0), 4, 16).status().message(),
              HasSubstr("a pipeline of 4 stages needs at least as many layers, and the model has 3"));
}

}  // namespace
}  // namespace loom
