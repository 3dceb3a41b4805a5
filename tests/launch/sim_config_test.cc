// `loom simulate`'s study files: every section and key read into the plain structs, presets
// resolved, strategies written as names or maps, and every mistake named by file:line and key.
#include "launch/sim_config.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace loom {
namespace {

using ::testing::HasSubstr;

constexpr char kMinimal[] = "data:\n  lengths: byted\ntrain:\n  global_batch_tokens: 1048576\n";

std::string ErrorOf(const std::string& yaml, const std::vector<std::string>& overrides = {}) {
  absl::StatusOr<SimConfig> c = ParseSimConfig(yaml, "study.yaml", overrides);
  if (c.ok()) {
    ADD_FAILURE() << "parsed without error:\n" << yaml;
    return "";
  }
  EXPECT_EQ(c.status().code(), absl::StatusCode::kInvalidArgument) << c.status();
  return std::string(c.status().message());
}

TEST(SimConfig, AFullStudyReadsEveryKey) {
  const std::string yaml = R"(reference:
  setting: "case study"
  source: "a paper"
  paper_ratio: 3.31
  paper_naive_ratio: 1.91
  strategy: mine
  note: "assumed"
cluster:
  nodes: 16
  gpus_per_node: 4
  gpu: a100-80g
  peak_bf16_tflops: 300
  hbm_gb_per_s: 2000
  memory_gb: 40
  gemm_efficiency: 0.6
  attention_efficiency: 0.4
  layer_overhead_us: 30
  intra_node_gb_per_s: 200
  intra_node_latency_us: 3
  inter_node_gb_per_s: 12.5
  inter_node_latency_us: 8
  host_gb_per_s: 20
  host_memory_gb: 100
  memory_reserve_fraction: 0.1
model:
  preset: llama-13b
  n_layers: 20
  tensor_parallel: 2
data:
  lengths: github
  context_tokens: 65536
train:
  global_batch_tokens: 4194304
  steps: 3
  capacity_tokens: 8192
  recompute: false
  seed: 9
strategies:
  - static
  - name: best
    label: mine
    capacity_tokens: 4096
    cp_size: 2
    chunk_size: 2048
    chunk_keep: 2
    tensor_parallel: 4
    recompute: true
    offload: true
    pipeline_size: 2
simulate:
  overlap: false
  trace_step: 2
  trace_ranks: 8
)";
  absl::StatusOr<SimConfig> c = ParseSimConfig(yaml, "study.yaml");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->reference.paper_ratio, 3.31);
  EXPECT_EQ(c->reference.strategy, "mine");
  EXPECT_EQ(c->cluster.nodes, 16);
  EXPECT_EQ(c->model.tensor_parallel, 2);
  EXPECT_EQ(c->data.context_tokens, 65536);
  EXPECT_FALSE(c->train.recompute);
  EXPECT_EQ(c->train.seed, 9u);
  ASSERT_EQ(c->strategies.size(), 2u);
  EXPECT_EQ(c->strategies[0].kind, StrategyKind::kStatic);
  EXPECT_EQ(c->strategies[0].layer_recompute, -1) << "not given: the study's";
  const StrategySpec& best = c->strategies[1];
  EXPECT_EQ(best.kind, StrategyKind::kBest);
  EXPECT_EQ(best.Label(), "mine");
  EXPECT_EQ(best.capacity_tokens, 4096);
  EXPECT_EQ(best.cp_size, 2);
  EXPECT_EQ(best.chunk_size, 2048);
  EXPECT_EQ(best.chunk_keep, 2);
  EXPECT_EQ(best.tensor_parallel, 4);
  EXPECT_EQ(best.layer_recompute, 1);
  EXPECT_TRUE(best.offload);
  EXPECT_EQ(best.pipeline_size, 2);
  EXPECT_FALSE(best.Offloads()) << "a pipelined best does not offload";
  EXPECT_FALSE(c->simulate.overlap);
  EXPECT_EQ(c->simulate.trace_ranks, 8);

  absl::StatusOr<ClusterSpec> cluster = ResolveCluster(c->cluster);
  ASSERT_TRUE(cluster.ok()) << cluster.status();
  EXPECT_EQ(cluster->gpus(), 64);
  EXPECT_DOUBLE_EQ(cluster->gpu.peak_bf16_flops, 300e12);
  EXPECT_EQ(cluster->gpu.memory_bytes, 40'000'000'000);
  EXPECT_DOUBLE_EQ(cluster->inter_node.bytes_per_s, 12.5e9);
  EXPECT_DOUBLE_EQ(cluster->inter_node.latency_s, 8e-6);
  EXPECT_EQ(cluster->host_memory_bytes, 100'000'000'000);
  absl::StatusOr<ModelConfig> model = ResolveModel(c->model);
  ASSERT_TRUE(model.ok()) << model.status();
  EXPECT_EQ(model->d_model, 5120) << "the preset's";
  EXPECT_EQ(model->n_layers, 20) << "overridden";
}

TEST(SimConfig, DefaultsAndEveryStrategy) {
  absl::StatusOr<SimConfig> c = ParseSimConfig(kMinimal, "study.yaml");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->cluster.gpu, "h100-80g");
  EXPECT_EQ(c->model.preset, "llama-7b");
  EXPECT_TRUE(c->train.recompute);
  ASSERT_EQ(c->strategies.size(), 6u) << "no strategies: all of them";
  EXPECT_EQ(c->strategies[1].kind, StrategyKind::kMegatronHybridCp);
}

TEST(SimConfig, MistakesNameFileLineAndKey) {
  EXPECT_EQ(ErrorOf(std::string(kMinimal) + "cluster:\n  nodez: 4\n"),
            "study.yaml:6: cluster.nodez: unknown key; did you mean 'nodes'?");
  EXPECT_EQ(ErrorOf(std::string(kMinimal) + "cluster:\n  nodes: four\n"),
            "study.yaml:6: cluster.nodes: expected an integer, got 'four'");
  EXPECT_EQ(ErrorOf(std::string(kMinimal) + "cluster:\n  gpu: v100\n"),
            "study.yaml:6: cluster.gpu: must be one of a100-80g|h100-80g|h200-141g, got 'v100'");
  EXPECT_EQ(ErrorOf("data:\n  lengths: byted\n"),
            "study.yaml: train.global_batch_tokens: required but not given");
  EXPECT_THAT(ErrorOf("train:\n  global_batch_tokens: 8\n"),
              HasSubstr("data: give exactly one of lengths"));
  EXPECT_EQ(ErrorOf("data:\n  lengths: nope\ntrain:\n  global_batch_tokens: 8\n"),
            "study.yaml:2: data.lengths: length distribution preset 'nope' is unknown (presets: "
            "byted, github, chunkflow, lmsyschat1m)");
  EXPECT_EQ(ErrorOf(std::string(kMinimal) + "strategies:\n  - hdp\n  - name: bets\n"),
            "study.yaml:7: strategies[1].name: must be one of "
            "static|megatron-hybrid-cp|hdp-naive|hdp|chunkflow|best, got 'bets'");
  EXPECT_EQ(ErrorOf(std::string(kMinimal) + "strategies:\n  - chunk_size: 8\n"),
            "study.yaml:6: strategies[0].name: required but not given");
  EXPECT_EQ(ErrorOf(std::string(kMinimal) + "strategies:\n  - hdp\n  - hdp\n"),
            "study.yaml:5: strategies: two strategies are labelled 'hdp'; give one a label");
  EXPECT_EQ(ErrorOf(std::string(kMinimal) + "strategies: hdp\n"),
            "study.yaml:5: strategies: expected a list of strategies (static, megatron-hybrid-cp, "
            "hdp-naive, hdp, chunkflow, best), got 'hdp'");
  EXPECT_EQ(ErrorOf(std::string(kMinimal) + "model:\n  preset: custom\n  d_model: 64\n"),
            "study.yaml:6: model.vocab_size: required with model.preset custom");
  EXPECT_EQ(ErrorOf(std::string(kMinimal) + "reference:\n  paper_ratio: 2\n  strategy: none\n"),
            "study.yaml:7: reference.strategy: names no strategy of the study ('none'); "
            "strategies: best, chunkflow, hdp, hdp-naive, megatron-hybrid-cp, static");
  EXPECT_EQ(ErrorOf(std::string(kMinimal) + "simulate:\n  overlap: yes\n"),
            "study.yaml:6: simulate.overlap: expected true or false, got 'yes'");
  EXPECT_EQ(ErrorOf(std::string(kMinimal) + "extra:\n  a: 1\n"),
            "study.yaml:5: extra: unknown section; known: reference, cluster, model, data, train, "
            "simulate, strategies");
}

TEST(SimConfig, OverridesAreCheckedLikeTheFile) {
  absl::StatusOr<SimConfig> c =
      ParseSimConfig(kMinimal, "study.yaml", {"train.steps=4", "cluster.gpu=h200-141g"});
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->train.steps, 4);
  EXPECT_EQ(c->cluster.gpu, "h200-141g");
  EXPECT_EQ(ErrorOf(kMinimal, {"train.stepz=4"}),
            "override 'train.stepz=4': train.stepz: unknown key; did you mean 'steps'?");
  EXPECT_EQ(ErrorOf(kMinimal, {"train.steps=0"}),
            "override 'train.steps=0': train.steps: must be positive, got 0");
  EXPECT_EQ(ErrorOf(kMinimal, {"strategies=hdp"}),
            "override 'strategies=hdp': strategies: a list; set it in the file");
}

}  // namespace
}  // namespace loom
