// A checkpoint is usable outside loom: PyTorch code that knows only the Hugging Face config.json
// and the safetensors names computes the same loss as `loom eval` on the same tokens.
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>

#include <gtest/gtest.h>

#include "absl/strings/str_format.h"
#include "data/prep.h"
#include "launch/checkpoint.h"
#include "launch/evaluate.h"
#include "launch/trainer.h"
#include "nlohmann/json.hpp"
#include "src/safetensors.h"

namespace loom {
namespace {
namespace fs = std::filesystem;

TEST(CheckpointReference, PyTorchComputesTheSameLossAsLoomEval) {
  std::string templ = (fs::temp_directory_path() / "loom_ckref_XXXXXX").string();
  ASSERT_NE(mkdtemp(templ.data()), nullptr);
  const fs::path root = templ;
  fs::create_directories(root / "corpus");
  for (int d = 0; d < 12; ++d) {
    std::ofstream f(root / "corpus" / absl::StrFormat("d%d.txt", d));
    for (int i = 0; i < 30 + 25 * d; ++i) f << "checkpoint " << (i * d % 7) << " reads back. ";
  }
  PrepOptions prep;
  prep.input = (root / "corpus").string();
  prep.output_dir = (root / "data").string();
  prep.val_fraction = 0.25;
  ASSERT_TRUE(PrepareShards(prep).ok());

  ExperimentConfig c;
  c.model.d_model = 32;
  c.model.n_layers = 2;
  c.model.n_heads = 4;
  c.model.n_kv_heads = 1;
  c.model.ffn_dim = 64;
  c.model.tied_embeddings = true;
  c.data.train = (root / "data" / "train").string();
  c.data.tokens_per_step = 512;
  c.data.max_doc_tokens = 200;
  c.schedule.warmup_steps = 1;
  c.schedule.total_steps = 3;
  c.logging.run_dir = (root / "run").string();
  c.logging.val_every = 0;
  const absl::Status trained = RunTraining(c, false, nullptr);
  ASSERT_TRUE(trained.ok()) << trained;
  auto ckpt = LatestCheckpoint(c.logging.run_dir);
  ASSERT_TRUE(ckpt.ok()) << ckpt.status();

  // loom eval's path: config.json -> model, weights, evaluation batches of the validation data.
  auto mc = ReadCheckpointModelConfig(*ckpt);
  ASSERT_TRUE(mc.ok()) << mc.status();
  auto model = Model::Create(*mc);
  ASSERT_TRUE(model.ok());
  ASSERT_TRUE(ReadCheckpointWeights(*ckpt, **model).ok());
  auto shards = ResolveShards((root / "data" / "val").string(), "val");
  ASSERT_TRUE(shards.ok()) << shards.status();
  DatasetOptions options;
  options.vocab_size = mc->vocab_size;
  options.eot_token = 256;
  auto val = TokenDataset::Open(*shards, options);
  ASSERT_TRUE(val.ok()) << val.status();
  const std::vector<TokenBatch> batches = EvalBatches(*val, EvalOptions{3000, 200, 100000});
  ASSERT_EQ(batches.size(), 1u);
  const TokenBatch& b = batches[0];
  const EvalResult loom = Evaluate(**model, batches);
  ASSERT_GT(loom.targets, 100);

  const std::string batch_path = (root / "batch.safetensors").string();
  const std::vector<int64_t> shape = {b.size()};
  ASSERT_TRUE(WriteSafetensors(batch_path, {{"tokens", DType::kI32, shape, b.tokens.data()},
                                            {"targets", DType::kI32, shape, b.targets.data()},
                                            {"doc", DType::kI32, shape, b.doc.data()},
                                            {"pos", DType::kI32, shape, b.pos.data()}})
                  .ok());
  const std::string cmd = absl::StrFormat(
      "'%s' '%s/tests/reference/model_reference.py' --checkpoint '%s' --batch '%s'",
      LOOM_TORCH_PYTHON, LOOM_SOURCE_DIR, *ckpt, batch_path);
  FILE* pipe = popen(cmd.c_str(), "r");
  ASSERT_NE(pipe, nullptr);
  std::string out;
  char buf[512];
  while (fgets(buf, sizeof buf, pipe)) out += buf;
  ASSERT_EQ(pclose(pipe), 0) << cmd << "\n" << out;
  const nlohmann::json ref = nlohmann::json::parse(out);
  EXPECT_EQ(ref["targets"].get<int64_t>(), loom.targets);
  const double ref_loss = ref["loss_sum"].get<double>() / loom.targets;
  EXPECT_NEAR(loom.mean_loss(), ref_loss, 1e-5 * ref_loss);
  std::printf("loom eval %.7f, PyTorch %.7f on %lld targets\n", loom.mean_loss(), ref_loss,
              static_cast<long long>(loom.targets));
  fs::remove_all(root);
}

}  // namespace
}  // namespace loom
