#include "parallel/hardware_presets.h"

#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"

namespace loom {
namespace {

constexpr double kGB = 1e9;
constexpr double kTFLOPS = 1e12;

const std::vector<GpuSpec>& Presets() {
  static const auto* presets = new std::vector<GpuSpec>{
      {.name = "a100-80g",
       .peak_bf16_flops = 312 * kTFLOPS,
       .hbm_bytes_per_s = 2039 * kGB,
       .memory_bytes = static_cast<int64_t>(80 * kGB),
       .nvlink_bytes_per_s = 300 * kGB,
       .network_bytes_per_s = 25 * kGB,
       .host_bytes_per_s = 32 * kGB,
       .host_memory_bytes = static_cast<int64_t>(256 * kGB),
       .source = "NVIDIA A100 80GB SXM datasheet: 312 TFLOPS bf16 dense (624 sparse), HBM2e "
                 "2,039 GB/s, 80 GB, NVLink 600 GB/s both directions, PCIe Gen4 x16; DGX A100 "
                 "(80GB): one 200 Gb/s HDR InfiniBand adapter per GPU, 2 TB of host memory"},
      {.name = "h100-80g",
       .peak_bf16_flops = 989 * kTFLOPS,
       .hbm_bytes_per_s = 3350 * kGB,
       .memory_bytes = static_cast<int64_t>(80 * kGB),
       .nvlink_bytes_per_s = 450 * kGB,
       .network_bytes_per_s = 50 * kGB,
       .host_bytes_per_s = 64 * kGB,
       .host_memory_bytes = static_cast<int64_t>(256 * kGB),
       .source = "NVIDIA H100 SXM5 80GB datasheet: 989 TFLOPS bf16 dense (1,979 sparse), HBM3 "
                 "3.35 TB/s, 80 GB, NVLink 900 GB/s both directions, PCIe Gen5 x16; DGX H100: "
                 "one 400 Gb/s NDR adapter per GPU, 2 TB of host memory"},
      {.name = "h200-141g",
       .peak_bf16_flops = 989 * kTFLOPS,
       .hbm_bytes_per_s = 4800 * kGB,
       .memory_bytes = static_cast<int64_t>(141 * kGB),
       .nvlink_bytes_per_s = 450 * kGB,
       .network_bytes_per_s = 50 * kGB,
       .host_bytes_per_s = 64 * kGB,
       .host_memory_bytes = static_cast<int64_t>(256 * kGB),
       .source = "NVIDIA H200 SXM 141GB datasheet: 989 TFLOPS bf16 dense (1,979 sparse), HBM3e "
                 "4.8 TB/s, 141 GB, NVLink 900 GB/s both directions, PCIe Gen5 x16; DGX H200: "
                 "one 400 Gb/s NDR adapter per GPU, 2 TB of host memory"},
  };
  return *presets;
}

}  // namespace

absl::StatusOr<GpuSpec> GpuPreset(std::string_view name) {
  for (const GpuSpec& gpu : Presets()) {
    if (name == gpu.name) return gpu;
  }
  return absl::NotFoundError(absl::StrFormat("GPU preset '%s' is unknown (presets: %s)", name,
                                             absl::StrJoin(GpuPresetNames(), ", ")));
}

std::vector<std::string> GpuPresetNames() {
  std::vector<std::string> names;
  for (const GpuSpec& gpu : Presets()) names.push_back(gpu.name);
  return names;
}

ClusterSpec DefaultCluster(const GpuSpec& gpu, int nodes, int gpus_per_node) {
  ClusterSpec c;
  c.nodes = nodes;
  c.gpus_per_node = gpus_per_node;
  c.gpu = gpu;
  c.intra_node = LinkCost{5e-6, gpu.nvlink_bytes_per_s};
  c.inter_node = LinkCost{10e-6, gpu.network_bytes_per_s};
  c.host_bytes_per_s = gpu.host_bytes_per_s;
  c.host_memory_bytes = gpu.host_memory_bytes;
  return c;
}

}  // namespace loom
