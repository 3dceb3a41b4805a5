// Faults a real run meets: a rank killed mid-run under mpirun (the job ends within the timeout,
// names the rank and leaves no process behind; --resume then repeats the uninterrupted run's
// losses bit for bit), damaged checkpoints (passed over with a warning naming the file), and a
// checkpoint folder that cannot be written, by permissions or a full disk (a clear error, the
// previous checkpoint intact).
#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <optional>
#include <thread>

#include <gtest/gtest.h>

#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#include "launch/checkpoint.h"
#include "launch/trainer.h"
#include "tests/launch/launch_test_util.h"

namespace loom {
namespace {
using namespace loom::testing_util;
using Clock = std::chrono::steady_clock;

std::string ReadAll(const fs::path& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::string CheckpointDir(const std::string& run, int64_t step) {
  return absl::StrFormat("%s/checkpoints/step-%08d", run, step);
}

// Processes whose parent is `parent`, with their OMPI_COMM_WORLD_RANK (-1 if none).
std::vector<std::pair<pid_t, int>> MpiChildren(pid_t parent) {
  std::vector<std::pair<pid_t, int>> out;
  for (const auto& entry : fs::directory_iterator("/proc")) {
    pid_t pid = 0;
    if (!absl::SimpleAtoi(entry.path().filename().string(), &pid)) continue;
    // /proc/PID/stat: "pid (comm) state ppid ..."; comm may hold spaces, so read after ')'.
    const std::string stat = ReadAll(entry.path() / "stat");
    const size_t close = stat.rfind(')');
    if (close == std::string::npos) continue;
    const std::vector<std::string> fields = absl::StrSplit(stat.substr(close + 2), ' ');
    pid_t ppid = 0;
    if (fields.size() < 2 || !absl::SimpleAtoi(fields[1], &ppid) || ppid != parent) continue;
    int rank = -1;
    for (absl::string_view var : absl::StrSplit(ReadAll(entry.path() / "environ"), '\0')) {
      if (absl::ConsumePrefix(&var, "OMPI_COMM_WORLD_RANK=")) (void)absl::SimpleAtoi(var, &rank);
    }
    out.emplace_back(pid, rank);
  }
  return out;
}

// Gone, or a zombie waiting for init to reap it: either way no longer running.
bool Running(pid_t pid) {
  const std::string stat = ReadAll(absl::StrFormat("/proc/%d/stat", pid));
  const size_t close = stat.rfind(')');
  return close != std::string::npos && stat.size() > close + 2 && stat[close + 2] != 'Z';
}

// `launch/mpirun.sh -np 3 --oversubscribe train --config CONFIG` in its own process group (so a
// failing test can still end the whole job), its output in a file.
class MpiJob {
 public:
  MpiJob(const std::string& config, const std::string& log) : log_(log) {
    pid_ = fork();
    if (pid_ != 0) return;
    setpgid(0, 0);
    const int out = ::open(log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    dup2(out, 1);
    dup2(out, 2);
    setenv("LOOM_BIN", kLoom.c_str(), 1);
    const std::string script = kRepo + "/launch/mpirun.sh";
    execl("/bin/bash", "bash", script.c_str(), "-np", "3", "--oversubscribe", "train", "--config",
          config.c_str(), nullptr);
    _exit(127);
  }
  ~MpiJob() {
    if (!exited_ && pid_ > 0) {
      kill(-pid_, SIGKILL);
      waitpid(pid_, nullptr, 0);
    }
  }
  pid_t pid() const { return pid_; }
  std::string output() const { return ReadAll(log_); }

  // Until metrics.jsonl of `run` has `steps` lines; false if mpirun ends first or 60 s pass.
  bool WaitForSteps(const std::string& run, size_t steps) {
    const auto start = Clock::now();
    while (Metrics(run).size() < steps) {
      if (waitpid(pid_, &status_, WNOHANG) == pid_) exited_ = true;
      if (exited_ || Clock::now() - start > std::chrono::seconds(60)) return false;
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    return true;
  }

  // The loom processes mpirun started, with their ranks.
  std::vector<std::pair<pid_t, int>> Ranks() const { return MpiChildren(pid_); }

  // Waits up to `limit` for mpirun to end; its wait status, or nullopt if it did not end.
  std::optional<int> WaitExit(std::chrono::seconds limit) {
    const auto start = Clock::now();
    while (!exited_) {
      if (waitpid(pid_, &status_, WNOHANG) == pid_) exited_ = true;
      if (!exited_ && Clock::now() - start > limit) return std::nullopt;
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    return status_;
  }

 private:
  std::string log_;
  pid_t pid_ = -1;
  int status_ = 0;
  bool exited_ = false;
};

// Every one of `ranks` has ended, allowing a moment for the launcher to reap them.
void ExpectAllEnded(const std::vector<std::pair<pid_t, int>>& ranks) {
  for (int i = 0; i < 200; ++i) {
    bool any = false;
    for (const auto& [pid, rank] : ranks) any = any || Running(pid);
    if (!any) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  for (const auto& [pid, rank] : ranks) EXPECT_FALSE(Running(pid)) << "rank " << rank << " left";
}

// The pid of `rank` among mpirun's children, or 0.
pid_t PidOfRank(const std::vector<std::pair<pid_t, int>>& ranks, int rank) {
  for (const auto& [pid, r] : ranks) {
    if (r == rank) return pid;
  }
  return 0;
}

TEST(FaultsTest, KilledRankEndsTheJobAndResumeRepeatsTheLosses) {
  ScratchDir scratch("loom_kill");
  const fs::path& root = scratch.path();
  ASSERT_TRUE(PrepareCorpus(root, 40));
  ExperimentConfig c = TinyConfig(root, "reference");
  c.parallel.world_size = 3;
  c.schedule.total_steps = 80;
  c.checkpoint.every = 4;
  c.runtime.timeout_s = 10;
  const absl::Status reference = RunTraining(c, false, nullptr);  // 3 local ranks: same bits
  ASSERT_TRUE(reference.ok()) << reference;
  c.runtime.backend = "mpi";
  c.logging.run_dir = (root / "killed").string();
  MpiJob job(WriteConfig(root / "exp.yaml", c), (root / "killed.out").string());
  ASSERT_GT(job.pid(), 0);
  // Kill rank 1 once a checkpoint exists (step 4) and a few steps more have run.
  ASSERT_TRUE(job.WaitForSteps(c.logging.run_dir, 6)) << job.output();
  const std::vector<std::pair<pid_t, int>> ranks = job.Ranks();
  ASSERT_EQ(ranks.size(), 3u) << "mpirun (pid " << job.pid() << ") should start 3 processes";
  ASSERT_NE(PidOfRank(ranks, 1), 0);
  ASSERT_EQ(kill(PidOfRank(ranks, 1), SIGKILL), 0);
  const auto killed_at = Clock::now();
  const std::optional<int> status = job.WaitExit(std::chrono::seconds(30));
  ASSERT_TRUE(status.has_value()) << "mpirun still running 30 s after the kill:\n" << job.output();
  const double seconds = std::chrono::duration<double>(Clock::now() - killed_at).count();
  const std::string output = job.output();
  EXPECT_FALSE(WIFEXITED(*status) && WEXITSTATUS(*status) == 0) << output;
  EXPECT_LT(seconds, c.runtime.timeout_s + 5) << output;
  // Open MPI: "mpirun noticed that process rank 1 with PID ... exited on signal 9 (Killed)."
  EXPECT_NE(output.find("process rank 1 with PID"), std::string::npos) << output;
  EXPECT_NE(output.find("exited on signal 9"), std::string::npos) << output;
  ExpectAllEnded(ranks);
  std::printf("mpirun ended %.2f s after rank 1 was killed\n", seconds);

  // --resume continues from the newest complete checkpoint; from there on the losses are the
  // uninterrupted run's, bit for bit.
  absl::StatusOr<std::string> latest = LatestCheckpoint(c.logging.run_dir);
  ASSERT_TRUE(latest.ok()) << latest.status();
  const Result resumed = RunShell(absl::StrFormat(
      "%s %s/launch/mpirun.sh -np 3 --oversubscribe -- train --resume %s", kMpiEnv, kRepo,
      c.logging.run_dir));
  ASSERT_EQ(resumed.exit_code, 0) << resumed.output;
  EXPECT_NE(resumed.output.find("from " + *latest), std::string::npos) << resumed.output;
  const auto want = Metrics(root / "reference");
  const auto got = Metrics(c.logging.run_dir);
  ASSERT_EQ(want.size(), 80u);
  ASSERT_EQ(got.size(), want.size());
  for (size_t i = 0; i < want.size(); ++i) {
    EXPECT_EQ(got[i]["step"], want[i]["step"]);
    EXPECT_EQ(got[i]["loss"].get<double>(), want[i]["loss"].get<double>()) << "step " << i + 1;
  }
}

// A rank that hangs (stopped, not dead) is invisible to mpirun: the others must time out, say
// so, and end the whole job, the hung rank included, rather than wait in MPI_Finalize for it.
TEST(FaultsTest, HungRankTimesOutAndEndsTheJob) {
  ScratchDir scratch("loom_hung");
  const fs::path& root = scratch.path();
  ASSERT_TRUE(PrepareCorpus(root, 40));
  ExperimentConfig c = TinyConfig(root, "hung");
  c.parallel.world_size = 3;
  c.schedule.total_steps = 2000;
  c.runtime.backend = "mpi";
  c.runtime.timeout_s = 4;
  MpiJob job(WriteConfig(root / "exp.yaml", c), (root / "hung.out").string());
  ASSERT_GT(job.pid(), 0);
  ASSERT_TRUE(job.WaitForSteps(c.logging.run_dir, 3)) << job.output();
  const std::vector<std::pair<pid_t, int>> ranks = job.Ranks();
  ASSERT_EQ(ranks.size(), 3u);
  ASSERT_NE(PidOfRank(ranks, 1), 0);
  ASSERT_EQ(kill(PidOfRank(ranks, 1), SIGSTOP), 0);
  const auto stopped_at = Clock::now();
  const std::optional<int> status = job.WaitExit(std::chrono::seconds(30));
  ASSERT_TRUE(status.has_value()) << "mpirun still running 30 s after rank 1 hung:\n"
                                  << job.output();
  const double seconds = std::chrono::duration<double>(Clock::now() - stopped_at).count();
  const std::string output = job.output();
  EXPECT_FALSE(WIFEXITED(*status) && WEXITSTATUS(*status) == 0) << output;
  EXPECT_GT(seconds, c.runtime.timeout_s - 1) << output;
  EXPECT_LT(seconds, c.runtime.timeout_s + 10) << output;
  EXPECT_NE(output.find("timed out (timeout 4s)"), std::string::npos) << output;
  ExpectAllEnded(ranks);
  std::printf("mpirun ended %.2f s after rank 1 hung\n", seconds);
}

TEST(FaultsTest, DamagedCheckpointsArePassedOverWithAWarningNamingTheFile) {
  ScratchDir scratch("loom_damaged");
  const fs::path& root = scratch.path();
  ASSERT_TRUE(PrepareCorpus(root, 20));
  ExperimentConfig c = TinyConfig(root, "run");
  c.schedule.total_steps = 6;
  c.checkpoint.every = 2;
  const absl::Status trained = RunTraining(c, false, nullptr);
  ASSERT_TRUE(trained.ok()) << trained;
  const auto want = Metrics(c.logging.run_dir);
  const std::string run = c.logging.run_dir;

  // A weight file cut short, a manifest garbled, and the folder of a write that never finished.
  const fs::path weights = CheckpointDir(run, 6) + "/model.safetensors";
  fs::resize_file(weights, fs::file_size(weights) / 2);
  std::ofstream(CheckpointDir(run, 4) + "/manifest.json") << "{\"files\": ";
  const fs::path unfinished = fs::path(run) / "checkpoints" / ".step-00000006.tmp";
  fs::create_directories(unfinished);
  std::ofstream(unfinished / "model.safetensors") << "half";

  const Result resumed = RunShell(kLoom + " train --resume " + run);
  ASSERT_EQ(resumed.exit_code, 0) << resumed.output;
  EXPECT_NE(resumed.output.find("warning: skipping a damaged checkpoint: " + weights.string() +
                                " does not match its checksum in the manifest"),
            std::string::npos)
      << resumed.output;
  EXPECT_NE(resumed.output.find("warning: skipping a damaged checkpoint: " +
                                CheckpointDir(run, 4) + "/manifest.json is not a manifest"),
            std::string::npos)
      << resumed.output;
  EXPECT_NE(resumed.output.find(absl::StrFormat("resuming %s at step 2 from %s", run,
                                                CheckpointDir(run, 2))),
            std::string::npos)
      << resumed.output;
  const auto got = Metrics(run);
  ASSERT_EQ(got.size(), want.size());
  for (size_t i = 0; i < want.size(); ++i) {
    EXPECT_EQ(got[i]["loss"].get<double>(), want[i]["loss"].get<double>()) << "step " << i + 1;
  }
  absl::StatusOr<std::string> latest = LatestCheckpoint(run);
  ASSERT_TRUE(latest.ok()) << latest.status();
  EXPECT_EQ(*latest, CheckpointDir(run, 6));
  EXPECT_TRUE(VerifyCheckpoint(CheckpointDir(run, 4)).ok());
  EXPECT_FALSE(fs::exists(unfinished));
}

// Runs a command as a user that file permissions apply to: root ignores them, so as root the
// command runs as nobody (setpriv), in folders handed to nobody.
class Unprivileged {
 public:
  Unprivileged() : root_(geteuid() == 0) {}
  // Empty when the test can run; otherwise why not.
  std::string Unavailable() const {
    if (root_ && RunShell("command -v setpriv").exit_code != 0) {
      return "running as root without setpriv (util-linux) to drop to an unprivileged user, and "
             "root ignores the permissions this test relies on";
    }
    if (root_ && Run(kLoom + " --help").exit_code != 0) {
      return "running as root, and user nobody cannot run " + kLoom +
             " (a folder on its path is closed to others); root ignores the permissions this "
             "test relies on";
    }
    return "";
  }
  void Own(const fs::path& path) const {
    if (root_) {
      EXPECT_EQ(chown(path.c_str(), 65534, 65534), 0) << path;
    }
  }
  Result Run(const std::string& command) const {
    return RunShell(root_ ? "setpriv --reuid=65534 --regid=65534 --clear-groups " + command
                          : command);
  }

 private:
  bool root_;
};

TEST(FaultsTest, UnwritableRunFolderIsAClearErrorAndKeepsThePreviousCheckpoint) {
  const Unprivileged user;
  if (const std::string why = user.Unavailable(); !why.empty()) GTEST_SKIP() << why;
  ScratchDir scratch("loom_readonly");
  const fs::path& root = scratch.path();
  fs::permissions(root, fs::perms::owner_all | fs::perms::group_read | fs::perms::group_exec |
                            fs::perms::others_read | fs::perms::others_exec);
  ASSERT_TRUE(PrepareCorpus(root, 20));
  ExperimentConfig c = TinyConfig(root, "run");
  c.schedule.total_steps = 4;
  c.checkpoint.every = 2;
  const std::string run = c.logging.run_dir;
  fs::create_directories(run);
  user.Own(run);
  const std::string config = WriteConfig(root / "exp.yaml", c);
  const Result trained = user.Run(kLoom + " train --config " + config);
  ASSERT_EQ(trained.exit_code, 0) << trained.output;

  // As if the run had been killed after its checkpoint of step 2; then the folder turns
  // read-only.
  fs::remove_all(CheckpointDir(run, 4));
  const fs::path checkpoints = fs::path(run) / "checkpoints";
  fs::permissions(checkpoints, fs::perms::owner_write | fs::perms::group_write |
                                   fs::perms::others_write,
                  fs::perm_options::remove);
  const Result resumed = user.Run(kLoom + " train --resume " + run);
  EXPECT_EQ(resumed.exit_code, 1) << resumed.output;
  EXPECT_NE(resumed.output.find("writing the checkpoint of step 4 (older checkpoints are kept): "
                                "cannot create checkpoint folder " +
                                (checkpoints / ".step-00000004.tmp").string() +
                                ": Permission denied"),
            std::string::npos)
      << resumed.output;
  fs::permissions(checkpoints, fs::perms::owner_write, fs::perm_options::add);
  absl::StatusOr<std::string> latest = LatestCheckpoint(run);
  ASSERT_TRUE(latest.ok()) << latest.status();
  EXPECT_EQ(*latest, CheckpointDir(run, 2));

  // A new run in a folder it cannot write to stops before training.
  const fs::path locked = root / "locked";
  fs::create_directories(locked);
  user.Own(locked);
  fs::permissions(locked, fs::perms::owner_read | fs::perms::owner_exec);
  const Result fresh = user.Run(
      absl::StrFormat("%s train --config %s logging.run_dir=%s", kLoom, config, locked.string()));
  EXPECT_EQ(fresh.exit_code, 1) << fresh.output;
  EXPECT_NE(fresh.output.find("logging.run_dir " + locked.string() + " is not writable: cannot "
                              "create " + locked.string() + "/config.yaml"),
            std::string::npos)
      << fresh.output;
  EXPECT_NE(fresh.output.find("Permission denied"), std::string::npos) << fresh.output;
  EXPECT_EQ(fresh.output.find("step 1/"), std::string::npos) << fresh.output;
}

// A small tmpfs mounted for the test's lifetime.
class TmpfsMount {
 public:
  TmpfsMount(const fs::path& dir, const std::string& size) : dir_(dir) {
    fs::create_directories(dir);
    const Result r =
        RunShell(absl::StrFormat("mount -t tmpfs -o size=%s loom_full %s", size, dir.string()));
    if (r.exit_code != 0) error_ = r.output;
  }
  ~TmpfsMount() {
    if (error_.empty()) RunShell("umount " + dir_.string());
  }
  const std::string& error() const { return error_; }

 private:
  fs::path dir_;
  std::string error_;
};

TEST(FaultsTest, FullDiskIsAClearErrorAndKeepsThePreviousCheckpoint) {
  if (geteuid() != 0) GTEST_SKIP() << "mounting a small tmpfs as a full disk needs root";
  ScratchDir scratch("loom_full");
  const fs::path& root = scratch.path();
  ASSERT_TRUE(PrepareCorpus(root, 20));
  // One checkpoint of the 35k-parameter model takes about 430 KB (weights and two moments).
  const TmpfsMount disk(root / "disk", "700k");
  if (!disk.error().empty()) GTEST_SKIP() << "cannot mount a tmpfs here: " << disk.error();
  ExperimentConfig c = TinyConfig(root, "disk/run");
  c.schedule.total_steps = 6;
  c.checkpoint.every = 2;
  const std::string config = WriteConfig(root / "exp.yaml", c);
  const Result r = RunShell(kLoom + " train --config " + config);
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_NE(r.output.find("writing the checkpoint of step 4 (older checkpoints are kept): "),
            std::string::npos)
      << r.output;
  EXPECT_NE(r.output.find("No space left on device"), std::string::npos) << r.output;
  absl::StatusOr<std::string> latest = LatestCheckpoint(c.logging.run_dir);
  ASSERT_TRUE(latest.ok()) << latest.status();
  EXPECT_EQ(*latest, CheckpointDir(c.logging.run_dir, 2));
  EXPECT_FALSE(fs::exists(fs::path(c.logging.run_dir) / "checkpoints" / ".step-00000004.tmp"))
      << "a failed write must not leave its half-written folder behind";
}

}  // namespace
}  // namespace loom
