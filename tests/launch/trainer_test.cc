// The training loop end to end on a small corpus: the loss falls, checkpoints are complete and
// loadable, a resumed run repeats the losses of an uninterrupted one bit for bit, and a stop
// request leaves a checkpoint behind.
#include "launch/trainer.h"

#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <thread>

#include <gtest/gtest.h>

#include "absl/strings/str_format.h"
#include "data/prep.h"
#include "launch/evaluate.h"
#include "nlohmann/json.hpp"

namespace loom {
namespace {
namespace fs = std::filesystem;

class TrainerTest : public testing::Test {
 protected:
  void SetUp() override {
    std::string templ = (fs::temp_directory_path() / "loom_trainer_XXXXXX").string();
    ASSERT_NE(mkdtemp(templ.data()), nullptr);
    root_ = templ;
    fs::create_directories(root_ / "corpus");
    // Repetitive English-like text with documents of varied length: learnable in a few steps.
    const char* words[] = {"the", "loom", "weaves", "long", "threads", "into", "cloth", "and",
                           "short", "ones", "too"};
    for (int d = 0; d < 40; ++d) {
      std::ofstream f(root_ / "corpus" / absl::StrFormat("doc%02d.txt", d));
      for (int w = 0; w < 20 + 17 * d; ++w) f << words[(w * 7 + d) % 11] << (w % 9 ? " " : ".\n");
    }
    PrepOptions prep;
    prep.input = (root_ / "corpus").string();
    prep.output_dir = (root_ / "data").string();
    prep.val_fraction = 0.1;
    ASSERT_TRUE(PrepareShards(prep).ok());
  }
  void TearDown() override { fs::remove_all(root_); }

  ExperimentConfig Config(const std::string& run) {
    ExperimentConfig c;
    c.model.vocab_size = 257;
    c.model.d_model = 32;
    c.model.n_layers = 2;
    c.model.n_heads = 4;
    c.model.n_kv_heads = 2;
    c.model.ffn_dim = 64;
    c.data.train = (root_ / "data" / "train").string();
    c.data.val = (root_ / "data" / "val").string();
    c.data.tokens_per_step = 1024;
    c.data.max_doc_tokens = 256;
    c.schedule.max_lr = 1e-2f;
    c.schedule.min_lr = 1e-3f;
    c.schedule.warmup_steps = 2;
    c.schedule.total_steps = 8;
    c.runtime.threads = 2;
    c.logging.run_dir = (root_ / run).string();
    c.logging.val_every = 4;
    c.logging.val_tokens = 512;
    c.checkpoint.every = 4;
    c.checkpoint.keep_last = 5;
    return c;
  }

  // `ranks` local ranks under the balanced hdp planner with C small enough for rings.
  static ExperimentConfig MultiRank(ExperimentConfig c, int ranks, int zero) {
    c.parallel.world_size = ranks;
    c.parallel.capacity_tokens = 128;
    c.parallel.zero = zero;
    return c;
  }

  void ExpectResumeRepeatsLosses(const ExperimentConfig& full_config,
                                 const ExperimentConfig& part_config);

  static std::vector<nlohmann::json> Metrics(const fs::path& run) {
    std::vector<nlohmann::json> out;
    std::ifstream in(run / "metrics.jsonl");
    for (std::string line; std::getline(in, line);) out.push_back(nlohmann::json::parse(line));
    return out;
  }

  fs::path root_;
};

TEST_F(TrainerTest, LossFallsAndEveryMetricIsRecorded) {
  const absl::Status s = RunTraining(Config("run"), false, nullptr);
  ASSERT_TRUE(s.ok()) << s;
  const auto m = Metrics(root_ / "run");
  ASSERT_EQ(m.size(), 8u);
  for (const char* key : {"step", "loss", "lr", "grad_norm", "tokens", "tokens_per_s",
                          "peak_mem_bytes"}) {
    EXPECT_TRUE(m.back().contains(key)) << key;
  }
  EXPECT_TRUE(m[3].contains("val_loss"));
  EXPECT_LT(m.back()["loss"].get<double>(), m.front()["loss"].get<double>() - 0.5)
      << "8 steps on repetitive text should lower the loss clearly";
  EXPECT_TRUE(fs::exists(root_ / "run" / "config.yaml"));
  auto latest = LatestCheckpoint((root_ / "run").string());
  ASSERT_TRUE(latest.ok()) << latest.status();
  EXPECT_EQ(fs::path(*latest).filename(), "step-00000008");
  EXPECT_TRUE(fs::exists(fs::path(*latest) / "config.json"));
}

TEST_F(TrainerTest, ResumedRunRepeatsLossesBitForBit) {
  ExpectResumeRepeatsLosses(Config("full"), Config("part"));
}

// The same with 3 ranks, rings and the optimizer state sharded over the ranks: the gathered
// checkpoint must restore every shard.
TEST_F(TrainerTest, ShardedMultiRankRunResumesBitForBit) {
  ExpectResumeRepeatsLosses(MultiRank(Config("full"), 3, 1), MultiRank(Config("part"), 3, 1));
}

void TrainerTest::ExpectResumeRepeatsLosses(const ExperimentConfig& full_config,
                                            const ExperimentConfig& part_config) {
  ASSERT_TRUE(RunTraining(full_config, false, nullptr).ok());
  const auto want = Metrics(full_config.logging.run_dir);

  // The same run, stopped after its step-4 checkpoint: drop the later checkpoint, then resume.
  const fs::path part = part_config.logging.run_dir;
  ASSERT_TRUE(RunTraining(part_config, false, nullptr).ok());
  fs::remove_all(part / "checkpoints" / "step-00000008");
  absl::StatusOr<ExperimentConfig> saved = LoadRunConfig(part.string());
  ASSERT_TRUE(saved.ok()) << saved.status();
  const absl::Status resumed = RunTraining(*saved, true, nullptr);
  ASSERT_TRUE(resumed.ok()) << resumed;
  const auto got = Metrics(part);
  ASSERT_EQ(got.size(), want.size()) << "metrics of recomputed steps must replace, not repeat";
  for (size_t i = 0; i < want.size(); ++i) {
    EXPECT_EQ(got[i]["step"], want[i]["step"]);
    // Exact equality: the same bits, not merely close.
    EXPECT_EQ(got[i]["loss"].get<double>(), want[i]["loss"].get<double>()) << "step " << i + 1;
    EXPECT_EQ(got[i]["grad_norm"].get<double>(), want[i]["grad_norm"].get<double>());
  }
}

// Several local ranks under each planner (and with ZeRO-1, and ChunkFlow chunks with K = 1) train
// the same model as one rank: the same losses up to fp32 reassociation, step after step.
TEST_F(TrainerTest, MultiRankRunsMatchSingleRankLosses) {
  ASSERT_TRUE(RunTraining(Config("single"), false, nullptr).ok());
  const auto want = Metrics(root_ / "single");
  struct Variant {
    const char* name;
    int ranks;
    const char* planner;
    int zero;
    int chunk_keep = 0;
    int pp = 1;
    const char* schedule = "auto";
  };
  for (const Variant& v : {Variant{"hdp4", 4, "hdp", 0}, Variant{"naive3", 3, "naive_hdp", 0},
                           Variant{"static4", 4, "static", 0}, Variant{"zero3", 3, "hdp", 1},
                           Variant{"chunks2", 2, "chunkflow", 0, 1},
                           // Pipelines of 2 stages: over 2 HDP replicas with rings, with ZeRO-1,
                           // and over ChunkFlow's dependent chunks.
                           Variant{"pp2_zb", 4, "hdp", 0, 0, 2, "zb-h1"},
                           Variant{"pp2_zero", 4, "hdp", 1, 0, 2, "auto"},
                           Variant{"pp2_chunks", 2, "chunkflow", 0, 1, 2, "1f1b"}}) {
    SCOPED_TRACE(v.name);
    ExperimentConfig c = MultiRank(Config(v.name), v.ranks, v.zero);
    c.parallel.planner = v.planner;
    c.parallel.chunk_keep = v.chunk_keep;
    c.parallel.pp = v.pp;
    c.parallel.pipeline_schedule = v.schedule;
    const absl::Status s = RunTraining(c, false, nullptr);
    ASSERT_TRUE(s.ok()) << s;
    const auto got = Metrics(root_ / v.name);
    ASSERT_EQ(got.size(), want.size());
    int rings = 0;
    for (size_t i = 0; i < want.size(); ++i) {
      const double w = want[i]["loss"].get<double>();
      EXPECT_NEAR(got[i]["loss"].get<double>(), w, 1e-4 * w) << "step " << i + 1;
      rings += got[i]["rings"].get<int>();
      if (v.pp > 1) {
        EXPECT_TRUE(got[i].contains("schedule") && got[i].contains("bubble")) << got[i].dump();
      }
    }
    // Chunks instead of rings: documents over C = 128 tokens run as dependent chunks.
    if (std::string(v.planner) == "chunkflow") {
      EXPECT_EQ(rings, 0);
    } else {
      EXPECT_GT(rings, 0) << "C = 128 with documents up to 256 tokens must make rings";
    }
  }
}

TEST_F(TrainerTest, StopRequestWritesACheckpointAndResumeFinishes) {
  ExperimentConfig c = Config("stopped");
  c.checkpoint.every = 0;  // only the stop and the end write checkpoints
  std::atomic<bool> stop{false};
  std::thread watcher([&] {
    // Ask to stop once two steps are logged, as SIGINT would.
    for (int i = 0; i < 6000 && Metrics(root_ / "stopped").size() < 2; ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    stop = true;
  });
  const absl::Status s = RunTraining(c, false, &stop);
  watcher.join();
  ASSERT_TRUE(s.ok()) << s;
  const int64_t stopped_at = static_cast<int64_t>(Metrics(root_ / "stopped").size());
  EXPECT_GE(stopped_at, 2);
  EXPECT_LT(stopped_at, 8);
  auto latest = LatestCheckpoint((root_ / "stopped").string());
  ASSERT_TRUE(latest.ok());
  EXPECT_EQ(fs::path(*latest).filename(), absl::StrFormat("step-%08d", stopped_at));
  const absl::Status resumed = RunTraining(*LoadRunConfig((root_ / "stopped").string()), true,
                                          nullptr);
  ASSERT_TRUE(resumed.ok()) << resumed;
  EXPECT_EQ(Metrics(root_ / "stopped").size(), 8u);
}

TEST_F(TrainerTest, RefusesToOverwriteARunAndNamesMissingData) {
  ASSERT_TRUE(RunTraining(Config("run"), false, nullptr).ok());
  // Rank 0 owns the run folder; the other ranks must learn of its failure and not wait.
  const absl::Status again = RunTraining(MultiRank(Config("run"), 2, 0), false, nullptr);
  ASSERT_FALSE(again.ok());
  EXPECT_NE(again.message().find("--resume"), std::string::npos) << again;

  ExperimentConfig bad = Config("other");
  bad.data.train = (root_ / "nowhere" / "train").string();
  const absl::Status missing = RunTraining(bad, false, nullptr);
  ASSERT_FALSE(missing.ok());
  EXPECT_NE(missing.message().find("data.train"), std::string::npos) << missing;
}

TEST_F(TrainerTest, DamagedCheckpointIsSkippedForTheLastGoodOne) {
  ASSERT_TRUE(RunTraining(Config("run"), false, nullptr).ok());
  const fs::path newest = root_ / "run" / "checkpoints" / "step-00000008";
  fs::resize_file(newest / "model.safetensors", 100);
  EXPECT_FALSE(VerifyCheckpoint(newest.string()).ok());
  auto latest = LatestCheckpoint((root_ / "run").string());
  ASSERT_TRUE(latest.ok());
  EXPECT_EQ(fs::path(*latest).filename(), "step-00000004");
}

}  // namespace
}  // namespace loom
