// An experiment, as a YAML file describes it. This is the only place that knows the file's
// layout: everything below launch/ takes the plain structs in here.
#ifndef LOOM_LAUNCH_EXPERIMENT_CONFIG_H_
#define LOOM_LAUNCH_EXPERIMENT_CONFIG_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "src/adamw.h"
#include "src/lr_schedule.h"
#include "src/model_config.h"

namespace loom {

struct DataConfig {
  std::string train;            // a shard file or a folder of *.bin shards (required)
  std::string val;              // the same, for validation ("" = none)
  int32_t eot_token = 256;      // document separator
  int64_t tokens_per_step = 8192;  // global batch token budget
  int64_t max_doc_tokens = 4096;   // longer documents are split or rejected...
  std::string long_docs = "split";  // ... "split" or "reject"
  uint64_t seed = 1;            // shuffling
};

struct OptimizerConfig {
  AdamWConfig adamw;
  double grad_clip = 1.0;  // global norm; <= 0 disables
  // A step whose loss or gradient norm is NaN or infinite applies no update; "skip" goes on with
  // the next batch, "stop" writes a checkpoint of the last good state and fails naming the step.
  std::string on_nonfinite = "skip";
};

struct ParallelConfig {
  int world_size = 1;  // ranks the run is spread over
  // How each step's global batch is spread over the ranks (parallel/planner.h): "hdp" (balanced
  // hybrid data parallelism), "naive_hdp" (the same mesh, sequences placed in batch order) or
  // "static" (a fixed DP x CP mesh) or "chunkflow" (chunks of C tokens, data parallel).
  std::string planner = "hdp";
  int64_t capacity_tokens = 0;  // C, tokens per rank per micro-batch; 0 = data.max_doc_tokens
  int chunk_keep = 0;  // chunkflow, hdp with chunks: K, chunks that keep activations; 0 = all
  int64_t chunk_size = 0;  // hdp: > 0 runs long sequences as chunks where cheaper than a ring
  int cp_size = 0;  // static: ranks per context-parallel group; 0 = the fewest that fit
  int zero = 0;     // 1: optimizer state sharded over the ranks (ZeRO stage 1)
  // Pipelines: world_size = pp x (replicas); the planner above spreads each step over the
  // replicas, and each replica runs its micro-batches through pp stages (vpp model chunks per
  // rank) in the order `pipeline_schedule` gives: gpipe, 1f1b, interleaved (vpp >= 2), zb-h1, or
  // auto (the shortest simulated step, chosen every step).
  int pp = 1;
  int vpp = 1;
  std::string pipeline_schedule = "auto";
  // The planners' cost model T(s) = a*s^2 + b*s + c per layer (seconds); all 0 = derived from the
  // model's FLOPs at this machine's sgemm rate. `scripts/bench.sh calibrate` measures them.
  double cost_attention_s = 0.0;  // a
  double cost_linear_s = 0.0;     // b
  double cost_overhead_s = 0.0;   // c
};

// The `runtime:` section (named so as not to clash with runtime/config.h's RuntimeConfig, which
// the trainer fills from it).
struct RuntimeOptions {
  int threads = 0;  // CPU threads for kernels per process; 0 = all cores
  uint64_t seed = 1234;  // weight initialisation
  std::string backend = "local";  // local (ranks as threads), mpi (ranks as mpirun processes), nccl
  double timeout_s = 300.0;  // longest any rank waits for its peers before failing
};

struct LoggingConfig {
  std::string run_dir = "runs/default";
  int64_t log_every = 1;     // steps between progress lines
  int64_t val_every = 50;    // steps between validation losses (0 = never)
  int64_t val_tokens = 16384;  // tokens of validation data per evaluation
};

struct CheckpointConfig {
  int64_t every = 100;  // steps between checkpoints (0 = only at the end)
  int keep_last = 3;    // older checkpoints are deleted
};

struct ExperimentConfig {
  ModelConfig model;
  DataConfig data;
  OptimizerConfig optimizer;
  LrSchedule schedule;  // total_steps is the length of the run
  ParallelConfig parallel;
  RuntimeOptions runtime;
  LoggingConfig logging;
  CheckpointConfig checkpoint;
};

// Parses YAML text strictly: an unknown key, a value of the wrong type, a missing required field
// (data.train) or a value out of range is an error naming `source:line` and the key path
// (e.g. "exp.yaml:7: model.n_heads: expected an integer, got 'eight'"). `overrides` are
// "key.path=value" strings applied on top, each checked the same way (named by their text in
// errors: "override 'model.n_heads=x': ..."). Fields not given keep the defaults above.
absl::StatusOr<ExperimentConfig> ParseExperimentConfig(const std::string& yaml_text,
                                                       const std::string& source,
                                                       const std::vector<std::string>& overrides);
// Reads `path` and parses it as above.
absl::StatusOr<ExperimentConfig> LoadExperimentConfig(const std::string& path,
                                                      const std::vector<std::string>& overrides);
// The resolved config as YAML (every field, defaults included); parsing it gives the same config.
std::string ExperimentConfigToYaml(const ExperimentConfig& config);

}  // namespace loom

#endif  // LOOM_LAUNCH_EXPERIMENT_CONFIG_H_
