// sim_scale: how planning, validating and simulating one step grow with the cluster, from 64 to
// 12,288 GPUs (the target: a 12,288-GPU step in <= 10 s on this machine). The cluster is H100s,
// 8 per node, LLaMA 7B, a global batch of 512K tokens per GPU (8 micro-batches of 64K, ByteScale's
// setting) with Byted lengths at 2M context; each size is timed for `static`, `hdp` and `best`
// (`best` plans without per-layer checkpointing, so its C is the memory's 7K and it runs about
// ten times as many micro-batches). Medians of --repeats runs, one batch each.
#include <chrono>
#include <cstdio>
#include <vector>

#include "absl/strings/str_format.h"
#include "bench/bench.h"
#include "data/length_batch.h"
#include "data/length_distribution.h"
#include "parallel/cluster_cost.h"
#include "parallel/plan_validator.h"
#include "parallel/simulator.h"
#include "parallel/strategy.h"
#include "src/model_presets.h"

namespace loom::bench {
namespace {

double Since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

void Check(const absl::Status& s) {
  if (s.ok()) return;
  std::fprintf(stderr, "sim_scale: %s\n", std::string(s.message()).c_str());
  std::exit(1);
}

struct Timing {
  double plan = 0, validate = 0, simulate = 0;
  double total() const { return plan + validate + simulate; }
};

nlohmann::json SimScale(const BenchOptions& o) {
  const ModelConfig model = *ModelPreset("llama-7b");
  const LengthDistribution lengths = *LengthDistribution::Preset("byted");
  const int64_t context = int64_t{2} << 20;
  const std::vector<int> sizes =
      o.quick ? std::vector<int>{64, 1024} : std::vector<int>{64, 256, 1024, 4096, 12288};
  const std::vector<StrategyKind> kinds = {StrategyKind::kStatic, StrategyKind::kHdp,
                                           StrategyKind::kBest};
  std::printf("sim_scale: LLaMA 7B on H100s, Byted lengths at 2M, 512K tokens per GPU; seconds, "
              "medians of %d\n",
              o.repeats);
  std::printf("  %6s %-8s %9s %8s %8s %9s %9s %8s\n", "GPUs", "strategy", "sequences", "plan",
              "validate", "simulate", "total", "step s");
  nlohmann::json rows = nlohmann::json::array();
  for (const int gpus : sizes) {
    for (const StrategyKind kind : kinds) {
      StrategySpec spec;
      spec.kind = kind;
      const bool recompute = kind != StrategyKind::kBest;
      absl::StatusOr<ClusterCost> cc =
          MakeClusterCost(model, DefaultCluster(*GpuPreset("h100-80g"), gpus / 8), 1, recompute);
      Check(cc.status());
      const int64_t c = CapacityFromMemory(*cc);
      const StrategyContext ctx{cc->world_size, c, context, cc->activation_budget_bytes,
                                cc->host_memory_bytes};
      std::vector<Timing> times;
      double step_s = 0;
      size_t sequences = 0;
      for (int r = 0; r < o.repeats; ++r) {
        std::vector<SequenceSpec> batch;
        for (const int64_t l : DrawLengthBatch(lengths, int64_t{gpus} * 512 * 1024, context,
                                               static_cast<uint64_t>(r + 1))) {
          batch.push_back({static_cast<int64_t>(batch.size()), l});
        }
        sequences = batch.size();
        Timing t;
        auto t0 = std::chrono::steady_clock::now();
        absl::StatusOr<StepPlan> plan = PlanWithStrategy(batch, spec, ctx, cc->cost);
        Check(plan.status());
        t.plan = Since(t0);
        t0 = std::chrono::steady_clock::now();
        Check(ValidatePlan(*plan, cc->cost));
        t.validate = Since(t0);
        t0 = std::chrono::steady_clock::now();
        absl::StatusOr<SimResult> sim = SimulateStep(*plan, cc->cost);
        Check(sim.status());
        t.simulate = Since(t0);
        step_s = sim->step_s;
        times.push_back(t);
      }
      auto median = [&](double Timing::*field) {
        std::vector<double> v;
        for (const Timing& t : times) v.push_back(t.*field);
        return Median(v);
      };
      std::vector<double> totals;
      for (const Timing& t : times) totals.push_back(t.total());
      const Timing m{median(&Timing::plan), median(&Timing::validate), median(&Timing::simulate)};
      std::printf("  %6d %-8s %9zu %8.3f %8.3f %9.3f %9.3f %8.1f\n", gpus, StrategyKindName(kind),
                  sequences, m.plan, m.validate, m.simulate, Median(totals), step_s);
      rows.push_back({{"gpus", gpus},
                      {"strategy", StrategyKindName(kind)},
                      {"sequences", sequences},
                      {"plan_s", m.plan},
                      {"validate_s", m.validate},
                      {"simulate_s", m.simulate},
                      {"total_s", Median(totals)},
                      {"simulated_step_s", step_s}});
    }
  }
  double largest_worst = 0;
  for (const nlohmann::json& r : rows) {
    if (r["gpus"] == sizes.back()) {
      largest_worst = std::max(largest_worst, r["total_s"].get<double>());
    }
  }
  return {{"rows", rows}, {"largest_gpus", sizes.back()}, {"largest_total_s_max", largest_worst}};
}

Registrar reg("sim_scale", SimScale);

}  // namespace
}  // namespace loom::bench
