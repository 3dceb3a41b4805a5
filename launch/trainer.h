// The training loop of one rank: data in, metrics and checkpoints out, resumable at any
// checkpoint with bit-identical losses.
//
// Every rank of the world runs a Trainer. Each draws the same global batch (same data, same
// sampler seed), plans the step with the configured planner (the same plan on every rank, since
// planning is deterministic), validates it and runs its own part with the executor; gradients
// are summed over the world (or reduce-scattered, with parallel.zero: 1) and every rank applies
// the same update. Rank 0 alone writes the run folder: metrics, progress, validation losses and
// checkpoints. The run folder must be visible to every rank when resuming (ranks read the
// checkpoint themselves).
//
// Ranks stop together: each step starts with one small all-reduce in which a rank says "go on",
// "stop" (a signal arrived) or "failed" (rank 0 could not write), so no rank is left waiting for
// peers that have quit.
#ifndef LOOM_LAUNCH_TRAINER_H_
#define LOOM_LAUNCH_TRAINER_H_

#include <atomic>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "data/batch_sampler.h"
#include "data/packed_batch.h"
#include "data/token_dataset.h"
#include "launch/checkpoint.h"
#include "launch/experiment_config.h"
#include "launch/progress.h"
#include "launch/training_data.h"
#include "parallel/cost_model.h"
#include "parallel/planner.h"
#include "parallel/sharded_adamw.h"
#include "runtime/communicator.h"
#include "src/adamw.h"
#include "src/allocator.h"
#include "src/model.h"

namespace loom {

// The config a run in `run_dir` was started with (from its newest complete checkpoint), with
// logging.run_dir set to run_dir (the run may have been moved).
absl::StatusOr<ExperimentConfig> LoadRunConfig(const std::string& run_dir);

// Collective over the world: whether every rank passes ok = true.
absl::StatusOr<bool> EveryRankOk(Communicator& comm, bool ok);

// A whole run: starts the ranks config.runtime asks for (threads of this process for `local`, this
// process as one rank of an mpirun or srun job otherwise), makes or resumes a Trainer on each and
// runs it. `config` is the experiment's, or LoadRunConfig's when resuming. Returns the first
// failure (with `local`, prefixed by the failing rank).
absl::Status RunTraining(const ExperimentConfig& config, bool resume,
                         const std::atomic<bool>* stop);

class Trainer {
 public:
  // A new run in config.logging.run_dir (which must not hold checkpoints already). Every rank
  // calls it; only rank 0 touches the run folder.
  static absl::StatusOr<std::unique_ptr<Trainer>> Create(const ExperimentConfig& config,
                                                         Communicator& comm);
  // Continues the run from its newest complete checkpoint; `config` is LoadRunConfig's.
  static absl::StatusOr<std::unique_ptr<Trainer>> Resume(const ExperimentConfig& config,
                                                         Communicator& comm);

  // Trains until schedule.total_steps, or until *stop becomes true on any rank (a signal): then
  // writes a checkpoint and returns. Errors name what failed; when another rank failed, this one
  // returns OK quietly and the failing rank reports.
  absl::Status Run(const std::atomic<bool>* stop);

  int64_t step() const { return step_; }
  const std::string& run_dir() const { return config_.logging.run_dir; }

 private:
  Trainer(const ExperimentConfig& config, Communicator& comm) : config_(config), comm_(comm) {}
  absl::Status Open();
  // Mean token loss over the first logging.val_tokens tokens of the validation set, in order.
  double ValidationLoss();
  // Collective when the optimizer state is sharded; rank 0 writes.
  absl::Status SaveCheckpoint();
  // One optimizer update from the gradient the executor left; returns the norm before clipping.
  absl::StatusOr<double> Update(float lr);
  bool lead() const { return comm_.rank() == 0; }

  ExperimentConfig config_;
  Communicator& comm_;
  Allocator allocator_;  // this rank's memory, so peaks are per rank (declared before its users)
  std::unique_ptr<Model> model_;
  std::unique_ptr<AdamW> adamw_;          // parallel.zero: 0
  std::unique_ptr<ShardedAdamW> sharded_;  // parallel.zero: 1
  std::unique_ptr<TokenDataset> train_;
  std::unique_ptr<TokenDataset> val_;
  std::unique_ptr<BatchSampler> sampler_;
  std::vector<TokenBatch> val_batches_;
  PlannerOptions planner_;
  CostModel cost_;
  int64_t step_ = 0;
  int threads_ = 0;
};

}  // namespace loom

#endif  // LOOM_LAUNCH_TRAINER_H_
