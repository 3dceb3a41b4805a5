// launch/mpirun.sh, launch/srun.sh and launch/loom.sbatch: a real 2-process run through
// mpirun.sh against 2 local ranks (bit for bit: both backends reduce in rank order), the command
// lines the wrappers build (with MPIRUN / SRUN set to `echo`, so no Slurm is needed), the batch
// template's start-or-resume choice, and syntax checks of all three.
#include <thread>

#include <gtest/gtest.h>

#include "absl/strings/str_split.h"
#include "launch/trainer.h"
#include "tests/launch/launch_test_util.h"

namespace loom {
namespace {
using namespace loom::testing_util;

const std::string kMpirunSh = kRepo + "/launch/mpirun.sh";
const std::string kSrunSh = kRepo + "/launch/srun.sh";
const std::string kSbatch = kRepo + "/launch/loom.sbatch";

TEST(LaunchScriptsTest, MpirunScriptTrainsLikeLocalRanks) {
  ScratchDir scratch("loom_scripts");
  const fs::path& root = scratch.path();
  ASSERT_TRUE(PrepareCorpus(root, 40));
  ExperimentConfig c = TinyConfig(root, "local");
  c.parallel.capacity_tokens = 128;  // documents of up to 256 tokens: rings of 2 ranks
  c.parallel.world_size = 2;
  const absl::Status local = RunTraining(c, false, nullptr);
  ASSERT_TRUE(local.ok()) << local;

  // The file says 1 local rank: the script's -np 2 must turn it into 2 mpi ranks.
  c.parallel.world_size = 1;
  const std::string config = WriteConfig(root / "exp.yaml", c);
  // One core per rank where there are two (the script then binds each rank to its core).
  const char* slots = std::thread::hardware_concurrency() >= 2 ? "" : "--oversubscribe ";
  const Result run = RunShell(absl::StrFormat("%s %s -np 2 %strain --config %s logging.run_dir=%s",
                                              kMpiEnv, kMpirunSh, slots, config,
                                              (root / "mpi").string()));
  ASSERT_EQ(run.exit_code, 0) << run.output;
  EXPECT_NE(run.output.find("world: 2 ranks, mpi backend (openmpi), 1 host"), std::string::npos)
      << run.output;
  EXPECT_NE(run.output.find("rank 1: host "), std::string::npos) << run.output;

  const auto want = Metrics(root / "local");
  const auto got = Metrics(root / "mpi");
  ASSERT_EQ(want.size(), 10u);
  ASSERT_EQ(got.size(), want.size()) << run.output;
  int rings = 0;
  for (size_t i = 0; i < want.size(); ++i) {
    EXPECT_EQ(got[i]["loss"].get<double>(), want[i]["loss"].get<double>()) << "step " << i + 1;
    rings += got[i]["rings"].get<int>();
  }
  EXPECT_GT(rings, 0) << "the run should pass K/V between the two processes";
}

// A stand-in launcher that prints its arguments (echo would take srun's -n as its own flag).
std::string FakeLauncher(const fs::path& dir) {
  const fs::path path = dir / "launcher";
  std::ofstream(path) << "#!/bin/sh\nprintf '%s\\n' \"$*\"\n";
  fs::permissions(path, fs::perms::owner_all);
  return path.string();
}

TEST(LaunchScriptsTest, WrappersPassTheRankCountOnAndEverythingElseThrough) {
  ScratchDir scratch("loom_wrappers");
  const std::string launcher = FakeLauncher(scratch.path());
  const std::string env =
      absl::StrFormat("LOOM_BIN=%s MPIRUN=%s SRUN=%s ", kLoom, launcher, launcher);
  struct Case {
    std::string command;
    std::string want;  // the launcher's arguments, echoed
  };
  const Case cases[] = {
      {kMpirunSh + " -np 3 train --config x.yaml a.b=1",
       "-np 3 --map-by core --bind-to core " + kLoom +
           " train runtime.backend=mpi parallel.world_size=3 --config x.yaml a.b=1"},
      // Placement chosen by the user replaces the default binding; "--" ends mpirun's flags.
      {kMpirunSh + " --oversubscribe -n 5 --host a:5 -- train --config x.yaml",
       "--oversubscribe -n 5 --host a:5 " + kLoom +
           " train runtime.backend=mpi parallel.world_size=5 --config x.yaml"},
      // --resume takes the saved config: no overrides.
      {kMpirunSh + " -np 3 train --resume runs/a",
       "-np 3 --map-by core --bind-to core " + kLoom + " train --resume runs/a"},
      {kMpirunSh + " -np 2 eval --checkpoint c --data d",
       "-np 2 --map-by core --bind-to core " + kLoom + " eval --checkpoint c --data d"},
      {kSrunSh + " -n 4 train --config x.yaml",
       "-n 4 --cpu-bind=cores " + kLoom +
           " train runtime.backend=mpi parallel.world_size=4 --config x.yaml"},
      {kSrunSh + " -N 2 --ntasks-per-node=3 --gpus-per-task=1 --cpu-bind=none train --config g",
       "-N 2 --ntasks-per-node=3 --gpus-per-task=1 --cpu-bind=none " + kLoom +
           " train runtime.backend=mpi parallel.world_size=6 --config g"},
      // Inside a batch job srun starts every task of the allocation.
      {"SLURM_NTASKS=8 " + kSrunSh + " train --config x.yaml",
       "--cpu-bind=cores " + kLoom +
           " train runtime.backend=mpi parallel.world_size=8 --config x.yaml"},
      {"SLURM_NTASKS=8 " + kSrunSh + " train --resume=runs/a",
       "--cpu-bind=cores " + kLoom + " train --resume=runs/a"},
  };
  for (const Case& c : cases) {
    const Result r = RunShell(env + c.command);
    EXPECT_EQ(r.exit_code, 0) << c.command << "\n" << r.output;
    EXPECT_EQ(r.output, c.want + "\n") << c.command;
  }
  const Result no_command = RunShell(env + kMpirunSh + " -np 2");
  EXPECT_EQ(no_command.exit_code, 2);
  EXPECT_NE(no_command.output.find("usage: mpirun.sh"), std::string::npos) << no_command.output;
  const Result no_loom = RunShell("LOOM_BIN=/nonexistent/loom " + kSrunSh + " train --config x");
  EXPECT_EQ(no_loom.exit_code, 2);
  EXPECT_NE(no_loom.output.find("no loom program at /nonexistent/loom"), std::string::npos)
      << no_loom.output;
}

TEST(LaunchScriptsTest, BatchTemplateStartsOrResumes) {
  ScratchDir scratch("loom_sbatch");
  const fs::path run = scratch.path() / "run";
  const std::string env =
      absl::StrFormat("LOOM_BIN=%s SRUN=%s SLURM_SUBMIT_DIR=%s SLURM_NTASKS=8 CONFIG=e.yaml "
                      "RUN_DIR=%s ",
                      kLoom, FakeLauncher(scratch.path()), kRepo, run.string());
  const Result start = RunShell(env + "bash " + kSbatch);
  ASSERT_EQ(start.exit_code, 0) << start.output;
  EXPECT_NE(start.output.find(" train runtime.backend=mpi parallel.world_size=8 --config e.yaml "
                              "logging.run_dir=" + run.string()),
            std::string::npos)
      << start.output;
  // A requeued job finds the checkpoint the first one left.
  fs::create_directories(run / "checkpoints" / "step-00000100");
  const Result resume = RunShell(env + "SLURM_RESTART_COUNT=1 bash " + kSbatch);
  ASSERT_EQ(resume.exit_code, 0) << resume.output;
  EXPECT_NE(resume.output.find("resuming " + run.string()), std::string::npos) << resume.output;
  EXPECT_NE(resume.output.find(" train --resume " + run.string()), std::string::npos)
      << resume.output;
}

TEST(LaunchScriptsTest, ScriptsParse) {
  for (const std::string& script : {kMpirunSh, kSrunSh, kSbatch}) {
    const Result r = RunShell("bash -n " + script);
    EXPECT_EQ(r.exit_code, 0) << script << "\n" << r.output;
  }
  // The batch template's directives are where sbatch looks for them: before the first command.
  std::ifstream in(kSbatch);
  bool command_seen = false;
  int directives = 0;
  for (std::string line; std::getline(in, line);) {
    if (line.rfind("#SBATCH", 0) == 0) {
      EXPECT_FALSE(command_seen) << "sbatch ignores directives after the first command: " << line;
      ++directives;
    } else if (!line.empty() && line[0] != '#') {
      command_seen = true;
    }
  }
  EXPECT_GE(directives, 5);
}

}  // namespace
}  // namespace loom
