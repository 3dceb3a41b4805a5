// Training checkpoints. A checkpoint is a folder `<run_dir>/checkpoints/step-NNNNNNNN/` holding
//   model.safetensors      weights under Hugging Face LLaMA names
//   config.json            a Hugging Face LlamaConfig, so PyTorch tools can load the weights
//   optimizer.safetensors  AdamW moments m and v (flat, in parameter-buffer order)
//   state.json             step, AdamW step, sampler position, thread count
//   experiment.yaml        the resolved experiment config
//   manifest.json          size and checksum of every file above; written last
// The folder is assembled under a temporary name and renamed into place, so a checkpoint either
// exists whole (with its manifest) or not at all. After initialisation training draws no random
// numbers except the sampler's shuffles, which follow from its seed and epoch: the sampler position
// is the whole random state.
#ifndef LOOM_LAUNCH_CHECKPOINT_H_
#define LOOM_LAUNCH_CHECKPOINT_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "data/batch_sampler.h"
#include "launch/experiment_config.h"
#include "src/adamw.h"
#include "src/model.h"

namespace loom {

struct TrainingState {
  int64_t step = 0;  // steps completed
  SamplerPosition sampler;
  int threads = 0;  // kernels' thread count: bit-exact resumption needs the same
};

// Writes a checkpoint of `step` under run_dir/checkpoints and deletes all but the newest
// keep_last. Returns the checkpoint's folder.
absl::StatusOr<std::string> WriteCheckpoint(const std::string& run_dir, const Model& model,
                                            AdamW& adamw, const TrainingState& state,
                                            const ExperimentConfig& config, int keep_last);

// The newest complete checkpoint folder of a run (one with a manifest whose checksums match).
// Newer damaged ones (a file truncated or corrupted after the write, say by a full disk or a
// crash of the storage) are passed over; `passed_over`, when given, receives why each was, newest
// first, naming the file.
absl::StatusOr<std::string> LatestCheckpoint(const std::string& run_dir,
                                             std::vector<std::string>* passed_over = nullptr);

// Checks the manifest of a checkpoint folder: every file present with its size and checksum.
absl::Status VerifyCheckpoint(const std::string& dir);

// Reads the model config from a checkpoint's config.json.
absl::StatusOr<ModelConfig> ReadCheckpointModelConfig(const std::string& dir);
// Loads weights into a model of the matching config.
absl::Status ReadCheckpointWeights(const std::string& dir, Model& model);
// Loads optimizer moments and the training state.
absl::StatusOr<TrainingState> ReadCheckpointState(const std::string& dir, AdamW& adamw);

// Hugging Face LlamaConfig JSON for a model config.
std::string HuggingFaceConfigJson(const ModelConfig& config);

}  // namespace loom

#endif  // LOOM_LAUNCH_CHECKPOINT_H_
