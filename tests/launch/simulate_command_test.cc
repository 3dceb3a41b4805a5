// `loom simulate` as a user runs it: a small study's table and JSON line, the summary, traces and
// chart it writes, and the errors it reports (with their exit codes).
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <fstream>
#include <string>

#include "launch_test_util.h"
#include "nlohmann/json.hpp"

namespace loom {
namespace {

using ::testing::HasSubstr;
using testing_util::kLoom;
using testing_util::kRepo;
using testing_util::RunShell;
using testing_util::ScratchDir;

constexpr char kStudy[] = R"(reference:
  setting: "small"
  paper_ratio: 1.5
cluster:
  nodes: 2
  gpus_per_node: 8
  gpu: h100-80g
model:
  preset: llama-7b
data:
  lengths: chunkflow
  context_tokens: 65536
train:
  global_batch_tokens: 1048576
  steps: 2
strategies:
  - static
  - megatron-hybrid-cp
  - hdp-naive
  - hdp
  - name: chunkflow
    chunk_size: 8192
    chunk_keep: 2
    recompute: false
    tensor_parallel: 8
  - best
simulate:
  trace_step: 2
  trace_ranks: 4
)";

nlohmann::json LastJsonLine(const std::string& output) {
  const size_t end = output.find_last_not_of('\n');
  const size_t begin = output.rfind('\n', end);
  return nlohmann::json::parse(output.substr(begin == std::string::npos ? 0 : begin + 1));
}

TEST(SimulateCommand, ComparesEveryStrategyAndWritesSummaryTracesAndChart) {
  ScratchDir dir("loom_simulate");
  const std::string config = (dir.path() / "study.yaml").string();
  std::ofstream(config) << kStudy;
  const std::string out = (dir.path() / "out").string();
  const testing_util::Result r = RunShell(kLoom + " simulate --config " + config + " --out " + out);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_THAT(r.output, HasSubstr("simulating 2 step(s) of 2 x 8 h100-80g (16 GPUs)"));
  EXPECT_THAT(r.output, HasSubstr("small: paper 1.50x, loom best"));
  const nlohmann::json summary = LastJsonLine(r.output);
  ASSERT_EQ(summary["strategies"].size(), 6u);
  for (const nlohmann::json& s : summary["strategies"]) {
    SCOPED_TRACE(s["strategy"].get<std::string>());
    ASSERT_FALSE(s.contains("error")) << s["error"];
    EXPECT_GT(s["step_s_median"].get<double>(), 0.0);
    EXPECT_GE(s["step_s_p99"].get<double>(), s["step_s_median"].get<double>());
    EXPECT_GT(s["tokens_per_s"].get<double>(), 0.0);
    EXPECT_GT(s["mfu"].get<double>(), 0.0);
    EXPECT_LT(s["mfu"].get<double>(), 0.5) << "at most the assumed efficiency";
    EXPECT_GE(s["balance"].get<double>(), 1.0);
    EXPECT_GT(s["peak_memory_bytes"].get<int64_t>(), 0);
  }
  EXPECT_EQ(summary["strategies"][0]["speedup_vs_static"].get<double>(), 1.0);
  EXPECT_EQ(summary["strategies"][4]["world_size"].get<int>(), 2) << "chunkflow at TP 8";
  EXPECT_EQ(summary["strategies"][4]["bytes_sent_per_gpu"].get<double>(), 0.0)
      << "chunks send no ring messages";
  EXPECT_EQ(summary["reference"]["loom_ratio"], summary["strategies"][5]["speedup_vs_static"]);
  // The summary file is the JSON line; one trace per strategy of step 2, 4 ranks each, whose
  // slices end by the step's simulated time.
  std::ifstream summary_file(out + "/summary.json");
  EXPECT_EQ(nlohmann::json::parse(summary_file), summary);
  for (const char* name : {"static", "megatron-hybrid-cp", "hdp-naive", "hdp", "chunkflow", "best"}) {
    std::ifstream f(out + "/trace-" + name + ".json");
    ASSERT_TRUE(f.good()) << name;
    const nlohmann::json trace = nlohmann::json::parse(f);
    const double step_us = 1e6 * trace["otherData"]["step_s"].get<double>();
    int slices = 0;
    for (const nlohmann::json& e : trace["traceEvents"]) {
      if (e["ph"] != "X") continue;
      ++slices;
      EXPECT_LT(e["tid"].get<int>(), 4);
      EXPECT_LE(e["ts"].get<double>() + e["dur"].get<double>(), step_us * (1 + 1e-9)) << name;
    }
    EXPECT_GT(slices, 0) << name;
  }
  const testing_util::Result plot =
      RunShell("/usr/bin/python3 " + kRepo + "/scripts/plot_sim.py " + out + "/summary.json " +
               out + "/strategies.png");
  ASSERT_EQ(plot.exit_code, 0) << plot.output;
  EXPECT_GT(std::filesystem::file_size(out + "/strategies.png"), 1000u);
}

TEST(SimulateCommand, ErrorsNameTheCulprit) {
  ScratchDir dir("loom_simulate_bad");
  const std::string config = (dir.path() / "study.yaml").string();
  std::ofstream(config) << "data:\n  lengths: byted\ntrain:\n  global_batch_tokens: 8\n  stepz: 2\n";
  testing_util::Result r = RunShell(kLoom + " simulate --config " + config);
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_THAT(r.output, HasSubstr("study.yaml:5: train.stepz: unknown key; did you mean 'steps'?"));
  r = RunShell(kLoom + " simulate");
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_THAT(r.output, HasSubstr("--config"));
  // A tensor-parallel size no head count divides: every strategy says why, and the run fails.
  std::ofstream(config, std::ios::trunc)
      << "model:\n  tensor_parallel: 4\n  preset: llama-30b\ndata:\n  lengths: byted\ntrain:\n"
         "  global_batch_tokens: 1048576\ncluster:\n  gpus_per_node: 6\n";
  r = RunShell(kLoom + " simulate --config " + config);
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_THAT(r.output, HasSubstr("model.tensor_parallel (4) must divide cluster.gpus_per_node (6)"));
  EXPECT_THAT(r.output, HasSubstr("no strategy can run this setting"));
  // Lengths from a file that is not there.
  std::ofstream(config, std::ios::trunc)
      << "data:\n  lengths_file: /nonexistent/lengths.txt\ntrain:\n  global_batch_tokens: 8\n";
  r = RunShell(kLoom + " simulate --config " + config);
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.output, HasSubstr("data.lengths_file: "));
  EXPECT_THAT(r.output, HasSubstr("/nonexistent/lengths.txt"));
}

}  // namespace
}  // namespace loom
