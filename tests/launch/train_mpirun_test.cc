// `loom train` under `mpirun -np 4` with the mpi backend against single-rank training of the same
// config: the balanced hdp planner (rings included) with and without ZeRO-1, the static mesh,
// ChunkFlow chunks (K = 1), and hdp with rings and chunks in one plan; 30 steps each, whose
// losses agree within 1e-4 relative (fp32 reassociation compounds over steps; DESIGN.md
// section 4).
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "absl/strings/str_format.h"
#include "data/prep.h"
#include "launch/trainer.h"
#include "nlohmann/json.hpp"

namespace loom {
namespace {
namespace fs = std::filesystem;

std::vector<nlohmann::json> Metrics(const fs::path& run) {
  std::vector<nlohmann::json> out;
  std::ifstream in(run / "metrics.jsonl");
  for (std::string line; std::getline(in, line);) {
    if (!line.empty()) out.push_back(nlohmann::json::parse(line));
  }
  return out;
}

TEST(TrainMpirunTest, FourProcessesUnderHdpReproduceSingleRankLosses) {
  std::string templ = (fs::temp_directory_path() / "loom_mpirun_XXXXXX").string();
  ASSERT_NE(mkdtemp(templ.data()), nullptr);
  const fs::path root = templ;
  fs::create_directories(root / "corpus");
  const char* words[] = {"a", "ring", "of", "ranks", "passes", "keys", "and", "values", "along"};
  for (int d = 0; d < 60; ++d) {
    std::ofstream f(root / "corpus" / absl::StrFormat("doc%02d.txt", d));
    for (int w = 0; w < 10 + 13 * (d % 23); ++w) f << words[(w * 5 + d) % 9] << (w % 7 ? " " : ".\n");
  }
  PrepOptions prep;
  prep.input = (root / "corpus").string();
  prep.output_dir = (root / "data").string();
  ASSERT_TRUE(PrepareShards(prep).ok());

  ExperimentConfig c;
  c.model.vocab_size = 257;
  c.model.d_model = 32;
  c.model.n_layers = 2;
  c.model.n_heads = 4;
  c.model.n_kv_heads = 2;
  c.model.ffn_dim = 64;
  c.data.train = (root / "data" / "train").string();
  c.data.tokens_per_step = 1024;
  c.data.max_doc_tokens = 256;
  c.schedule.max_lr = 1e-2f;
  c.schedule.min_lr = 1e-3f;
  c.schedule.warmup_steps = 3;
  c.schedule.total_steps = 30;
  c.runtime.threads = 1;
  c.logging.val_every = 0;
  c.checkpoint.every = 0;
  c.logging.run_dir = (root / "single").string();
  const absl::Status single = RunTraining(c, false, nullptr);
  ASSERT_TRUE(single.ok()) << single;

  const auto want = Metrics(root / "single");
  ASSERT_EQ(want.size(), 30u);
  // hdp with a plain gradient all-reduce, then with the optimizer state sharded over the 4
  // processes (ZeRO-1), then the static mesh.
  // Last, a pipeline of 2 stages over 2 HDP replicas (C = 128, so the 2 replicas hold 256-token
  // documents), its schedule chosen every step.
  struct Variant {
    const char* planner;
    int zero;
    int64_t chunk_size = 0;
    int pp = 1;
  };
  for (const Variant& v : {Variant{"hdp", 0}, Variant{"hdp", 1}, Variant{"static", 0},
                           Variant{"chunkflow", 0}, Variant{"hdp", 0, 96},
                           Variant{"hdp", 0, 0, 2}}) {
    const int zero = v.zero;
    const std::string name =
        absl::StrFormat("mpi-%s-zero%d-chunk%d-pp%d", v.planner, zero, v.chunk_size, v.pp);
    SCOPED_TRACE(name);
    c.logging.run_dir = (root / name).string();
    c.parallel.world_size = 4;
    c.parallel.planner = v.planner;
    // Documents of up to 256 tokens need rings of up to 3 ranks (of 2 replicas with pp 2).
    c.parallel.capacity_tokens = v.pp > 1 ? 128 : 96;
    c.parallel.pp = v.pp;
    c.parallel.zero = zero;
    c.parallel.chunk_keep = 1;  // chunks: every chunk but the last recomputed
    c.parallel.chunk_size = v.chunk_size;
    c.runtime.backend = "mpi";
    {
      std::ofstream f(root / (name + ".yaml"));
      f << ExperimentConfigToYaml(c);
    }
    const std::string cmd = absl::StrFormat(
        "OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 mpirun --oversubscribe -np 4 "
        "%s/launch/loom train --config %s 2>&1",
        LOOM_BINARY_DIR, (root / (name + ".yaml")).string());
    FILE* pipe = popen(cmd.c_str(), "r");
    ASSERT_NE(pipe, nullptr);
    std::string output;
    char buf[4096];
    while (fgets(buf, sizeof buf, pipe)) output += buf;
    const int status = pclose(pipe);
    ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << output;

    const auto got = Metrics(root / name);
    ASSERT_EQ(got.size(), want.size()) << output;
    int rings = 0, chunks = 0;
    double worst = 0.0;
    for (size_t i = 0; i < want.size(); ++i) {
      const double w = want[i]["loss"].get<double>();
      const double g = got[i]["loss"].get<double>();
      worst = std::max(worst, std::abs(g - w) / w);
      EXPECT_NEAR(g, w, 1e-4 * w) << "step " << i + 1;
      rings += got[i]["rings"].get<int>();
      chunks += got[i]["chunks"].get<int>();
    }
    if (v.chunk_size > 0 || std::string(v.planner) == "chunkflow") {
      EXPECT_GT(chunks, 0) << "long documents must run as chunks";
    }
    if (std::string(v.planner) == "chunkflow") {
      EXPECT_EQ(rings, 0) << "chunks, not rings";
    } else {
      EXPECT_GT(rings, 0) << "the batches must exercise ring attention across processes";
    }
    EXPECT_LT(got.back()["loss"].get<double>(), want.front()["loss"].get<double>() - 0.5);
    std::printf("30 steps on 4 mpi ranks, %s: %d rings, %d chunks with context, worst loss "
                "difference %.2e relative\n",
                name.c_str(), rings, chunks, worst);
  }
  fs::remove_all(root);
}

}  // namespace
}  // namespace loom
