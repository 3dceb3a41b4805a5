// A simulated-cluster study, as a YAML file describes it (`loom simulate --config F`): the
// cluster, the model, where the sequence lengths come from, the global batch and the strategies to
// compare. configs/README.md lists every key; configs/sim/ holds the papers' settings.
//
// Strict like an experiment file (experiment_config.h): an unknown section or key, a duplicate, a
// value of the wrong type or out of range fails naming file:line and the key path, and
// `section.key=value` overrides are checked the same way.
#ifndef LOOM_LAUNCH_SIM_CONFIG_H_
#define LOOM_LAUNCH_SIM_CONFIG_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "parallel/hardware_presets.h"
#include "parallel/strategy.h"
#include "src/model_config.h"

namespace loom {

// The `cluster:` section. Figures left 0 take the GPU preset's.
struct SimClusterConfig {
  int nodes = 1;
  int gpus_per_node = 8;
  std::string gpu = "h100-80g";
  double peak_bf16_tflops = 0.0;
  double hbm_gb_per_s = 0.0;
  double memory_gb = 0.0;
  double gemm_efficiency = 0.5;
  double attention_efficiency = 0.5;
  double layer_overhead_us = 20.0;
  double intra_node_gb_per_s = 0.0;
  double intra_node_latency_us = 5.0;
  double inter_node_gb_per_s = 0.0;
  double inter_node_latency_us = 10.0;
  double host_gb_per_s = 0.0;
  double host_memory_gb = 0.0;  // per GPU
  double memory_reserve_fraction = 0.05;
};

// The `model:` section: a preset, any shape key that is not 0 overriding it; `custom` needs
// every shape key.
struct SimModelConfig {
  std::string preset = "llama-7b";
  int vocab_size = 0;
  int d_model = 0;
  int n_layers = 0;
  int n_heads = 0;
  int n_kv_heads = 0;
  int ffn_dim = 0;
  int tensor_parallel = 1;
};

// The `data:` section: exactly one source of lengths.
struct SimDataConfig {
  std::string lengths = "";      // a length preset (data/length_presets.cc)
  std::string shards = "";       // a shard file or folder: its documents' lengths
  std::string lengths_file = ""; // one length per line
  int32_t eot_token = 256;       // shards only: the document separator
  int64_t context_tokens = 0;    // longest sequence; longer ones are split. 0: no cap
};

// The `train:` section.
struct SimTrainConfig {
  int64_t global_batch_tokens = 0;  // required
  int steps = 10;
  int64_t capacity_tokens = 0;      // C; 0: the most that fits the GPU's memory
  bool recompute = true;            // activation checkpointing per layer
  uint64_t seed = 1;
};

// The `simulate:` section.
struct SimOptionsConfig {
  bool overlap = true;   // ring messages overlap attention compute
  int trace_step = 1;    // the step drawn as a Chrome trace (0: none)
  int trace_ranks = 256; // ranks the trace shows, the first ones (0: all)
};

// The `reference:` section: what a paper reports for this setting, so that `loom simulate` (and
// `scripts/bench.sh papers`) print loom's figure beside it.
struct SimReferenceConfig {
  std::string setting = "";        // how the row is named
  std::string source = "";         // where the figure comes from
  double paper_ratio = 0.0;        // the paper's speedup over its static baseline (0: none)
  double paper_naive_ratio = 0.0;  // its naive HDP's speedup, where it publishes one
  std::string strategy = "best";   // the strategy (label) whose speedup is set against it
  std::string note = "";           // the assumptions the setting rests on
};

struct SimConfig {
  SimReferenceConfig reference;
  SimClusterConfig cluster;
  SimModelConfig model;
  SimDataConfig data;
  SimTrainConfig train;
  std::vector<StrategySpec> strategies;
  SimOptionsConfig simulate;
};

absl::StatusOr<SimConfig> ParseSimConfig(const std::string& yaml_text, const std::string& source,
                                         const std::vector<std::string>& overrides = {});
absl::StatusOr<SimConfig> LoadSimConfig(const std::string& path,
                                        const std::vector<std::string>& overrides = {});

// The cluster and model a config names, presets resolved and overrides applied; errors name the
// key.
absl::StatusOr<ClusterSpec> ResolveCluster(const SimClusterConfig& config);
absl::StatusOr<ModelConfig> ResolveModel(const SimModelConfig& config);

}  // namespace loom

#endif  // LOOM_LAUNCH_SIM_CONFIG_H_
