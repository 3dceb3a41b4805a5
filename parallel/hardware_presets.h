// GPUs and clusters as the simulator sees them: a GPU's peak dense bf16 rate, HBM bandwidth and
// memory from its datasheet, and the links of the usual 8-GPU server built around it, so that
// `loom simulate` can plan for a cluster by naming its GPU. Every figure is per GPU and per
// direction; each preset names where its figures come from.
#ifndef LOOM_PARALLEL_HARDWARE_PRESETS_H_
#define LOOM_PARALLEL_HARDWARE_PRESETS_H_

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "parallel/cost_model.h"

namespace loom {

struct GpuSpec {
  std::string name;
  double peak_bf16_flops = 0.0;  // dense (datasheets also quote twice this "with sparsity")
  double hbm_bytes_per_s = 0.0;
  int64_t memory_bytes = 0;      // decimal GB, as datasheets count them
  // The server the GPU usually ships in (DGX / HGX, 8 GPUs): NVLink, the network adapter each
  // GPU has to itself, and its PCIe link to host memory.
  double nvlink_bytes_per_s = 0.0;
  double network_bytes_per_s = 0.0;
  double host_bytes_per_s = 0.0;
  int64_t host_memory_bytes = 0;  // the server's host memory, per GPU
  std::string source;
};

// "a100-80g", "h100-80g", "h200-141g". Fails naming the known presets.
absl::StatusOr<GpuSpec> GpuPreset(std::string_view name);
std::vector<std::string> GpuPresetNames();

// A cluster of `nodes` servers of `gpus_per_node` GPUs each.
struct ClusterSpec {
  int nodes = 1;
  int gpus_per_node = 8;
  GpuSpec gpu;
  // Achieved fraction of peak in the matrix products and in attention (FlashAttention-style
  // kernels reach less of peak than GEMMs, so the two are separate).
  double gemm_efficiency = 0.5;
  double attention_efficiency = 0.5;
  double layer_overhead_s = 20e-6;  // kernel launches and the like per micro-batch and layer
  LinkCost intra_node;              // per GPU, one direction
  LinkCost inter_node;
  double host_bytes_per_s = 0.0;    // per GPU, to host memory (activation offloading)
  int64_t host_memory_bytes = 0;    // per GPU, for offloaded activations
  // Part of each GPU's memory that is not for the model: the CUDA context, communication
  // buffers, fragmentation.
  double memory_reserve_fraction = 0.05;

  int gpus() const { return nodes * gpus_per_node; }
};

// A cluster of `gpu`'s usual servers: NVLink inside a node (5 us per message), the GPU's network
// adapter between nodes (10 us), its PCIe link to the host.
ClusterSpec DefaultCluster(const GpuSpec& gpu, int nodes, int gpus_per_node = 8);

}  // namespace loom

#endif  // LOOM_PARALLEL_HARDWARE_PRESETS_H_
