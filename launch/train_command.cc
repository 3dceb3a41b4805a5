// loom train: a new run from a config (with overrides), or --resume of an earlier one.
#include <csignal>
#include <cstdio>

#include "launch/command_line.h"
#include "launch/commands.h"
#include "launch/trainer.h"
#include "runtime/mpi_session.h"

namespace loom {
namespace {

std::atomic<bool> g_stop{false};

// SIGINT / SIGTERM ask the loop to stop after the step in flight and write a checkpoint; a second
// signal falls back to the default action, so a stuck run can still be killed.
void OnSignal(int sig) {
  g_stop.store(true);
  std::signal(sig, SIG_DFL);
}

}  // namespace

int TrainCommand(const std::vector<std::string>& args) {
  absl::StatusOr<CommandLine> cl = CommandLine::Parse("train", args, {"config", "resume"}, {"help"});
  if (!cl.ok()) {
    std::fprintf(stderr, "%s\n", std::string(cl.status().message()).c_str());
    return 2;
  }
  if (cl->Has("help")) {
    std::puts("loom train --config FILE [key.path=value ...]   start a run\n"
              "loom train --resume RUN_DIR                      continue it from its newest checkpoint");
    return 0;
  }
  const bool resume = cl->Has("resume");
  absl::StatusOr<ExperimentConfig> config;
  if (resume) {
    if (cl->Has("config") || !cl->positional().empty()) {
      std::fprintf(stderr, "loom train: --resume continues with the run's saved config; it takes "
                           "no --config or overrides\n");
      return 2;
    }
    config = LoadRunConfig(*cl->Get("resume"));
  } else {
    absl::StatusOr<std::string> path = cl->Required("config");
    if (!path.ok()) {
      std::fprintf(stderr, "%s\n", std::string(path.status().message()).c_str());
      return 2;
    }
    config = LoadExperimentConfig(*path, cl->positional());
  }
  if (!config.ok()) {
    std::fprintf(stderr, "loom train: %s\n", std::string(config.status().message()).c_str());
    return 2;
  }
  std::signal(SIGINT, OnSignal);
  std::signal(SIGTERM, OnSignal);
  const absl::Status s = RunTraining(*config, resume, &g_stop);
  if (!s.ok()) {
    std::fprintf(stderr, "loom train: %s\n", std::string(s.message()).c_str());
    if (s.code() == absl::StatusCode::kDeadlineExceeded) {
      std::fprintf(stderr,
                   "loom train: a rank died, hung or fell more than runtime.timeout_s (%g s) "
                   "behind its peers (MPI does not say which member of a collective is "
                   "missing; the ranks that report a timeout are not)\n",
                   config->runtime.timeout_s);
    }
    std::fflush(stderr);
    // One process of an mpirun / srun job: after a timeout, operations on a lost or hung peer
    // stay outstanding and MPI_Finalize at exit would wait for them forever, so the whole job
    // ends here instead (the launcher kills the other ranks, the hung one included).
    AbortMpiJob(1);
    return 1;
  }
  return g_stop.load() ? 130 : 0;
}

}  // namespace loom
