// The training data as `loom train` draws it, shared with `loom plan` so that the batches a plan
// is printed for are the batches a run of the same config trains on.
#ifndef LOOM_LAUNCH_TRAINING_DATA_H_
#define LOOM_LAUNCH_TRAINING_DATA_H_

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "data/batch_sampler.h"
#include "data/token_dataset.h"
#include "launch/experiment_config.h"

namespace loom {

// Shard paths named by a data.train / data.val value: a shard file, a folder (every *.bin in
// it), or a prefix path "DIR/NAME" (DIR/NAME_*.bin, as `loom prep` writes them).
absl::StatusOr<std::vector<std::string>> ResolveShards(const std::string& spec,
                                                       const std::string& field);

// The shards `spec` names (see ResolveShards), opened with the model's vocabulary and the data's
// end-of-text id. Errors start with `field` (e.g. "data.train: ...").
absl::StatusOr<std::unique_ptr<TokenDataset>> OpenDataset(const std::string& spec,
                                                          const std::string& field,
                                                          const ExperimentConfig& c);

// The sampler settings of the `data:` section.
BatchSamplerConfig SamplerConfig(const DataConfig& d);

// A sampler over `train`'s documents at the start of its first epoch, naming documents by their
// shard in errors. `train` must outlive it. Errors start with "data.train: ".
absl::StatusOr<BatchSampler> TrainingSampler(const TokenDataset& train, const DataConfig& d);

}  // namespace loom

#endif  // LOOM_LAUNCH_TRAINING_DATA_H_
