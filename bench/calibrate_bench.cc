// calibrate: the cost model's T(s) = a*s^2 + b*s + c per layer (parallel/cost_model.h), measured
// on this machine. Model::ForwardBackward is timed on one micro-batch holding a single document of
// s tokens for a grid of s; the medians divided by the layer count are fitted by least squares;
// the fit is then checked on packed micro-batches of mixed lengths it never saw, predicted as
// CostModel::MicroBatchSeconds predicts them for the planners. Prints the `parallel.cost_*` lines
// to paste into an experiment with this model.
//
// The model is the quickstart's (configs/tiny.yaml), so the lines paste straight into that file.
// The `step` benchmark's d_model 512 model takes about five times as long per pass, and its
// attention only overtakes its linear terms past about 6K tokens, beyond a grid that fits the time
// budget, which would leave a poorly determined.
//
// The fit weighs each point by 1/T (it minimises relative, not absolute, error): the times span
// two orders of magnitude, and an unweighted fit would let the longest documents decide alone,
// leaving c, which short documents show, to chance. Coefficients are kept non-negative, since the
// planners read a negative term as work that makes a micro-batch faster (bench/least_squares.h).
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "bench/bench.h"
#include "bench/least_squares.h"
#include "parallel/cost_model.h"
#include "src/model.h"
#include "src/random.h"

namespace loom::bench {
namespace {

struct Coefficients {
  double a = 0.0, b = 0.0, c = 0.0;  // seconds per layer: per squared token, per token, fixed
};

// y ~ a*s^2 + b*s + c, weighted and non-negative (least_squares.h).
Coefficients FitNonNegative(const std::vector<double>& s, const std::vector<double>& y) {
  std::vector<Features> x;
  for (const double v : s) x.push_back({v * v, v, 1.0});
  const Features f = bench::FitNonNegative(x, y);
  return {f[0], f[1], f[2]};
}

// configs/tiny.yaml's model: 4 layers of width 128, 4 query heads sharing 2 key/value heads.
ModelConfig QuickstartModelConfig() {
  ModelConfig c;
  c.vocab_size = 257;
  c.d_model = 128;
  c.n_layers = 4;
  c.n_heads = 4;
  c.n_kv_heads = 2;
  c.ffn_dim = 352;
  return c;
}

TokenBatch RandomDocuments(const std::vector<int>& lengths, int vocab, uint64_t seed) {
  Random rng(seed);
  std::vector<std::vector<int32_t>> docs;
  for (int len : lengths) {
    std::vector<int32_t> d(static_cast<size_t>(len));
    for (int32_t& t : d) t = static_cast<int32_t>(rng.NextU64() % static_cast<uint64_t>(vocab));
    docs.push_back(std::move(d));
  }
  return TokenBatch::FromDocuments(docs);
}

// Seconds of each batch's Model::ForwardBackward, one list of `repeats` timings per batch.
std::vector<std::vector<double>> TimeForwardBackward(Model& model,
                                                     const std::vector<TokenBatch>& batches,
                                                     int repeats) {
  auto run = [&](const TokenBatch& b) {
    return TimeSeconds(
        [&] { model.ForwardBackward(b, 1.0f / static_cast<float>(b.num_targets())); });
  };
  // Warm-up on the largest batch: allocations, OpenMP threads.
  run(*std::max_element(
      batches.begin(), batches.end(),
      [](const TokenBatch& x, const TokenBatch& y) { return x.size() < y.size(); }));
  // Round robin over the batches within each repeat, so that a change of load on a shared machine
  // touches every size alike instead of bending the curve.
  std::vector<std::vector<double>> times(batches.size());
  for (int r = 0; r < repeats; ++r) {
    for (size_t i = 0; i < batches.size(); ++i) {
      model.ZeroGrads();
      times[i].push_back(run(batches[i]));
    }
  }
  return times;
}

// The 1-minute load average, -1 when unknown. Other work on the cores shows in every figure:
// OpenMP threads that lose their core wait at each barrier for it to come back.
double LoadAverage() {
  double load = -1.0;
  if (FILE* f = std::fopen("/proc/loadavg", "r")) {
    if (std::fscanf(f, "%lf", &load) != 1) load = -1.0;
    std::fclose(f);
  }
  return load;
}

double Spread(const std::vector<double>& times) {
  const auto [fastest, slowest] = std::minmax_element(times.begin(), times.end());
  return (*slowest - *fastest) / Median(times);
}

int Sum(const std::vector<int>& v) {
  int total = 0;
  for (int x : v) total += x;
  return total;
}

nlohmann::json Calibrate(const BenchOptions& o) {
  const ModelConfig config = QuickstartModelConfig();
  Allocator alloc;
  auto model = std::move(Model::Create(config, &alloc)).value();
  model->InitWeights(1);
  const std::vector<int> grid = o.quick ? std::vector<int>{64, 128, 256, 512}
                                        : std::vector<int>{64, 128, 256, 512, 1024, 2048, 4096};
  // Held out: packed micro-batches of lengths off the grid, from one long document with a few
  // short ones to many short ones, where the fixed and linear terms matter most.
  const std::vector<std::vector<int>> mixes =
      o.quick ? std::vector<std::vector<int>>{{300, 150, 50}, {40, 40, 40, 40, 40, 40}}
              : std::vector<std::vector<int>>{{3000, 700, 300, 96},
                                              {1000, 600, 300, 100},
                                              {2500, 40, 40, 40, 40},
                                              std::vector<int>(12, 160),
                                              {1536, 1536}};
  std::vector<TokenBatch> batches;
  for (size_t i = 0; i < grid.size(); ++i) {
    batches.push_back(RandomDocuments({grid[i]}, config.vocab_size, i + 1));
  }
  for (size_t i = 0; i < mixes.size(); ++i) {
    batches.push_back(RandomDocuments(mixes[i], config.vocab_size, 100 + i));
  }

  const double load = LoadAverage();
  const std::vector<std::vector<double>> times = TimeForwardBackward(*model, batches, o.repeats);
  std::vector<double> s, y;
  for (size_t i = 0; i < grid.size(); ++i) {
    s.push_back(grid[i]);
    y.push_back(Median(times[i]) / config.n_layers);
  }
  const Coefficients fit = FitNonNegative(s, y);
  CostModel cost;
  cost.attention_s = fit.a;
  cost.linear_s = fit.b;
  cost.overhead_s = fit.c;
  cost.n_layers = config.n_layers;

  std::printf(
      "calibrate: Model::ForwardBackward, d_model %d, %d layers, %d heads (%d kv), ffn "
      "%d, vocab %d, %d threads, medians of %d\n",
      config.d_model, config.n_layers, config.n_heads, config.n_kv_heads, config.ffn_dim,
      config.vocab_size, o.threads, o.repeats);
  const long cores = sysconf(_SC_NPROCESSORS_ONLN);
  if (load >= static_cast<double>(cores)) {
    std::printf(
        "  warning: load average %.1f on %ld cores before the run: other work shares the "
        "cores, and these figures include its interference\n",
        load, cores);
  }
  std::printf("  fit per layer: T(s) = %.4g s^2 + %.4g s + %.4g  (seconds)\n", fit.a, fit.b, fit.c);
  // spread: (slowest - fastest) / median over the repeats, how far to trust a row.
  std::printf("  %-28s %8s %12s %8s %12s %12s %8s\n", "documents (fitted)", "tokens", "step s",
              "spread", "layer ms", "fit ms", "error");
  std::vector<double> fit_errors;
  for (size_t i = 0; i < grid.size(); ++i) {
    const double predicted = cost.LayerSeconds(grid[i]);
    fit_errors.push_back(RelativeError(predicted, y[i]));
    std::printf("  %-28d %8d %12.4f %7.0f%% %12.3f %12.3f %7.1f%%\n", grid[i], grid[i],
                Median(times[i]), 100 * Spread(times[i]), 1e3 * y[i], 1e3 * predicted,
                100 * fit_errors.back());
  }
  std::printf("  %-28s %8s %12s %8s %12s %12s %8s\n", "documents (held out)", "tokens", "step s",
              "spread", "predicted s", "", "error");
  std::vector<double> holdout_errors;
  int underpredicted = 0;
  for (size_t m = 0; m < mixes.size(); ++m) {
    std::vector<TokenRange> ranges;
    for (size_t d = 0; d < mixes[m].size(); ++d) {
      ranges.push_back({static_cast<int64_t>(d), 0, mixes[m][d]});
    }
    const double measured = Median(times[grid.size() + m]);
    const double predicted = cost.MicroBatchSeconds(ranges);
    holdout_errors.push_back(RelativeError(predicted, measured));
    underpredicted += measured > predicted ? 1 : 0;
    std::string docs = absl::StrJoin(mixes[m], "+");
    if (docs.size() > 28) docs = absl::StrFormat("%dx%d", mixes[m].size(), mixes[m][0]);
    std::printf("  %-28s %8d %12.4f %7.0f%% %12.4f %12s %7.1f%%\n", docs.c_str(), Sum(mixes[m]),
                measured, 100 * Spread(times[grid.size() + m]), predicted, "",
                100 * holdout_errors.back());
  }
  const double holdout_max = *std::max_element(holdout_errors.begin(), holdout_errors.end());
  std::printf(
      "  relative error: fit median %.1f%%, held out median %.1f%% max %.1f%% (measured "
      "above the prediction on %d of %zu)\n",
      100 * Median(fit_errors), 100 * Median(holdout_errors), 100 * holdout_max, underpredicted,
      mixes.size());

  // Beside the FLOP-based model at this run's sgemm rate (what the planners assume with no
  // calibration): the ratios say how far attention and the rest fall short of sgemm speed, and
  // carry over to models of a similar shape.
  const double sgemm = MeasureSgemmGflops(1024, 3);
  HardwareSpec hw;
  hw.peak_flops = sgemm * 1e9;
  hw.efficiency = 1.0;
  const CostModel flops = CostModel::FromModelConfig(config, hw);
  std::printf(
      "  FLOP-based at the sgemm rate (%.1f GFLOP/s): a %.4g, b %.4g; measured / FLOP-based: "
      "attention %.2f, linear %.2f\n",
      sgemm, flops.attention_s, flops.linear_s, fit.a / flops.attention_s, fit.b / flops.linear_s);
  std::printf(
      "\n  for an experiment with this model (configs/tiny.yaml) on this machine, %d "
      "threads:\nparallel:\n  cost_attention_s: %.6g\n  cost_linear_s: %.6g\n  "
      "cost_overhead_s: %.6g\n\n",
      o.threads, fit.a, fit.b, fit.c);
  std::vector<int> holdout_tokens;
  for (const auto& mix : mixes) holdout_tokens.push_back(Sum(mix));
  return {{"attention_s", fit.a},
          {"linear_s", fit.b},
          {"overhead_s", fit.c},
          {"fit_median_rel_error", Median(fit_errors)},
          {"holdout_median_rel_error", Median(holdout_errors)},
          {"holdout_max_rel_error", holdout_max},
          {"holdout_underpredicted", underpredicted},
          {"load_average", load},
          {"grid_tokens", grid},
          {"holdout_tokens", holdout_tokens},
          {"n_layers", config.n_layers},
          {"d_model", config.d_model},
          {"sgemm_gflops", sgemm},
          {"attention_over_flop_model", fit.a / flops.attention_s},
          {"linear_over_flop_model", fit.b / flops.linear_s}};
}

Registrar reg("calibrate", Calibrate);

}  // namespace
}  // namespace loom::bench
