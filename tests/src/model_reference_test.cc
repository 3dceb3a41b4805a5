// The whole model against an independent PyTorch implementation (tests/reference/
// model_reference.py) on the same weights and packed batch: loss, every parameter gradient, and
// a 10-step AdamW trajectory with gradient clipping.
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "absl/strings/str_format.h"
#include "nlohmann/json.hpp"
#include "src/adamw.h"
#include "src/grad_clip.h"
#include "src/model.h"
#include "src/random.h"
#include "src/safetensors.h"

namespace loom {
namespace {

constexpr int kSteps = 10;
constexpr float kLr = 1e-3f;
constexpr double kClip = 1.0;

struct Case {
  std::string name;
  ModelConfig config;
  std::vector<int> doc_lengths;
};

ModelConfig SmallConfig() {
  ModelConfig c;
  c.vocab_size = 97;
  c.d_model = 64;
  c.n_layers = 2;
  c.n_heads = 4;
  c.n_kv_heads = 2;
  c.ffn_dim = 160;
  c.rope_theta = 10000.0f;
  return c;
}

std::vector<Case> Cases() {
  std::vector<Case> cases;
  // Several documents, one of 1 token, one longer than any attention block.
  cases.push_back({"packed_gqa", SmallConfig(), {1, 40, 300, 7, 70}});
  ModelConfig mqa = SmallConfig();
  mqa.n_kv_heads = 1;
  mqa.tied_embeddings = true;
  mqa.rope_theta = 500000.0f;
  cases.push_back({"mqa_tied", mqa, {5, 129, 1, 64}});
  cases.push_back({"one_long_document", SmallConfig(), {600}});
  return cases;
}

std::string MakeTempDir(const std::string& tag) {
  std::string templ = (std::filesystem::temp_directory_path() / ("loom_ref_" + tag + "_XXXXXX"));
  char* dir = mkdtemp(templ.data());
  EXPECT_NE(dir, nullptr);
  return templ;
}

TokenBatch RandomBatch(const std::vector<int>& lengths, int vocab, uint64_t seed) {
  Random rng(seed);
  std::vector<std::vector<int32_t>> docs;
  for (int len : lengths) {
    std::vector<int32_t> d(static_cast<size_t>(len));
    for (int32_t& t : d) t = static_cast<int32_t>(rng.NextU64() % static_cast<uint64_t>(vocab));
    docs.push_back(std::move(d));
  }
  return TokenBatch::FromDocuments(docs);
}

void WriteInputs(const std::string& dir, const Model& model, const TokenBatch& b,
                 const AdamWConfig& opt) {
  const ModelConfig& c = model.config();
  nlohmann::json cfg = {{"vocab_size", c.vocab_size}, {"d_model", c.d_model},
                        {"n_layers", c.n_layers},     {"n_heads", c.n_heads},
                        {"n_kv_heads", c.n_kv_heads}, {"ffn_dim", c.ffn_dim},
                        {"rope_theta", c.rope_theta}, {"norm_eps", c.norm_eps},
                        {"tied_embeddings", c.tied_embeddings}};
  cfg["adamw"] = {{"lr", kLr},          {"beta1", opt.beta1}, {"beta2", opt.beta2},
                  {"eps", opt.eps},     {"weight_decay", opt.weight_decay},
                  {"steps", kSteps},    {"clip", kClip}};
  std::ofstream(dir + "/config.json") << cfg.dump(2);
  std::vector<TensorRef> weights;
  for (const ParamEntry& e : model.layout().entries()) {
    weights.push_back({e.name, DType::kF32, e.shape, model.params() + e.offset});
  }
  ASSERT_TRUE(WriteSafetensors(dir + "/weights.safetensors", weights).ok());
  const std::vector<int64_t> shape = {b.size()};
  ASSERT_TRUE(WriteSafetensors(dir + "/batch.safetensors",
                               {{"tokens", DType::kI32, shape, b.tokens.data()},
                                {"targets", DType::kI32, shape, b.targets.data()},
                                {"doc", DType::kI32, shape, b.doc.data()},
                                {"pos", DType::kI32, shape, b.pos.data()}})
                  .ok());
}

double RelError(const float* got, const std::vector<float>& want) {
  double diff = 0.0, ref = 0.0;
  for (size_t i = 0; i < want.size(); ++i) {
    diff += (static_cast<double>(got[i]) - want[i]) * (static_cast<double>(got[i]) - want[i]);
    ref += static_cast<double>(want[i]) * want[i];
  }
  return ref == 0.0 ? std::sqrt(diff) : std::sqrt(diff / ref);
}

class ModelReference : public testing::TestWithParam<Case> {};

TEST_P(ModelReference, LossGradientsAndTrajectoryMatchPyTorch) {
  const Case& tc = GetParam();
  auto created = Model::Create(tc.config);
  ASSERT_TRUE(created.ok()) << created.status();
  Model& model = **created;
  model.InitWeights(1234);
  const TokenBatch batch = RandomBatch(tc.doc_lengths, tc.config.vocab_size, 99);
  ASSERT_TRUE(batch.Validate(tc.config.vocab_size).ok());
  const AdamWConfig opt;
  const std::string dir = MakeTempDir(tc.name);
  WriteInputs(dir, model, batch, opt);

  const std::string cmd = absl::StrFormat("'%s' '%s/tests/reference/model_reference.py' --dir '%s'",
                                          LOOM_TORCH_PYTHON, LOOM_SOURCE_DIR, dir);
  ASSERT_EQ(std::system(cmd.c_str()), 0) << "reference script failed: " << cmd;
  auto ref = SafetensorsFile::Read(dir + "/reference.safetensors");
  ASSERT_TRUE(ref.ok()) << ref.status();

  const int64_t n_targets = batch.num_targets();
  const float scale = n_targets > 0 ? 1.0f / static_cast<float>(n_targets) : 0.0f;
  model.ZeroGrads();
  const double loss_sum = model.ForwardBackward(batch, scale);
  const std::vector<double> ref_loss = *ref->F64("loss_sum");
  EXPECT_NEAR(loss_sum, ref_loss[0], 1e-5 * std::abs(ref_loss[0])) << "loss sum";
  double worst_grad = 0.0;
  for (const ParamEntry& e : model.layout().entries()) {
    auto want = ref->F32("grad." + e.name, e.shape);
    ASSERT_TRUE(want.ok()) << want.status();
    const double err = RelError(model.grads() + e.offset, *want);
    EXPECT_LE(err, 1e-4) << e.name;
    worst_grad = std::max(worst_grad, err);
  }

  std::printf("[%s] loss rel err %.2e, worst gradient rel err %.2e\n", tc.name.c_str(),
              std::abs(loss_sum - ref_loss[0]) / std::abs(ref_loss[0]), worst_grad);
  AdamW adamw(model.layout(), opt);
  const std::vector<double> trajectory = *ref->F64("trajectory");
  ASSERT_EQ(trajectory.size(), static_cast<size_t>(kSteps));
  double worst_step = 0.0;
  for (int step = 0; step < kSteps; ++step) {
    model.ZeroGrads();
    const double loss = model.ForwardBackward(batch, scale);
    ClipGradNorm(model.grads(), model.num_params(), kClip);
    adamw.Step(model.params(), model.grads(), kLr);
    const double want = trajectory[static_cast<size_t>(step)];
    EXPECT_NEAR(loss, want, 1e-4 * std::abs(want)) << "step " << step;
    worst_step = std::max(worst_step, std::abs(loss - want) / std::abs(want));
  }
  std::printf("[%s] %d AdamW steps: loss %.4f -> %.4f, worst rel err %.2e\n", tc.name.c_str(),
              kSteps, trajectory.front() / n_targets, trajectory.back() / n_targets, worst_step);
  EXPECT_LT(trajectory.back(), trajectory.front()) << "the reference run should learn";
  std::filesystem::remove_all(dir);
}

INSTANTIATE_TEST_SUITE_P(Models, ModelReference, testing::ValuesIn(Cases()),
                         [](const testing::TestParamInfo<Case>& info) { return info.param.name; });

TEST(ModelEdgeCases, SingleOneTokenDocumentHasNoLossAndNoGradient) {
  auto model = Model::Create(SmallConfig());
  ASSERT_TRUE(model.ok());
  (*model)->InitWeights(7);
  const TokenBatch batch = TokenBatch::FromDocuments({{42}});
  EXPECT_EQ(batch.num_targets(), 0);
  (*model)->ZeroGrads();
  EXPECT_EQ((*model)->ForwardBackward(batch, 0.0f), 0.0);
  for (size_t i = 0; i < (*model)->num_params(); ++i) {
    ASSERT_EQ((*model)->grads()[i], 0.0f) << "parameter element " << i;
  }
}

TEST(ModelConfigValidation, NamesTheOffendingField) {
  struct Bad {
    void (*mutate)(ModelConfig&);
    const char* field;
  } bad[] = {
      {[](ModelConfig& c) { c.d_model = 65; }, "model.d_model"},
      {[](ModelConfig& c) { c.n_kv_heads = 3; }, "model.n_kv_heads"},
      {[](ModelConfig& c) { c.d_model = 12, c.n_heads = 4; }, "odd"},
      {[](ModelConfig& c) { c.vocab_size = 0; }, "model.vocab_size"},
      {[](ModelConfig& c) { c.n_layers = 0; }, "model.n_layers"},
      {[](ModelConfig& c) { c.ffn_dim = -1; }, "model.ffn_dim"},
      {[](ModelConfig& c) { c.rope_theta = 0; }, "model.rope_theta"},
  };
  for (const Bad& b : bad) {
    ModelConfig c = SmallConfig();
    b.mutate(c);
    const absl::Status s = c.Validate();
    EXPECT_FALSE(s.ok());
    EXPECT_NE(s.message().find(b.field), std::string::npos) << s.message();
    EXPECT_FALSE(Model::Create(c).ok());
  }
  EXPECT_TRUE(SmallConfig().Validate().ok());
}

}  // namespace
}  // namespace loom
