// `pipeline`: the bubble of every pipeline schedule, and of `auto`, on variable-cost micro-batches
// (parallel/pipeline_planner.h), from the plan's cost model and from measured per-action times.
//
// Cases: length presets byted and chunkflow x p in {4, 8} stages x m in {8, 32} micro-batches of
// one replica (world = p). The batch: lengths drawn from the preset, divided by 16 (rounded up)
// and capped at m * C tokens, until it holds m * C tokens (the last one cut to fit), C = 256.
// It is planned by balanced HDP with chunks (chunk size C, every chunk keeping its activations):
// short sequences packed into micro-batches of up to C tokens, longer ones cut into dependent
// chunks whose cost grows with their position (each attends to all earlier tokens), so the
// micro-batches differ in cost by up to ~10x here. m is the replica's micro-batch count as
// planned (`m_planned`, at least m: packing leaves some room).
//
// Schedules: gpipe, 1f1b, zb-h1, interleaved (2 model chunks per rank), auto (one chunk per rank,
// chosen per step from 1f1b / zb-h1 / gpipe, five micro-batch orders and the chunks as planned or
// sliced by cost (token_slicing.h), by simulated step time). m' is the replica's micro-batch
// count as run: auto's slicing may add some. The step time (simulated, from the model and from the
// measured actions) is printed beside the bubble: slices add fixed costs, which count as busy.
// Bubble = idle over busy compute time until the last compute ends, all ranks
// (SimResult::bubble_fraction; the textbook (p - 1) / m for 1F1B with equal micro-batches).
//  - model: SimulateStep under the FLOP cost model of the bench model.
//  - measured: the plan runs for real on a local world (one thread per rank), every action's
//    thread CPU time is recorded (ExecutorOptions::action_cpu_s), and the simulator replays the
//    plan with those times (SimulatorOptions::measured_compute_s). Thread CPU time leaves out
//    the waits and the time a rank is preempted, so p ranks sharing 2 cores still give each
//    action's own compute time; the replay then puts them on a timeline as p devices would.
//
// The cost model is the FLOP-based one for this machine's rank (HardwareSpec below); the measured
// figures show how far that is from what the kernels do.
// Model: vocab 257, d_model 64, 16 layers (p = 8 with 2 chunks per rank needs 16 stages), 4 heads
// sharing 2 K/V heads, ffn 176, fp32. --quick: m = 8 and p = 4 only, one preset per figure.
// --repeats is ignored (one run per plan; the measured figure is a replay of that run).
#include <omp.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/strings/str_format.h"
#include "bench/bench.h"
#include "bench/random_batch.h"
#include "data/length_distribution.h"
#include "nlohmann/json.hpp"
#include "parallel/plan_validator.h"
#include "parallel/planner.h"
#include "parallel/simulator.h"
#include "parallel/step_executor.h"
#include "runtime/local_world.h"
#include "src/model.h"

namespace loom::bench {
namespace {

constexpr int64_t kCapacity = 256;
constexpr int64_t kScale = 16;

[[noreturn]] void Fail(const absl::Status& status) {
  std::fprintf(stderr, "pipeline bench: %s\n", status.ToString().c_str());
  std::exit(1);
}

template <typename T>
T OrDie(absl::StatusOr<T> value) {
  if (!value.ok()) Fail(value.status());
  return std::move(value).value();
}

ModelConfig BenchModel() {
  ModelConfig c;
  c.vocab_size = 257;
  c.d_model = 64;
  c.n_layers = 16;
  c.n_heads = 4;
  c.n_kv_heads = 2;
  c.ffn_dim = 176;
  return c;
}

std::vector<int64_t> Lengths(const std::string& preset, int64_t tokens, uint64_t seed) {
  const LengthDistribution dist = OrDie(LengthDistribution::Preset(preset));
  std::vector<int64_t> out;
  int64_t total = 0;
  for (const int64_t length : dist.Sample(100000, seed)) {
    const int64_t l = std::min({tokens, (length + kScale - 1) / kScale, tokens - total});
    out.push_back(l);
    total += l;
    if (total == tokens) break;
  }
  return out;
}

struct Schedule {
  const char* name;
  int vpp;
  std::optional<PipelineScheduleKind> kind;  // empty: auto
};

struct Result {
  std::string schedule;  // as run (auto: what it chose)
  int m_planned = 0;
  double bubble_model = 0.0;
  double bubble_measured = 0.0;
  double step_model = 0.0;  // simulated step seconds
  double step_measured = 0.0;
};

int ReplicaMicroBatches(const StepPlan& plan) {
  int forwards = 0;
  for (const Action& a : plan.ranks.front().actions) {
    forwards += a.kind == ActionKind::kForward && a.stage == 0;
  }
  return forwards;
}

// The plan run for real: each rank's actions' thread CPU seconds.
std::vector<std::vector<double>> MeasureActions(const StepPlan& plan, const PackedBatch& batch,
                                                const ModelConfig& config) {
  std::vector<std::vector<double>> cpu(static_cast<size_t>(plan.world_size()));
  std::unique_ptr<LocalWorld> world = OrDie(LocalWorld::Create(plan.world_size(), absl::Seconds(600)));
  const absl::Status status = world->Run([&](Communicator& comm) -> absl::Status {
    omp_set_num_threads(1);
    absl::StatusOr<std::unique_ptr<Model>> model = Model::Create(config);
    if (!model.ok()) return model.status();
    (*model)->InitWeights(1);
    ExecutorOptions options;
    options.action_cpu_s = &cpu[static_cast<size_t>(comm.rank())];
    return ExecuteStep(comm, plan, batch, **model, options).status();
  });
  if (!status.ok()) Fail(status);
  return cpu;
}

nlohmann::json RunPipelineBench(const BenchOptions& options) {
  const ModelConfig config = BenchModel();
  // This machine for one rank on one thread: fp32 at about half the 2-thread sgemm rate of
  // DESIGN.md section 7, and the fixed cost per layer and micro-batch the calibrate benchmark
  // measures (order of 1e-4 s).
  HardwareSpec hardware;
  hardware.peak_flops = 27.5e9;
  hardware.efficiency = 1.0;
  hardware.bytes_per_element = 4;
  hardware.layer_overhead_s = 1e-4;
  const CostModel cost = CostModel::FromModelConfig(config, hardware);
  const std::vector<Schedule> schedules = {{"gpipe", 1, PipelineScheduleKind::kGpipe},
                                           {"1f1b", 1, PipelineScheduleKind::k1f1b},
                                           {"zb-h1", 1, PipelineScheduleKind::kZbh1},
                                           {"interleaved", 2, PipelineScheduleKind::kInterleaved},
                                           {"auto", 1, std::nullopt}};
  const std::vector<int> stage_counts = options.quick ? std::vector<int>{4} : std::vector<int>{4, 8};
  const std::vector<int> batch_sizes = options.quick ? std::vector<int>{8} : std::vector<int>{8, 32};
  nlohmann::json cases = nlohmann::json::array();
  // Worst (largest) auto / 1f1b bubble ratio per preset, from the model and measured.
  std::map<std::string, double> worst_model, worst_measured;
  // And of the step time: slicing adds micro-batches, whose fixed costs count as busy time, so
  // a smaller bubble is only a gain if the step is shorter too.
  std::map<std::string, double> worst_step_model, worst_step_measured;
  std::printf("%-10s %2s %3s %4s  %-12s %-12s %12s %15s %10s %13s\n", "preset", "p", "m", "m'",
              "schedule", "(chosen)", "bubble model", "bubble measured", "step model",
              "step measured");
  for (const char* preset : {"byted", "chunkflow"}) {
    for (const int p : stage_counts) {
      for (const int m : batch_sizes) {
        const std::vector<int64_t> lengths =
            Lengths(preset, m * kCapacity, 7 + static_cast<uint64_t>(p * 100 + m));
        std::vector<SequenceSpec> sequences;
        for (const int64_t l : lengths) {
          sequences.push_back({static_cast<int64_t>(sequences.size()), l});
        }
        const PackedBatch batch = RandomPackedBatch(lengths, config.vocab_size, 11);
        std::map<std::string, Result> results;
        for (const Schedule& s : schedules) {
          PlannerOptions planner;
          planner.kind = PlannerKind::kHdp;
          planner.world_size = p;
          planner.capacity_tokens = kCapacity;
          planner.chunk_size = kCapacity;
          planner.pipeline = {p, s.vpp, s.kind};
          const StepPlan plan = OrDie(PlanStep(sequences, planner, cost));
          if (absl::Status v = ValidatePlan(plan, cost); !v.ok()) Fail(v);
          Result r;
          r.schedule = plan.schedule;
          r.m_planned = ReplicaMicroBatches(plan);
          const SimResult model = OrDie(SimulateStep(plan, cost));
          r.bubble_model = model.bubble_fraction();
          r.step_model = model.step_s;
          const std::vector<std::vector<double>> measured = MeasureActions(plan, batch, config);
          SimulatorOptions replay;
          replay.measured_compute_s = &measured;
          const SimResult replayed = OrDie(SimulateStep(plan, cost, replay));
          r.bubble_measured = replayed.bubble_fraction();
          r.step_measured = replayed.step_s;
          std::printf("%-10s %2d %3d %4d  %-12s %-12s %12.4f %15.4f %10.4f %13.4f\n", preset, p, m,
                      r.m_planned, s.name, r.schedule.c_str(), r.bubble_model, r.bubble_measured,
                      r.step_model, r.step_measured);
          std::fflush(stdout);
          cases.push_back({{"preset", preset},
                           {"schedule", s.name},
                           {"chosen", r.schedule},
                           {"p", p},
                           {"m", m},
                           {"m_planned", r.m_planned},
                           {"bubble_model", r.bubble_model},
                           {"bubble_measured", r.bubble_measured},
                           {"step_s_model", r.step_model},
                           {"step_s_measured", r.step_measured}});
          results[s.name] = r;
        }
        const Result& base = results.at("1f1b");
        const Result& chosen = results.at("auto");
        double& wm = worst_model[preset];
        double& wx = worst_measured[preset];
        wm = std::max(wm, chosen.bubble_model / base.bubble_model);
        wx = std::max(wx, chosen.bubble_measured / base.bubble_measured);
        double& sm = worst_step_model[preset];
        double& sx = worst_step_measured[preset];
        sm = std::max(sm, chosen.step_model / base.step_model);
        sx = std::max(sx, chosen.step_measured / base.step_measured);
      }
    }
  }
  std::printf("auto / 1f1b bubble, worst case: byted %.3f (measured %.3f), chunkflow %.3f "
              "(measured %.3f)\n",
              worst_model["byted"], worst_measured["byted"], worst_model["chunkflow"],
              worst_measured["chunkflow"]);
  std::printf("auto / 1f1b step time, worst case: byted %.3f (measured %.3f), chunkflow %.3f "
              "(measured %.3f)\n",
              worst_step_model["byted"], worst_step_measured["byted"],
              worst_step_model["chunkflow"], worst_step_measured["chunkflow"]);
  return {{"benchmark", "pipeline"},
          {"auto_over_1f1b_byted", worst_model["byted"]},
          {"auto_over_1f1b_chunkflow", worst_model["chunkflow"]},
          {"auto_over_1f1b_byted_measured", worst_measured["byted"]},
          {"auto_over_1f1b_chunkflow_measured", worst_measured["chunkflow"]},
          {"auto_over_1f1b_step_byted", worst_step_model["byted"]},
          {"auto_over_1f1b_step_chunkflow", worst_step_model["chunkflow"]},
          {"auto_over_1f1b_step_byted_measured", worst_step_measured["byted"]},
          {"auto_over_1f1b_step_chunkflow_measured", worst_step_measured["chunkflow"]},
          {"capacity_tokens", kCapacity},
          {"cases", cases}};
}

const Registrar kRegistrar("pipeline", RunPipelineBench);

}  // namespace
}  // namespace loom::bench
