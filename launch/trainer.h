// The single-process training loop: data in, metrics and checkpoints out, resumable at any
// checkpoint with bit-identical losses.
#ifndef LOOM_LAUNCH_TRAINER_H_
#define LOOM_LAUNCH_TRAINER_H_

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "data/batch_sampler.h"
#include "data/packed_batch.h"
#include "data/token_dataset.h"
#include "launch/checkpoint.h"
#include "launch/experiment_config.h"
#include "launch/progress.h"
#include "src/adamw.h"
#include "src/model.h"

namespace loom {

// Shard paths named by a data.train / data.val value: a shard file, a folder (every *.bin in
// it), or a prefix path "DIR/NAME" (DIR/NAME_*.bin, as `loom prep` writes them).
absl::StatusOr<std::vector<std::string>> ResolveShards(const std::string& spec,
                                                       const std::string& field);

class Trainer {
 public:
  // A new run in config.logging.run_dir (which must not hold checkpoints already).
  static absl::StatusOr<std::unique_ptr<Trainer>> Create(const ExperimentConfig& config);
  // Continues the run in run_dir from its newest complete checkpoint, with the config saved there.
  static absl::StatusOr<std::unique_ptr<Trainer>> Resume(const std::string& run_dir);

  // Trains until schedule.total_steps, or until *stop becomes true (a signal): then writes a
  // checkpoint and returns. Errors name what failed.
  absl::Status Run(const std::atomic<bool>* stop);

  int64_t step() const { return step_; }
  const std::string& run_dir() const { return config_.logging.run_dir; }

 private:
  Trainer() = default;
  absl::Status Open();
  // Mean token loss over the first logging.val_tokens tokens of the validation set, in order.
  double ValidationLoss();
  absl::Status SaveCheckpoint();

  ExperimentConfig config_;
  std::unique_ptr<Model> model_;
  std::unique_ptr<AdamW> adamw_;
  std::unique_ptr<TokenDataset> train_;
  std::unique_ptr<TokenDataset> val_;
  std::unique_ptr<BatchSampler> sampler_;
  std::vector<TokenBatch> val_batches_;
  int64_t step_ = 0;
  int threads_ = 0;
};

}  // namespace loom

#endif  // LOOM_LAUNCH_TRAINER_H_
