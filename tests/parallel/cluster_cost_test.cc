// The cluster cost model: presets as published, tensor parallelism dividing compute and per-GPU
// bytes, the roofline terms, model states against GPU memory, the capacity that fits, and MFU's
// FLOP count.
#include "parallel/cluster_cost.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "src/model_presets.h"

namespace loom {
namespace {

using ::testing::HasSubstr;

ClusterSpec H100Nodes(int nodes) { return DefaultCluster(*GpuPreset("h100-80g"), nodes); }

TEST(Presets, ModelShapesHaveThePublishedParameterCounts) {
  // LLaMA: 6.7B, 13.0B, 32.5B; LLaMA 2 70B: 69.0B (the released checkpoints' counts).
  const struct {
    const char* name;
    double params;
  } expected[] = {{"llama-7b", 6.738e9}, {"llama-13b", 13.016e9}, {"llama-30b", 32.529e9},
                  {"llama-70b", 68.977e9}};
  for (const auto& e : expected) {
    absl::StatusOr<ModelConfig> m = ModelPreset(e.name);
    ASSERT_TRUE(m.ok()) << m.status();
    EXPECT_TRUE(m->Validate().ok()) << e.name;
    EXPECT_NEAR(ModelParameters(*m) / e.params, 1.0, 0.005) << e.name;
  }
  EXPECT_THAT(std::string(ModelPreset("llama-8b").status().message()),
              HasSubstr("presets: llama-7b, llama-13b, llama-30b, llama-70b"));
}

TEST(Presets, GpusCarryTheirDatasheetFigures) {
  EXPECT_DOUBLE_EQ(GpuPreset("a100-80g")->peak_bf16_flops, 312e12);
  EXPECT_DOUBLE_EQ(GpuPreset("h100-80g")->hbm_bytes_per_s, 3.35e12);
  EXPECT_EQ(GpuPreset("h200-141g")->memory_bytes, 141'000'000'000);
  EXPECT_THAT(std::string(GpuPreset("v100").status().message()),
              HasSubstr("presets: a100-80g, h100-80g, h200-141g"));
  const ClusterSpec c = H100Nodes(4);
  EXPECT_EQ(c.gpus(), 32);
  EXPECT_DOUBLE_EQ(c.inter_node.bytes_per_s, 50e9);
  EXPECT_DOUBLE_EQ(c.intra_node.bytes_per_s, 450e9);
}

TEST(ClusterCost, TensorParallelismSplitsComputeAndPerGpuBytes) {
  const ModelConfig model = *ModelPreset("llama-13b");
  // H200s: 13B's model states (6 bytes per parameter) do not fit an 80 GB GPU without TP.
  const ClusterSpec cluster = DefaultCluster(*GpuPreset("h200-141g"), 2);
  absl::StatusOr<ClusterCost> tp1 = MakeClusterCost(model, cluster, 1);
  absl::StatusOr<ClusterCost> tp8 = MakeClusterCost(model, cluster, 8);
  ASSERT_TRUE(tp1.ok()) << tp1.status();
  ASSERT_TRUE(tp8.ok()) << tp8.status();
  EXPECT_EQ(tp1->world_size, 16);
  EXPECT_EQ(tp8->world_size, 2);
  EXPECT_EQ(tp8->cost.ranks_per_node, 1);
  EXPECT_DOUBLE_EQ(tp8->cost.attention_s, tp1->cost.attention_s / 8);
  EXPECT_EQ(tp8->cost.kv_bytes_per_token, tp1->cost.kv_bytes_per_token / 8);
  EXPECT_EQ(tp8->cost.activation_bytes_per_token, tp1->cost.activation_bytes_per_token / 8);
  // The linear term is an eighth of the FLOPs plus the tensor-parallel collectives: 8 of 7/8 of
  // d_model bf16 values per token over NVLink.
  const double collectives = 8.0 * 7.0 / 8.0 * model.d_model * 2 / 450e9;
  EXPECT_NEAR(tp8->cost.linear_s, tp1->cost.linear_s / 8 + collectives, 1e-18);
  // Attention: 6 q_dim FLOPs per token pair at half of peak.
  EXPECT_NEAR(tp1->cost.attention_s, 6.0 * 5120 / (989e12 * 0.5), 1e-20);
  EXPECT_THAT(std::string(MakeClusterCost(model, H100Nodes(1), 3).status().message()),
              HasSubstr("must divide cluster.gpus_per_node (8)"));
}

TEST(ClusterCost, FewTokensAreBoundByReadingTheWeights) {
  const ModelConfig model = *ModelPreset("llama-7b");
  const ClusterCost cc = *MakeClusterCost(model, H100Nodes(1), 1);
  // c: a layer's 202M bf16 weights read three times from 3.35 TB/s HBM, well above the 20 us of
  // launches.
  const double layer_weights = 4.0 * 4096 * 4096 + 3.0 * 4096 * 11008;
  EXPECT_NEAR(cc.cost.overhead_s, 3 * 2 * layer_weights / 3.35e12, 1e-12);
  EXPECT_GT(cc.cost.overhead_s, 20e-6);
  // b stays the FLOPs' term: 6 FLOPs per weight per token at half of peak beats the traffic.
  EXPECT_NEAR(cc.cost.linear_s, 6.0 * (layer_weights + 4096.0 * 32000 / 32) / (989e12 * 0.5),
              1e-15);
}

TEST(ClusterCost, ModelStatesLeaveTheActivationBudget) {
  const ModelConfig model = *ModelPreset("llama-70b");
  // 69B parameters at 6 bytes each (bf16 weights, fp32 gradients) are far over one GPU.
  const absl::Status s = MakeClusterCost(model, H100Nodes(8), 1).status();
  EXPECT_THAT(std::string(s.message()), HasSubstr("raise model.tensor_parallel"));
  const ClusterCost cc = *MakeClusterCost(model, H100Nodes(8), 8);
  EXPECT_NEAR(static_cast<double>(cc.model_state_bytes),
              ModelParameters(model) / 8 * (6.0 + 12.0 / 8), 1e3);
  EXPECT_EQ(cc.usable_memory_bytes, 76'000'000'000);
  EXPECT_EQ(cc.activation_budget_bytes, cc.usable_memory_bytes - cc.model_state_bytes);
  const int64_t c = CapacityFromMemory(cc);
  ASSERT_GT(c, 0);
  EXPECT_EQ(c % 1024, 0);
  EXPECT_LE(cc.cost.MicroBatchBytes(c), cc.activation_budget_bytes);
  EXPECT_GT(cc.cost.MicroBatchBytes(c + 1024), cc.activation_budget_bytes);
}

TEST(ClusterCost, CheckpointingKeepsLayerInputsAndComputesTheForwardTwice) {
  const ModelConfig model = *ModelPreset("llama-7b");
  const ClusterSpec cluster = H100Nodes(1);
  const ClusterCost plain = *MakeClusterCost(model, cluster, 2, false);
  const ClusterCost rc = *MakeClusterCost(model, cluster, 2, true);
  // Only each layer's input (d_model bf16 values) stays, split over the 2 GPUs.
  EXPECT_EQ(rc.cost.activation_bytes_per_token, 4096 * 2 * 32 / 2);
  // The layer being back-propagated holds its activations again as scratch.
  EXPECT_EQ(rc.cost.working_bytes_per_token,
            plain.cost.working_bytes_per_token + plain.cost.activation_bytes_per_token / 32);
  EXPECT_DOUBLE_EQ(rc.cost.attention_s, plain.cost.attention_s * 4 / 3);
  EXPECT_DOUBLE_EQ(rc.cost.overhead_s, plain.cost.overhead_s * 4 / 3);
  const double head = plain.cost.head_s / 32;
  EXPECT_NEAR(rc.cost.linear_s, (plain.cost.linear_s - head) * 4 / 3 + head, 1e-18);
  EXPECT_DOUBLE_EQ(rc.cost.backward_fraction, 0.75);
  // Rings send K/V once more in the backward: 4 passes instead of 3.
  EXPECT_EQ(rc.cost.RingBytesSent(3, 10), 4 * 32 * 2 * 10);
  EXPECT_EQ(plain.cost.RingBytesSent(3, 10), 3 * 32 * 2 * 10);
  EXPECT_GT(CapacityFromMemory(rc), 8 * CapacityFromMemory(plain));
  // A pipeline stage holds its share of the model states.
  const ClusterCost pp4 = *MakeClusterCost(model, cluster, 2, false, 4);
  EXPECT_NEAR(static_cast<double>(pp4.model_state_bytes),
              ModelParameters(model) / 8 * (6.0 + 12.0 / 1), 1e3);
  EXPECT_FALSE(MakeClusterCost(model, cluster, 2, false, 3).ok()) << "3 does not divide 4 ranks";
}

TEST(ClusterCost, TrainingFlopsCountWeightsAndCausalAttention) {
  ModelConfig m;  // d 256, 4 layers, 8 heads, ffn 688, vocab 257
  const double weights = 4 * (4.0 * 256 * 256 + 3.0 * 256 * 688) + 256.0 * 257;
  const double flops = TrainingFlops(m, {{0, 100}, {1, 3}});
  EXPECT_DOUBLE_EQ(flops, 6 * weights * 103 + 6.0 * 256 * 4 * (100.0 * 100 + 9));
}

TEST(ClusterCost, TheIdealStepSpreadsTheFlopsOverEveryGpu) {
  ModelConfig m;  // d 256, 4 layers, 8 heads, ffn 688, vocab 257
  ClusterSpec cluster = DefaultCluster(*GpuPreset("a100-80g"), 2, 4);
  cluster.gemm_efficiency = 0.5;
  cluster.attention_efficiency = 0.25;
  const std::vector<SequenceSpec> batch = {{0, 1000}};
  const double attention = 6.0 * 256 * 4 * 1000.0 * 1000;
  const double linear = TrainingFlops(m, batch) - attention;
  EXPECT_DOUBLE_EQ(IdealStepSeconds(m, cluster, batch),
                   linear / (8 * 312e12 * 0.5) + attention / (8 * 312e12 * 0.25));
}

}  // namespace
}  // namespace loom
