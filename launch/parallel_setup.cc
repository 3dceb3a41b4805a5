#include "launch/parallel_setup.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#ifdef LOOM_HAVE_CUDA
#include "src/cuda/cuda_device.h"
#endif

namespace loom {

HardwareSpec CpuHardware(int world_size) {
  HardwareSpec h;
  h.peak_flops = 55e9;
  h.efficiency = 1.0;
  h.bytes_per_element = 4;
  h.layer_overhead_s = 50e-6;
  h.ranks_per_node = world_size;
  h.intra_node = LinkCost{5e-6, 5e9};
  h.inter_node = h.intra_node;
  return h;
}

CostModel CostModelFromConfig(const ExperimentConfig& config) {
  CostModel cost =
      CostModel::FromModelConfig(config.model, CpuHardware(config.parallel.world_size));
  const ParallelConfig& p = config.parallel;
  if (p.cost_attention_s > 0 || p.cost_linear_s > 0 || p.cost_overhead_s > 0) {
    cost.attention_s = p.cost_attention_s;
    cost.linear_s = p.cost_linear_s;
    cost.overhead_s = p.cost_overhead_s;
  }
  return cost;
}

absl::StatusOr<PlannerOptions> PlannerOptionsFromConfig(const ExperimentConfig& config) {
  const ParallelConfig& p = config.parallel;
  PlannerOptions options;
  absl::StatusOr<PlannerKind> kind = ParsePlannerKind(p.planner);
  if (!kind.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("parallel.planner: ", kind.status().message()));
  }
  options.kind = *kind;
  options.world_size = p.world_size;
  // The planner spreads each step over the pipeline replicas, each as one rank.
  const int replicas = p.world_size / std::max(p.pp, 1);
  options.pipeline.pp = p.pp;
  options.pipeline.vpp = p.vpp;
  if (p.pipeline_schedule != "auto") {
    absl::StatusOr<PipelineScheduleKind> schedule = ParsePipelineScheduleKind(p.pipeline_schedule);
    if (!schedule.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat("parallel.pipeline_schedule: ", schedule.status().message()));
    }
    options.pipeline.schedule = *schedule;
  }
  if (p.chunk_size > 0 && options.kind != PlannerKind::kHdp) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "parallel.chunk_size is for parallel.planner hdp (chunkflow's chunk size is "
        "parallel.capacity_tokens), got planner %s",
        p.planner));
  }
  options.chunk_size = p.chunk_size;
  options.chunk_keep = p.chunk_keep;
  options.capacity_tokens = p.capacity_tokens > 0 ? p.capacity_tokens : config.data.max_doc_tokens;
  if (options.kind == PlannerKind::kStatic) {
    if (p.cp_size > 0) {
      options.cp_size = p.cp_size;
    } else {
      absl::StatusOr<int> cp =
          StaticCpSize(replicas, options.capacity_tokens, config.data.max_doc_tokens);
      if (!cp.ok()) {
        return absl::InvalidArgumentError(absl::StrFormat(
            "parallel.capacity_tokens: %s (data.max_doc_tokens %d)", cp.status().message(),
            config.data.max_doc_tokens));
      }
      options.cp_size = *cp;
    }
  } else if (options.kind == PlannerKind::kChunkFlow) {
    // Chunks take sequences of any length.
  } else if (options.kind == PlannerKind::kHdp && p.chunk_size > options.capacity_tokens) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "parallel.chunk_size (%d) must not exceed parallel.capacity_tokens (%d)", p.chunk_size,
        options.capacity_tokens));
  } else if (options.capacity_tokens * replicas < config.data.max_doc_tokens &&
             !(options.kind == PlannerKind::kHdp && p.chunk_size > 0)) {
    // (With chunks, a sequence the world cannot ring runs as chunks.)
    return absl::InvalidArgumentError(absl::StrFormat(
        "parallel.capacity_tokens: %d %s x %d tokens cannot hold a sequence of "
        "data.max_doc_tokens (%d)",
        replicas, p.pp > 1 ? "pipeline replicas" : "ranks", options.capacity_tokens,
        config.data.max_doc_tokens));
  }
  return options;
}

absl::StatusOr<RuntimeConfig> RuntimeConfigFromConfig(const ExperimentConfig& config) {
  RuntimeConfig r;
  absl::StatusOr<Backend> backend = ParseBackend(config.runtime.backend);
  if (!backend.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("runtime.backend: ", backend.status().message()));
  }
  if (!BackendAvailable(*backend)) {
    return absl::FailedPreconditionError(absl::StrFormat(
        "runtime.backend: this build has no '%s' backend (it needs a CUDA build that found "
        "NCCL: configure with -DLOOM_CUDA=ON where nvcc and NCCL are installed); on CPUs use "
        "runtime.backend: mpi (ranks as processes) or local (ranks as threads)",
        config.runtime.backend));
  }
#ifdef LOOM_HAVE_CUDA
  // Said here, before any rank starts, rather than as a CUDA error from every rank.
  if (*backend == Backend::kNccl) {
    const absl::StatusOr<int> devices = CudaDeviceCount();
    if (!devices.ok() || *devices == 0) {
      return absl::FailedPreconditionError(absl::StrFormat(
          "runtime.backend: nccl needs a GPU per rank and %s; on CPUs use runtime.backend: mpi "
          "(ranks as processes) or local (ranks as threads)",
          devices.ok() ? "this machine shows none (no CUDA device or driver)"
                       : std::string(devices.status().message())));
    }
  }
#endif
  r.backend = *backend;
  r.local_world_size = *backend == Backend::kLocal ? config.parallel.world_size : 1;
  r.timeout = absl::Seconds(config.runtime.timeout_s);
  if (absl::Status s = ValidateRuntimeConfig(r); !s.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("runtime: ", s.message()));
  }
  return r;
}

std::vector<SequenceSpec> SequencesOf(const PackedBatch& batch) {
  std::vector<SequenceSpec> sequences;
  for (size_t i = 0; i + 1 < batch.sequence_starts.size(); ++i) {
    sequences.push_back(SequenceSpec{static_cast<int64_t>(i),
                                     batch.sequence_starts[i + 1] - batch.sequence_starts[i]});
  }
  return sequences;
}

}  // namespace loom
