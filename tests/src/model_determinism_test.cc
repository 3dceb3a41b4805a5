// Bit-exact resumption and reproducible runs rest on the step being deterministic: the same
// weights and batch must give the same loss and gradients bit for bit, call after call.
#include <cstring>
#include <vector>

#include <gtest/gtest.h>

#include "src/model.h"
#include "src/random.h"

namespace loom {
namespace {

TEST(ModelDeterminism, RepeatedStepsGiveIdenticalBits) {
  ModelConfig c;
  c.vocab_size = 257;
  c.d_model = 64;
  c.n_layers = 2;
  c.n_heads = 4;
  c.n_kv_heads = 2;
  c.ffn_dim = 128;
  auto model = std::move(Model::Create(c)).value();
  model->InitWeights(3);
  Random rng(5);
  std::vector<std::vector<int32_t>> docs;
  for (int len : {300, 1, 57, 180, 500}) {
    std::vector<int32_t> d(static_cast<size_t>(len));
    for (int32_t& t : d) t = static_cast<int32_t>(rng.NextU64() % 257);
    docs.push_back(d);
  }
  const TokenBatch batch = TokenBatch::FromDocuments(docs);
  model->ZeroGrads();
  const double first_loss = model->ForwardBackward(batch, 1e-3f);
  const std::vector<float> first(model->grads(), model->grads() + model->num_params());
  for (int rep = 0; rep < 5; ++rep) {
    model->ZeroGrads();
    ASSERT_EQ(model->ForwardBackward(batch, 1e-3f), first_loss) << "repeat " << rep;
    for (const ParamEntry& e : model->layout().entries()) {
      EXPECT_EQ(std::memcmp(model->grads() + e.offset, first.data() + e.offset,
                            e.numel * sizeof(float)),
                0)
          << e.name << " differs on repeat " << rep;
    }
  }
}

}  // namespace
}  // namespace loom
