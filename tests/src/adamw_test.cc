// AdamW over a sub-range of the flat parameters (a ZeRO shard) against the full optimizer: over
// several steps, every element inside the range gets the same bits of parameter, m and v as the
// full update gives it (ranges cut through matrices and through undecayed norm gains, and may be
// empty), and no element outside the range is touched.
#include "src/adamw.h"

#include <gtest/gtest.h>

#include <cstring>
#include <utility>
#include <vector>

#include "tests/src/test_util.h"

namespace loom {
namespace {

ModelConfig SmallConfig() {
  ModelConfig c;
  c.vocab_size = 11;
  c.d_model = 12;
  c.n_layers = 1;
  c.n_heads = 2;
  c.n_kv_heads = 1;
  c.ffn_dim = 20;
  return c;
}

bool SameBits(const float* a, const float* b, size_t n) {
  return n == 0 || std::memcmp(a, b, n * sizeof(float)) == 0;
}

TEST(AdamWRangeTest, MatchesFullUpdateBitForBit) {
  const ParamLayout layout(SmallConfig());
  const size_t p = layout.total_numel();
  const ParamEntry* norm = layout.Find("model.layers.0.input_layernorm.weight");
  ASSERT_NE(norm, nullptr);
  const AdamWConfig config;
  const std::vector<float> init = test::RandomVector(p, 1);
  const std::vector<std::pair<size_t, size_t>> ranges = {
      {0, p},                                  // everything
      {5, 7},                                  // inside the embedding
      {norm->offset - 3, norm->offset + 4},    // matrix | norm gain | matrix
      {norm->offset + 1, norm->offset + 2},    // inside a norm gain
      {p - 1, p},                              // the last element
      {40, 40}};                               // empty
  for (const auto& [begin, end] : ranges) {
    SCOPED_TRACE(testing::Message() << "range [" << begin << ", " << end << ") of " << p);
    AdamW full(layout, config);
    AdamW part(layout, config, begin, end);
    EXPECT_EQ(part.begin(), begin);
    EXPECT_EQ(part.end(), end);
    ASSERT_EQ(part.m().numel(), end - begin);
    std::vector<float> want = init, got = init;
    for (int step = 0; step < 3; ++step) {
      const std::vector<float> grads = test::RandomVector(p, 100 + step, 0.5f);
      const float lr = 0.05f / static_cast<float>(step + 1);
      full.Step(want.data(), grads.data(), lr);
      part.Step(got.data() + begin, grads.data() + begin, lr);
    }
    EXPECT_EQ(part.step(), 3);
    EXPECT_TRUE(SameBits(got.data() + begin, want.data() + begin, end - begin)) << "params";
    EXPECT_TRUE(SameBits(part.m().data(), full.m().data() + begin, end - begin)) << "m";
    EXPECT_TRUE(SameBits(part.v().data(), full.v().data() + begin, end - begin)) << "v";
    EXPECT_TRUE(SameBits(got.data(), init.data(), begin)) << "elements before the range changed";
    EXPECT_TRUE(SameBits(got.data() + end, init.data() + end, p - end))
        << "elements after the range changed";
  }
}

// Guards the test above: the norm gains really are left undecayed, so a range that decayed them
// (or failed to decay a matrix) would differ from the full update.
TEST(AdamWRangeTest, NormGainsAreNotDecayed) {
  const ParamLayout layout(SmallConfig());
  const ParamEntry* norm = layout.Find("model.norm.weight");
  const ParamEntry* head = layout.Find("lm_head.weight");
  ASSERT_NE(norm, nullptr);
  ASSERT_NE(head, nullptr);
  AdamWConfig config;
  config.weight_decay = 0.5f;
  AdamW adamw(layout, config, norm->offset, head->offset + 1);
  std::vector<float> params(layout.total_numel(), 1.0f);
  const std::vector<float> zero(layout.total_numel(), 0.0f);
  adamw.Step(params.data() + norm->offset, zero.data() + norm->offset, 0.1f);
  EXPECT_EQ(params[norm->offset], 1.0f);
  EXPECT_EQ(params[head->offset], 1.0f - 0.1f * 0.5f);
}

}  // namespace
}  // namespace loom
