// The `loom` program as a user runs it: exit codes, messages on bad input, Ctrl-C during
// training leaving a checkpoint to resume from, and `loom plan` writing plans that read back.
#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <thread>

#include <gtest/gtest.h>

#include "absl/strings/str_format.h"
#include "launch/checkpoint.h"
#include "launch/experiment_config.h"
#include "launch/parallel_setup.h"
#include "nlohmann/json.hpp"
#include "parallel/plan_json.h"
#include "parallel/plan_metrics.h"
#include "parallel/plan_validator.h"

namespace loom {
namespace {
namespace fs = std::filesystem;

const std::string kLoom = std::string(LOOM_BINARY_DIR) + "/launch/loom";

struct Result {
  int exit_code;
  std::string output;  // stdout and stderr
};

Result RunShell(const std::string& command) {
  const std::string cmd = command + " 2>&1";
  FILE* pipe = popen(cmd.c_str(), "r");
  Result r{-1, ""};
  if (pipe == nullptr) return r;
  char buf[4096];
  while (fgets(buf, sizeof buf, pipe)) r.output += buf;
  const int status = pclose(pipe);
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return r;
}

Result RunLoom(const std::string& args) { return RunShell(kLoom + " " + args); }

nlohmann::json ReadJson(const fs::path& path) {
  std::ifstream in(path);
  return nlohmann::json::parse(in, nullptr, /*allow_exceptions=*/false);
}

// The last line of a command's output (the JSON summary commands print).
std::string LastLine(const std::string& output) {
  std::string text = output;
  while (!text.empty() && text.back() == '\n') text.pop_back();
  return text.substr(text.rfind('\n') + 1);
}

class LoomProgramTest : public testing::Test {
 protected:
  void SetUp() override {
    std::string templ = (fs::temp_directory_path() / "loom_program_XXXXXX").string();
    ASSERT_NE(mkdtemp(templ.data()), nullptr);
    root_ = templ;
    fs::create_directories(root_ / "corpus");
    for (int d = 0; d < 30; ++d) {
      std::ofstream f(root_ / "corpus" / absl::StrFormat("%02d.txt", d));
      for (int i = 0; i < 40 + 30 * d; ++i) f << "a quick loom weaves " << (i * d % 5) << ". ";
    }
    std::ofstream(root_ / "exp.yaml") << absl::StrFormat(
        "model: {d_model: 32, n_layers: 2, n_heads: 4, n_kv_heads: 2, ffn_dim: 64}\n"
        "data: {train: %s/data/train, tokens_per_step: 1024, max_doc_tokens: 256}\n"
        "schedule: {warmup_steps: 2, total_steps: 2000}\n"
        "runtime: {threads: 1}\n"
        "logging: {run_dir: %s/run, val_every: 0}\n"
        "checkpoint: {every: 0}\n",
        root_.string(), root_.string());
  }
  void TearDown() override { fs::remove_all(root_); }
  void Prep() {
    const Result prep = RunLoom(absl::StrFormat("prep --input %s/corpus --output %s/data",
                                                root_.string(), root_.string()));
    ASSERT_EQ(prep.exit_code, 0) << prep.output;
  }
  fs::path root_;
};

// Four ranks with C = 64 tokens: the 256-token pieces of the corpus's longer documents need rings.
constexpr char kPlanOverrides[] = "parallel.world_size=4 parallel.capacity_tokens=64";

TEST_F(LoomProgramTest, CtrlCDuringTrainingLeavesAUsableCheckpoint) {
  const Result prep = RunLoom(absl::StrFormat("prep --input %s/corpus --output %s/data",
                                          root_.string(), root_.string()));
  ASSERT_EQ(prep.exit_code, 0) << prep.output;
  EXPECT_NE(prep.output.find("train 30 documents"), std::string::npos) << prep.output;

  const pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    const std::string config = (root_ / "exp.yaml").string();
    const int devnull = ::open("/dev/null", O_WRONLY);
    dup2(devnull, 1);
    execl(kLoom.c_str(), "loom", "train", "--config", config.c_str(), nullptr);
    _exit(127);
  }
  // Interrupt once a few steps are logged, as a user pressing Ctrl-C would.
  const fs::path metrics = root_ / "run" / "metrics.jsonl";
  for (int i = 0; i < 3000; ++i) {
    std::ifstream in(metrics);
    int lines = 0;
    for (std::string line; std::getline(in, line);) ++lines;
    if (lines >= 3) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  ASSERT_EQ(kill(pid, SIGINT), 0);
  int status = 0;
  ASSERT_EQ(waitpid(pid, &status, 0), pid);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 130) << "an interrupted run exits with 128 + SIGINT";
  auto latest = LatestCheckpoint((root_ / "run").string());
  ASSERT_TRUE(latest.ok()) << latest.status();

  const Result shown = RunLoom("inspect " + *latest);
  EXPECT_EQ(shown.exit_code, 0) << shown.output;
  EXPECT_NE(shown.output.find("model.layers.1.mlp.down_proj.weight"), std::string::npos);
  const Result eval = RunLoom(absl::StrFormat("eval --checkpoint %s --data %s/data/train --tokens 2000",
                                          *latest, root_.string()));
  EXPECT_EQ(eval.exit_code, 0) << eval.output;
  EXPECT_NE(eval.output.find("\"loss\":"), std::string::npos) << eval.output;
}

TEST_F(LoomProgramTest, BadInputIsAClearErrorNotACrash) {
  const Result unknown = RunLoom("trian");
  EXPECT_EQ(unknown.exit_code, 2);
  EXPECT_NE(unknown.output.find("unknown command 'trian'"), std::string::npos);
  const Result flag = RunLoom("eval --checkpont x");
  EXPECT_EQ(flag.exit_code, 2);
  EXPECT_NE(flag.output.find("unknown flag --checkpont"), std::string::npos) << flag.output;
  std::ofstream(root_ / "bad.yaml") << "model:\n  n_heads: eight\n";
  const Result config = RunLoom(absl::StrFormat("train --config %s/bad.yaml", root_.string()));
  EXPECT_EQ(config.exit_code, 2);
  EXPECT_NE(config.output.find("bad.yaml:2"), std::string::npos) << config.output;
  EXPECT_NE(config.output.find("model.n_heads"), std::string::npos) << config.output;
  const Result missing = RunLoom(absl::StrFormat("train --config %s/exp.yaml", root_.string()));
  EXPECT_EQ(missing.exit_code, 1);
  EXPECT_NE(missing.output.find("data.train"), std::string::npos) << missing.output;
  const Result shard = RunLoom(absl::StrFormat("inspect %s/exp.yaml", root_.string()));
  EXPECT_EQ(shard.exit_code, 1);
  EXPECT_NE(shard.output.find("exp.yaml"), std::string::npos) << shard.output;
}

TEST_F(LoomProgramTest, PlanWritesPlansThatReadBackAndMatchTheFiguresPrinted) {
  ASSERT_NO_FATAL_FAILURE(Prep());
  const fs::path out = root_ / "plans";
  const Result plan = RunLoom(absl::StrFormat("plan --config %s/exp.yaml --steps 2 --out %s %s",
                                              root_.string(), out.string(), kPlanOverrides));
  ASSERT_EQ(plan.exit_code, 0) << plan.output;
  EXPECT_NE(plan.output.find("scripts/plot_plan.py"), std::string::npos) << plan.output;

  absl::StatusOr<ExperimentConfig> config = LoadExperimentConfig(
      (root_ / "exp.yaml").string(), {"parallel.world_size=4", "parallel.capacity_tokens=64"});
  ASSERT_TRUE(config.ok()) << config.status();
  const CostModel cost = CostModelFromConfig(*config);
  double balance_max = 0.0;
  int rings = 0;
  for (int step = 1; step <= 2; ++step) {
    const nlohmann::json json = ReadJson(out / absl::StrFormat("step-%06d.plan.json", step));
    ASSERT_FALSE(json.is_discarded()) << "step " << step;
    absl::StatusOr<StepPlan> parsed = PlanFromJson(json);
    ASSERT_TRUE(parsed.ok()) << parsed.status();
    EXPECT_EQ(PlanToJson(*parsed), json) << "step " << step;
    EXPECT_EQ(parsed->world_size(), 4);
    EXPECT_TRUE(ValidatePlan(*parsed, cost).ok());
    const PlanMetrics metrics = MeasurePlan(*parsed, cost);
    balance_max = std::max(balance_max, metrics.balance());
    rings += metrics.rings;
    // The step's line shows the balance of the plan written, to the digits printed.
    const std::string prefix = absl::StrFormat("step %d: hdp, %d sequences", step,
                                               parsed->sequences.size());
    const size_t line = plan.output.find(prefix);
    ASSERT_NE(line, std::string::npos) << plan.output;
    const size_t at = plan.output.find("balance ", line);
    ASSERT_NE(at, std::string::npos) << plan.output;
    EXPECT_NEAR(std::stod(plan.output.substr(at + 8, 6)), metrics.balance(), 5e-5) << plan.output;

    const nlohmann::json trace = ReadJson(out / absl::StrFormat("step-%06d.trace.json", step));
    ASSERT_FALSE(trace.is_discarded());
    EXPECT_GT(trace["traceEvents"].size(), 4u);
  }
  EXPECT_GT(rings, 0) << "C = 64 should need rings for 256-token sequences";
  EXPECT_NE(plan.output.find("(sizes "), std::string::npos) << plan.output;
  const nlohmann::json summary = nlohmann::json::parse(LastLine(plan.output), nullptr, false);
  ASSERT_FALSE(summary.is_discarded()) << plan.output;
  EXPECT_EQ(summary["steps"], 2);
  EXPECT_DOUBLE_EQ(summary["balance_max"].get<double>(), balance_max);
  EXPECT_TRUE(summary.contains("plan_ms_median"));
}

TEST_F(LoomProgramTest, PlanErrorsNameTheCulpritAndWriteNothing) {
  const fs::path out = root_ / "plans";
  const std::string plan = absl::StrFormat("plan --config %s/exp.yaml --out %s ", root_.string(),
                                           out.string());
  const Result no_data = RunLoom(plan + kPlanOverrides);
  EXPECT_EQ(no_data.exit_code, 1) << no_data.output;
  EXPECT_NE(no_data.output.find("data.train"), std::string::npos) << no_data.output;
  ASSERT_NO_FATAL_FAILURE(Prep());

  const Result planner = RunLoom(plan + "parallel.planner=balanced");
  EXPECT_EQ(planner.exit_code, 2) << planner.output;
  EXPECT_NE(planner.output.find("parallel.planner"), std::string::npos) << planner.output;
  // 4 ranks x 16 tokens cannot hold a 256-token sequence.
  const Result capacity = RunLoom(plan + "parallel.world_size=4 parallel.capacity_tokens=16");
  EXPECT_EQ(capacity.exit_code, 2) << capacity.output;
  EXPECT_NE(capacity.output.find("parallel.capacity_tokens"), std::string::npos)
      << capacity.output;
  // A static mesh forced to one rank per group cannot hold any sequence longer than C: the error
  // names a sequence and where it comes from.
  const Result too_long = RunLoom(plan + kPlanOverrides +
                                  " parallel.planner=static parallel.cp_size=1");
  EXPECT_EQ(too_long.exit_code, 1) << too_long.output;
  EXPECT_NE(too_long.output.find("sequence"), std::string::npos) << too_long.output;
  EXPECT_NE(too_long.output.find("train_000000.bin"), std::string::npos) << too_long.output;
  const Result usage = RunLoom(plan + "--steps 0");
  EXPECT_EQ(usage.exit_code, 2) << usage.output;
  EXPECT_NE(usage.output.find("--steps"), std::string::npos) << usage.output;
  EXPECT_FALSE(fs::exists(out)) << "a failed plan must leave nothing behind";
}

TEST_F(LoomProgramTest, PlotPlanDrawsATrace) {
  // The interpreter CMake found for the PyTorch tests: Debian's, where python3-matplotlib goes.
  const std::string python = LOOM_TORCH_PYTHON;
  if (RunShell(python + " -c 'import matplotlib'").exit_code != 0) {
    GTEST_SKIP() << python << " has no matplotlib (Debian python3-matplotlib; scripts/setup.sh "
                              "installs it)";
  }
  ASSERT_NO_FATAL_FAILURE(Prep());
  const fs::path out = root_ / "plans";
  const Result plan = RunLoom(absl::StrFormat("plan --config %s/exp.yaml --out %s %s",
                                              root_.string(), out.string(), kPlanOverrides));
  ASSERT_EQ(plan.exit_code, 0) << plan.output;
  const fs::path png = out / "step-000001.png";
  const std::string script = std::string(LOOM_SOURCE_DIR) + "/scripts/plot_plan.py";
  const Result plot = RunShell(absl::StrFormat(
      "%s %s %s %s", python, script, (out / "step-000001.trace.json").string(), png.string()));
  ASSERT_EQ(plot.exit_code, 0) << plot.output;
  std::ifstream in(png, std::ios::binary);
  std::string magic(8, '\0');
  in.read(magic.data(), 8);
  EXPECT_EQ(magic, "\x89PNG\r\n\x1a\n") << "not a PNG: " << png;
  const Result bad = RunShell(
      absl::StrFormat("%s %s %s %s", python, script, (root_ / "exp.yaml").string(), png.string()));
  EXPECT_NE(bad.exit_code, 0);
  EXPECT_NE(bad.output.find("exp.yaml"), std::string::npos) << bad.output;
}

}  // namespace
}  // namespace loom
