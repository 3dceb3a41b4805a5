// Deferring the linear layers' weight gradients (the W of zero-bubble pipeline schedules) changes
// when they are computed, not what they are: a backward that defers them followed by
// ApplyWeightGrads gives the same gradients, bit for bit, as one backward that makes them all, on
// a pipeline stage of two of four layers; and the deferring backward alone leaves the linear
// weights' gradients untouched.
#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "src/model.h"
#include "src/random.h"

namespace loom {
namespace {

struct Gradients {
  std::vector<float> grads;
  std::vector<float> dx;
};

Gradients StageBackward(Model& model, const TokenBatch& batch, bool defer, bool apply) {
  const ModelConfig& c = model.config();
  const size_t n = static_cast<size_t>(batch.size()) * c.d_model;
  std::vector<float> x(n);
  Random rng(11);
  for (float& v : x) v = static_cast<float>(rng.NextU64() % 1000) / 1000.0f - 0.5f;
  model.ZeroGrads();
  std::unique_ptr<StageActivations> acts = model.LayersForward(1, 3, batch, x.data());
  std::vector<float> dx(n);
  for (float& v : dx) v = static_cast<float>(rng.NextU64() % 1000) / 1000.0f - 0.5f;
  DeferredWeightGrads deferred;
  model.LayersBackward(1, 3, batch, *acts, dx.data(), nullptr, defer ? &deferred : nullptr);
  if (defer && apply) model.ApplyWeightGrads(batch, *acts, deferred);
  return Gradients{std::vector<float>(model.grads(), model.grads() + model.num_params()), dx};
}

TEST(DeferredWeightGrads, ApplyingThemLaterGivesTheSameBits) {
  ModelConfig c;
  c.vocab_size = 97;
  c.d_model = 48;
  c.n_layers = 4;
  c.n_heads = 4;
  c.n_kv_heads = 2;
  c.ffn_dim = 80;
  std::unique_ptr<Model> model = *Model::Create(c);
  model->InitWeights(7);
  const TokenBatch batch = TokenBatch::FromDocuments({std::vector<int32_t>(70, 3),
                                                      std::vector<int32_t>(1, 5),
                                                      std::vector<int32_t>(33, 9)});
  const Gradients full = StageBackward(*model, batch, /*defer=*/false, false);
  const Gradients later = StageBackward(*model, batch, /*defer=*/true, /*apply=*/true);
  const Gradients held = StageBackward(*model, batch, /*defer=*/true, /*apply=*/false);
  EXPECT_EQ(std::memcmp(full.dx.data(), later.dx.data(), full.dx.size() * sizeof(float)), 0)
      << "the input gradient must not depend on deferring";
  int linear = 0;
  for (const ParamEntry& e : model->layout().entries()) {
    EXPECT_EQ(std::memcmp(full.grads.data() + e.offset, later.grads.data() + e.offset,
                          e.numel * sizeof(float)),
              0)
        << e.name;
    if (e.shape.size() != 2 || e.name.find("layers.") == std::string::npos) continue;
    const bool in_stage = e.name.find("layers.1.") != std::string::npos ||
                          e.name.find("layers.2.") != std::string::npos;
    if (!in_stage) continue;
    ++linear;
    double held_norm = 0.0, full_norm = 0.0;
    for (size_t i = e.offset; i < e.offset + e.numel; ++i) {
      held_norm += std::abs(held.grads[i]);
      full_norm += std::abs(full.grads[i]);
    }
    EXPECT_EQ(held_norm, 0.0) << e.name << " was computed although deferred";
    EXPECT_GT(full_norm, 0.0) << e.name;
  }
  EXPECT_EQ(linear, 14);  // 7 linear layers in each of the stage's 2 layers
}

}  // namespace
}  // namespace loom
