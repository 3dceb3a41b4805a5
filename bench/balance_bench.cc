// Balance of the planners: over steps drawn from each length preset, each step's max/mean rank
// compute (the cost model's forward + backward time summed over a rank's micro-batches) for the
// static DP x CP mesh, naive HDP and the balance scheduler; the balance scheduler's planning time
// per step at 64, 1,024 and 12,288 ranks; and the ring bytes each rank sends, relative to static.
//
// Setting: C = 64K tokens per rank per micro-batch and a global batch of about 8 micro-batches of C
// per rank (32M tokens on 64 ranks, ByteScale's batch size); lengths as the presets give them
// (Byted's longest, 4M, fills all 64 ranks). The cost model is FLOP-based for a LLaMA-7B shape on
// an H100/H200-class GPU (bf16, 50% of peak). The static mesh uses the smallest power-of-two CP
// size whose groups hold the preset's longest sequence. Ring bytes exclude the gradient
// all-reduce, which is the same for every planner.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "bench/bench.h"
#include "data/length_distribution.h"
#include "nlohmann/json.hpp"
#include "parallel/balance_scheduler.h"
#include "parallel/hdp_planner.h"
#include "parallel/plan_metrics.h"
#include "parallel/plan_validator.h"
#include "parallel/static_planner.h"

namespace loom::bench {
namespace {

constexpr int64_t kCapacity = int64_t{64} << 10;
constexpr int kMicroBatchesPerRank = 8;

[[noreturn]] void Fail(const absl::Status& status) {
  std::fprintf(stderr, "balance bench: %s\n", status.ToString().c_str());
  std::exit(1);
}

template <typename T>
T OrDie(absl::StatusOr<T> value) {
  if (!value.ok()) Fail(value.status());
  return std::move(value).value();
}

CostModel SevenBCost() {
  ModelConfig model;
  model.vocab_size = 32000;
  model.d_model = 4096;
  model.n_layers = 32;
  model.n_heads = 32;
  model.n_kv_heads = 32;
  model.ffn_dim = 11008;
  return CostModel::FromModelConfig(model);
}

// Sequences until the batch holds about kMicroBatchesPerRank * world * C tokens.
std::vector<SequenceSpec> DrawBatch(const LengthDistribution& dist, int world, uint64_t seed) {
  const int64_t target = kMicroBatchesPerRank * world * kCapacity;
  std::vector<SequenceSpec> batch;
  int64_t tokens = 0;
  for (uint64_t draw = 0; tokens < target; ++draw) {
    for (const int64_t length : dist.Sample(4096, seed * 100003 + draw)) {
      batch.push_back({static_cast<int64_t>(batch.size()), length});
      tokens += length;
      if (tokens >= target) break;
    }
  }
  return batch;
}

int StaticCpSize(const LengthDistribution& dist, int world) {
  for (int cp = 1; cp <= world; cp *= 2) {
    if (world % cp == 0 && cp * kCapacity >= dist.max_length() + 2 * cp) return cp;
  }
  return world;
}

double Ms(std::chrono::steady_clock::duration d) {
  return std::chrono::duration<double, std::milli>(d).count();
}

struct PresetFigures {
  double static_balance = 0, naive_balance = 0, balanced_balance = 0;
  double static_bytes = 0, naive_bytes = 0, balanced_bytes = 0;
  double plan_ms = 0;
  int cp = 1;
};

PresetFigures RunPreset(const std::string& name, int world, int steps, const CostModel& cost,
                        bool validate) {
  const LengthDistribution dist = OrDie(LengthDistribution::Preset(name));
  PresetFigures f;
  f.cp = StaticCpSize(dist, world);
  for (int step = 0; step < steps; ++step) {
    const std::vector<SequenceSpec> batch = DrawBatch(dist, world, static_cast<uint64_t>(step));
    const auto start = std::chrono::steady_clock::now();
    const StepPlan balanced = OrDie(PlanBalancedHdp(batch, {world, kCapacity}, cost));
    f.plan_ms += Ms(std::chrono::steady_clock::now() - start);
    const StepPlan naive = OrDie(PlanNaiveHdp(batch, {world, kCapacity}, cost));
    const StepPlan statik = OrDie(PlanStatic(batch, {world, f.cp, kCapacity}, cost));
    if (validate) {
      for (const StepPlan* plan : {&balanced, &naive, &statik}) {
        if (absl::Status s = ValidatePlan(*plan, cost); !s.ok()) Fail(s);
      }
    }
    const PlanMetrics b = MeasurePlan(balanced, cost);
    const PlanMetrics n = MeasurePlan(naive, cost);
    const PlanMetrics s = MeasurePlan(statik, cost);
    f.balanced_balance += b.balance();
    f.naive_balance += n.balance();
    f.static_balance += s.balance();
    f.balanced_bytes += b.mean_ring_bytes_sent;
    f.naive_bytes += n.mean_ring_bytes_sent;
    f.static_bytes += s.mean_ring_bytes_sent;
  }
  for (double* x : {&f.static_balance, &f.naive_balance, &f.balanced_balance, &f.static_bytes,
                    &f.naive_bytes, &f.balanced_bytes, &f.plan_ms}) {
    *x /= steps;
  }
  return f;
}

// Mean milliseconds of the balance scheduler per step on a Byted batch for `world` ranks.
double PlanMs(int world, int steps, const CostModel& cost) {
  const LengthDistribution dist = OrDie(LengthDistribution::Preset("byted"));
  double total = 0.0;
  for (int step = 0; step < steps; ++step) {
    const std::vector<SequenceSpec> batch = DrawBatch(dist, world, 7000 + step);
    const auto start = std::chrono::steady_clock::now();
    const StepPlan plan = OrDie(PlanBalancedHdp(batch, {world, kCapacity}, cost));
    total += Ms(std::chrono::steady_clock::now() - start);
  }
  return total / steps;
}

nlohmann::json RunBalanceBench(const BenchOptions& options) {
  const CostModel cost = SevenBCost();
  const int world = 64;
  const int steps = options.quick ? 10 : 200;
  nlohmann::json presets = nlohmann::json::object();
  double hdp_max = 0, naive_max = 0, static_max = 0, bytes_vs_static = 0, naive_bytes = 0;
  std::printf("balance: %d ranks, C = %lld tokens, ~%d micro-batches of C per rank, %d steps per "
              "preset, LLaMA-7B shape\n",
              world, static_cast<long long>(kCapacity), kMicroBatchesPerRank, steps);
  std::printf("%-10s %4s %10s %10s %10s %14s %14s %9s\n", "preset", "cp", "static", "naive hdp",
              "balanced", "bytes/static", "naive/static", "plan ms");
  for (const std::string name : {"byted", "github", "chunkflow", "lmsyschat1m"}) {
    const PresetFigures f = RunPreset(name, world, steps, cost, /*validate=*/true);
    const double ratio = f.static_bytes > 0 ? f.balanced_bytes / f.static_bytes : 0.0;
    const double naive_ratio = f.static_bytes > 0 ? f.naive_bytes / f.static_bytes : 0.0;
    std::printf("%-10s %4d %10.4f %10.4f %10.4f %14.4f %14.4f %9.2f\n", name.c_str(), f.cp,
                f.static_balance, f.naive_balance, f.balanced_balance, ratio, naive_ratio,
                f.plan_ms);
    presets[name] = {{"static_cp", f.cp},
                     {"static_balance", f.static_balance},
                     {"naive_balance", f.naive_balance},
                     {"hdp_balance", f.balanced_balance},
                     {"bytes_vs_static", ratio},
                     {"naive_bytes_vs_static", naive_ratio},
                     {"plan_ms", f.plan_ms}};
    hdp_max = std::max(hdp_max, f.balanced_balance);
    naive_max = std::max(naive_max, f.naive_balance);
    static_max = std::max(static_max, f.static_balance);
    bytes_vs_static = std::max(bytes_vs_static, ratio);
    naive_bytes = std::max(naive_bytes, naive_ratio);
  }
  const int steps_1024 = options.quick ? 2 : 20;
  const int steps_12288 = options.quick ? 1 : 5;
  const double ms_64 = PlanMs(64, steps, cost);
  const double ms_1024 = PlanMs(1024, steps_1024, cost);
  const double ms_12288 = PlanMs(12288, steps_12288, cost);
  std::printf("balance scheduler planning time per step (byted): 64 ranks %.2f ms (%d steps), "
              "1024 ranks %.2f ms (%d steps), 12288 ranks %.2f ms (%d steps)\n",
              ms_64, steps, ms_1024, steps_1024, ms_12288, steps_12288);
  return {{"ranks", world},
          {"capacity_tokens", kCapacity},
          {"micro_batches_per_rank", kMicroBatchesPerRank},
          {"steps_per_preset", steps},
          {"hdp_balance_max", hdp_max},
          {"naive_balance_max", naive_max},
          {"static_balance_max", static_max},
          {"plan_ms_64", ms_64},
          {"plan_ms_1024", ms_1024},
          {"plan_ms_12288", ms_12288},
          {"plan_steps_1024", steps_1024},
          {"plan_steps_12288", steps_12288},
          {"bytes_vs_static", bytes_vs_static},
          {"naive_bytes_vs_static", naive_bytes},
          {"presets", presets}};
}

const Registrar reg("balance", RunBalanceBench);

}  // namespace
}  // namespace loom::bench
