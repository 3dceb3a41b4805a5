// Selective activation offloading: the ratio a micro-batch needs and the ratio its compute hides,
// the fewest ring members a long sequence needs with it, and the balance scheduler's plans with
// offloading: fewer ring members than ceil(L / C), every rank within its memory budget.
#include "parallel/activation_offload.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <vector>

#include "parallel/balance_scheduler.h"
#include "parallel/plan_metrics.h"
#include "parallel/plan_validator.h"
#include "parallel/ring_share.h"

namespace loom {
namespace {

// 4 layers; 100 bytes of activations per token, 20 of scratch and loss gradient (no logits);
// attention 1e-6 s per squared token and layer, 1e-3 s per token and layer; a host link of
// 1e5 bytes per second.
CostModel Cost() {
  CostModel c;
  c.n_layers = 4;
  c.attention_s = 1e-6;
  c.linear_s = 1e-3;
  c.activation_bytes_per_token = 100;
  c.working_bytes_per_token = 10;
  c.pending_bytes_per_token = 10;
  c.logit_bytes_per_row = 0;
  c.host_bytes_per_s = 1e5;
  c.ranks_per_node = 8;
  return c;
}

TEST(Offload, NeededRatioFillsTheBudgetExactly) {
  const CostModel c = Cost();
  const OffloadPolicy p{/*budget_bytes=*/12'000, 0, 1.0};
  // 100 tokens need 12,000 bytes: no offloading.
  EXPECT_DOUBLE_EQ(NeededOffloadRatio(100, c, p), 0.0);
  // 200 tokens need 24,000: 12,000 over, of 20,000 bytes of activations.
  EXPECT_DOUBLE_EQ(NeededOffloadRatio(200, c, p), 0.6);
  // 700 tokens: even with every activation offloaded, 14,000 bytes of scratch remain.
  EXPECT_GT(NeededOffloadRatio(700, c, p), 1.0);
}

TEST(Offload, HiddenRatioIsWhatTheForwardsComputeCovers) {
  const CostModel c = Cost();
  // 200 tokens, 20,000 bytes: a 0.1 s forward moves 10,000 bytes at 1e5 B/s, half of them.
  EXPECT_DOUBLE_EQ(HiddenOffloadRatio(200, 0.1, c, {0, 0, 1.0}), 0.5);
  EXPECT_DOUBLE_EQ(HiddenOffloadRatio(200, 1.0, c, {0, 0, 1.0}), 1.0) << "at most all";
  EXPECT_DOUBLE_EQ(HiddenOffloadRatio(200, 1.0, c, {0, 0, 0.8}), 0.8) << "max_ratio";
  EXPECT_DOUBLE_EQ(HiddenOffloadRatio(200, 1.0, c, {0, 4'000, 1.0}), 0.2) << "host memory";
  CostModel no_link = c;
  no_link.host_bytes_per_s = 0;
  EXPECT_DOUBLE_EQ(HiddenOffloadRatio(200, 1.0, no_link, {0, 0, 1.0}), 0.0);
}

TEST(Offload, LongSequencesNeedFewerMembers) {
  CostModel c = Cost();
  // C = 100 tokens (12,000 bytes). A sequence of 1,600 tokens needs 16 members without
  // offloading. Each of n members holds 1,600 / n tokens and computes for about
  // (1e-6 * 1600^2 / n + 1e-3 * 1600 / n) * 4 layers in all, a third of it forward.
  const OffloadPolicy p{c.MicroBatchBytes(100), 0, 1.0};
  const int n = MinRingMembers(1600, 100, c, p, 16);
  EXPECT_LT(n, 16);
  EXPECT_GE(n, 2);
  // The answer is the fewest that fit: with n members, member 0's zigzag pieces (the largest
  // share) offload no more than their forward hides; with n - 1 they would have to.
  auto fits = [&](int members) {
    int64_t share = 0;
    double seconds = c.n_layers * c.overhead_s;
    for (const TokenRange& r : ZigzagShare(0, 1600, members, 0)) {
      share += r.size();
      seconds += c.RangeSeconds(r.begin, r.end);
    }
    return NeededOffloadRatio(share, c, p) <= HiddenOffloadRatio(share, seconds / 3.0, c, p);
  };
  EXPECT_TRUE(fits(n));
  if (n > 2) {
    EXPECT_FALSE(fits(n - 1));
  }
  // No host link: nothing can be offloaded, so all 16.
  c.host_bytes_per_s = 0;
  EXPECT_EQ(MinRingMembers(1600, 100, c, p, 16), 16);
}

TEST(Offload, BalancedPlansOffloadOnlyWhatDoesNotFit) {
  const CostModel c = Cost();
  std::vector<SequenceSpec> batch = {{0, 1600}};
  for (int i = 1; i <= 60; ++i) batch.push_back({i, 40 + (i * 37) % 60});
  const OffloadPolicy p{c.MicroBatchBytes(100), 0, 1.0};
  HdpOptions options{16, 100};
  absl::StatusOr<StepPlan> plain = PlanBalancedHdp(batch, options, c);
  options.offload = &p;
  absl::StatusOr<StepPlan> offloaded = PlanBalancedHdp(batch, options, c);
  ASSERT_TRUE(plain.ok()) << plain.status();
  ASSERT_TRUE(offloaded.ok()) << offloaded.status();
  ASSERT_TRUE(ValidatePlan(*offloaded, c).ok()) << ValidatePlan(*offloaded, c);
  auto ring_of_zero = [](const StepPlan& plan) {
    for (const RankPlan& r : plan.ranks) {
      for (const Action& a : r.actions) {
        if (a.kind == ActionKind::kRingExchange && a.tokens.front().sequence_id == 0) {
          return a.ring.size();
        }
      }
    }
    return size_t{0};
  };
  EXPECT_EQ(ring_of_zero(*plain), 16u);
  EXPECT_LT(ring_of_zero(*offloaded), 16u);
  int offloading = 0;
  for (int r = 0; r < 16; ++r) {
    for (const Action& a : offloaded->ranks[static_cast<size_t>(r)].actions) {
      if (a.kind != ActionKind::kForward) continue;
      const int64_t tokens = TokenCount(a.tokens);
      // A micro-batch that fits offloads nothing; one that does not offloads what it must.
      EXPECT_DOUBLE_EQ(a.offload_ratio, NeededOffloadRatio(tokens, c, p));
      offloading += a.offload_ratio > 0;
    }
    for (const RankMemory& m : RankMemoryTimeline(*offloaded, r, c)) {
      EXPECT_LE(m.bytes(), p.budget_bytes) << "rank " << r;
    }
  }
  EXPECT_GT(offloading, 0);
}

}  // namespace
}  // namespace loom

namespace loom {
namespace {

TEST(Offload, TheWorldHoldsASequenceLongerThanItsCapacity) {
  // 4 ranks of C = 100 hold 400 tokens; a 600-token sequence fits only offloading: each member's
  // 150 tokens need 18,000 bytes against 12,000: 0.4 of their 15,000 bytes of activations
  // offloaded, which their attention (600^2 tokens^2 of it, about 0.36 s per member) hides.
  const CostModel c = Cost();
  const std::vector<SequenceSpec> batch = {{0, 600}, {1, 50}};
  HdpOptions options{4, 100};
  EXPECT_FALSE(PlanBalancedHdp(batch, options, c).ok());
  const OffloadPolicy p{c.MicroBatchBytes(100), 0, 1.0};
  options.offload = &p;
  absl::StatusOr<StepPlan> plan = PlanBalancedHdp(batch, options, c);
  ASSERT_TRUE(plan.ok()) << plan.status();
  ASSERT_TRUE(ValidatePlan(*plan, c).ok()) << ValidatePlan(*plan, c);
  EXPECT_GT(plan->ranks[0].actions[1].offload_ratio, 0.3);
  // Without the host link nothing can be offloaded: the error names the sequence.
  CostModel no_link = c;
  no_link.host_bytes_per_s = 0;
  const absl::Status s = PlanBalancedHdp(batch, options, no_link).status();
  EXPECT_THAT(std::string(s.message()), ::testing::HasSubstr("sequence 0 (index 0) has 600 tokens"));
}

}  // namespace
}  // namespace loom
