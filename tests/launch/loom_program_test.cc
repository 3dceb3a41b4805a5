// The `loom` program as a user runs it: exit codes, messages on bad input, and Ctrl-C during
// training leaving a checkpoint to resume from.
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

namespace loom {
namespace {
namespace fs = std::filesystem;

const std::string kLoom = std::string(LOOM_BINARY_DIR) + "/launch/loom";

struct Result {
  int exit_code;
  std::string output;  // stdout and stderr
};

Result RunLoom(const std::string& args) {
  const std::string cmd = kLoom + " " + args + " 2>&1";
  FILE* pipe = popen(cmd.c_str(), "r");
  Result r{-1, ""};
  if (pipe == nullptr) return r;
  char buf[4096];
  while (fgets(buf, sizeof buf, pipe)) r.output += buf;
  const int status = pclose(pipe);
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return r;
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
  fs::path root_;
};

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

}  // namespace
}  // namespace loom
