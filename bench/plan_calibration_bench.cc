// calibrate_plans: the simulator against real runs of whole plans on this machine. Plans are
// executed for real (ExecuteStep over the local backend, ranks as threads, or under mpirun over
// the mpi backend, one process per rank; one thread per rank), the cost model's coefficients are
// fitted to some of them, and the simulator's predicted step time for the others is compared with
// their measured time.
//
//  1. Fit: single-rank plans (every sequence planned onto one rank), run on every rank at once so
//     that they share the machine as the held-out ranks will. A single rank's step is the sum of
//     its micro-batches' T(s) = a s^2 + b s + c per layer, so the medians of the steps fit a, b, c
//     by weighted non-negative least squares (bench/least_squares.h) over
//     (layers * sum of the ranges' y^2 - x^2, layers * tokens, layers * micro-batches).
//  2. Links: a 2-rank exchange (each rank sends to and receives from the other) of a small and a
//     large message gives the link's latency and bandwidth.
//  3. Held out: plans of other batches by every planner (single-rank plans of other lengths, and
//     plans over all ranks with rings, chunks and the gradient all-reduce), each predicted by
//     SimulateStep with the fitted model and measured (median of the repeats, the slowest rank).
// The model is the quickstart's (configs/tiny.yaml: d_model 128, 4 layers), lengths the ChunkFlow
// and Byted presets scaled down to a few thousand tokens.
#include <omp.h>

#include <algorithm>
#include <cstdio>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_format.h"
#include "bench/bench.h"
#include "bench/least_squares.h"
#include "data/length_batch.h"
#include "data/length_distribution.h"
#include "data/packed_batch.h"
#include "data/rng.h"
#include "parallel/simulator.h"
#include "parallel/step_executor.h"
#include "parallel/strategy.h"
#include "runtime/local_world.h"
#include "runtime/mpi_communicator.h"
#include "runtime/world.h"
#include "src/model.h"

namespace loom::bench {
namespace {

ModelConfig CalibrationModel() {
  ModelConfig c;
  c.vocab_size = 257;
  c.d_model = 128;
  c.n_layers = 4;
  c.n_heads = 4;
  c.n_kv_heads = 2;
  c.ffn_dim = 352;
  return c;
}

void Check(const absl::Status& status) {
  if (status.ok()) return;
  std::fprintf(stderr, "calibrate_plans: %s\n", std::string(status.message()).c_str());
  std::exit(1);
}

// The cost model before fitting (only the planners use it, to make the plans): FLOP-based at an
// sgemm-like rate, fp32 bytes, every rank on one node.
CostModel InitialCost(const ModelConfig& model, int world) {
  HardwareSpec hw;
  hw.peak_flops = 30e9;
  hw.efficiency = 1.0;
  hw.bytes_per_element = 4;
  hw.layer_overhead_s = 100e-6;
  hw.ranks_per_node = world;
  hw.intra_node = LinkCost{20e-6, 2e9};
  hw.inter_node = hw.intra_node;
  return CostModel::FromModelConfig(model, hw);
}

// Lengths from `preset` divided by `scale` (at least 1), capped at `longest`, about `tokens`.
std::vector<SequenceSpec> Batch(const std::string& preset, int64_t scale, int64_t longest,
                                int64_t tokens, uint64_t seed) {
  const LengthDistribution dist = *LengthDistribution::Preset(preset);
  Xoshiro256 rng(seed);
  std::vector<SequenceSpec> batch;
  int64_t total = 0;
  while (total < tokens) {
    const int64_t l = std::clamp<int64_t>(dist.Sample(rng) / scale, 1, longest);
    batch.push_back({static_cast<int64_t>(batch.size()), l});
    total += l;
  }
  return batch;
}

PackedBatch Pack(const std::vector<SequenceSpec>& sequences, int vocab, uint64_t seed) {
  Xoshiro256 rng(seed);
  PackedBatch b;
  b.sequence_starts.push_back(0);
  for (const SequenceSpec& s : sequences) {
    for (int64_t i = 0; i < s.length; ++i) {
      b.tokens.push_back(static_cast<int32_t>(rng.Next() % static_cast<uint64_t>(vocab)));
      b.positions.push_back(static_cast<int32_t>(i));
      b.sequence_ids.push_back(static_cast<int32_t>(s.id));
    }
    const size_t begin = static_cast<size_t>(b.sequence_starts.back());
    for (int64_t i = 0; i < s.length; ++i) {
      b.targets.push_back(i + 1 < s.length ? b.tokens[begin + static_cast<size_t>(i) + 1]
                                           : kNoTarget);
    }
    b.num_targets += s.length - 1;
    b.sequence_starts.push_back(static_cast<int64_t>(b.tokens.size()));
  }
  return b;
}

// A rank of the job: runs its part of plans, returns the slowest rank's time.
class Runner {
 public:
  virtual ~Runner() = default;
  virtual int world() const = 0;
  virtual bool reports() const = 0;  // prints the tables
  // The slowest rank's wall time of ExecuteStep on `plan` (every rank runs its part).
  virtual double RunPlan(const StepPlan& plan, const PackedBatch& batch) = 0;
  // Every rank runs a single-rank `plan` of its own at once; the slowest rank's time.
  virtual double RunSolo(const StepPlan& plan, const PackedBatch& batch) = 0;
  // One exchange of `floats` values between ranks 0 and 1 (median of `repeats`).
  virtual double Exchange(size_t floats, int repeats) = 0;
};

// Runs `plan` on `comm` with this rank's model and returns this rank's seconds (after a barrier).
double TimeOnRank(Communicator& comm, const StepPlan& plan, const PackedBatch& batch,
                  Model& model) {
  Check(comm.Barrier(comm.world_group()));
  absl::Status status;
  const double s = TimeSeconds([&] { status = ExecuteStep(comm, plan, batch, model).status(); });
  Check(status);
  return s;
}

double ExchangeOnRank(Communicator& comm, size_t floats, int repeats) {
  if (comm.rank() > 1) return 0.0;
  std::vector<float> send(floats, 1.0f), recv(floats);
  const int peer = 1 - comm.rank();
  std::vector<double> times;
  for (int r = 0; r <= repeats; ++r) {
    const SendSpec s{send, peer, 7};
    const RecvSpec v{recv, peer, 7};
    const double t = TimeSeconds([&] { Check(comm.Exchange({&s, 1}, {&v, 1})); });
    if (r > 0) times.push_back(t);  // the first one warms the path up
  }
  return Median(times);
}

std::unique_ptr<Model> MakeModel(Allocator* alloc) {
  auto model = std::move(Model::Create(CalibrationModel(), alloc)).value();
  model->InitWeights(1);
  return model;
}

// Ranks as threads of this process.
class LocalRunner : public Runner {
 public:
  explicit LocalRunner(int ranks) : world_(*LocalWorld::Create(ranks, absl::Minutes(5))) {
    for (int r = 0; r < ranks; ++r) {
      allocs_.push_back(std::make_unique<Allocator>());
      models_.push_back(MakeModel(allocs_.back().get()));
    }
  }
  int world() const override { return world_->size(); }
  bool reports() const override { return true; }
  double RunPlan(const StepPlan& plan, const PackedBatch& batch) override {
    std::vector<double> t(static_cast<size_t>(world()), 0.0);
    Check(world_->Run([&](Communicator& comm) {
      omp_set_num_threads(1);
      t[static_cast<size_t>(comm.rank())] =
          TimeOnRank(comm, plan, batch, *models_[static_cast<size_t>(comm.rank())]);
      return absl::OkStatus();
    }));
    return *std::max_element(t.begin(), t.end());
  }
  double RunSolo(const StepPlan& plan, const PackedBatch& batch) override {
    std::vector<double> t(static_cast<size_t>(world()), 0.0);
    std::vector<std::thread> threads;
    for (int r = 0; r < world(); ++r) {
      threads.emplace_back([&, r] {
        omp_set_num_threads(1);
        std::unique_ptr<LocalWorld> solo = *LocalWorld::Create(1, absl::Minutes(5));
        Check(solo->Run([&](Communicator& comm) {
          // The world runs the rank on a thread of its own, whose OpenMP default is every core.
          omp_set_num_threads(1);
          t[static_cast<size_t>(r)] = TimeOnRank(comm, plan, batch, *models_[static_cast<size_t>(r)]);
          return absl::OkStatus();
        }));
      });
    }
    for (std::thread& th : threads) th.join();
    return *std::max_element(t.begin(), t.end());
  }
  double Exchange(size_t floats, int repeats) override {
    std::vector<double> t(static_cast<size_t>(world()), 0.0);
    Check(world_->Run([&](Communicator& comm) {
      t[static_cast<size_t>(comm.rank())] = ExchangeOnRank(comm, floats, repeats);
      return absl::OkStatus();
    }));
    return std::max(t[0], t[1]);
  }

 private:
  std::unique_ptr<LocalWorld> world_;
  std::vector<std::unique_ptr<Allocator>> allocs_;
  std::vector<std::unique_ptr<Model>> models_;
};

// This process as one rank of an mpirun job.
class MpiRunner : public Runner {
 public:
  explicit MpiRunner(std::unique_ptr<Communicator> comm)
      : comm_(std::move(comm)), model_(MakeModel(&alloc_)) {
    omp_set_num_threads(1);
  }
  int world() const override { return comm_->size(); }
  bool reports() const override { return comm_->rank() == 0; }
  double RunPlan(const StepPlan& plan, const PackedBatch& batch) override {
    return Slowest(TimeOnRank(*comm_, plan, batch, *model_));
  }
  double RunSolo(const StepPlan& plan, const PackedBatch& batch) override {
    Check(comm_->Barrier(comm_->world_group()));
    std::unique_ptr<LocalWorld> solo = *LocalWorld::Create(1, absl::Minutes(5));
    double t = 0.0;
    Check(solo->Run([&](Communicator& comm) {
      omp_set_num_threads(1);
      t = TimeOnRank(comm, plan, batch, *model_);
      return absl::OkStatus();
    }));
    return Slowest(t);
  }
  double Exchange(size_t floats, int repeats) override {
    return Slowest(ExchangeOnRank(*comm_, floats, repeats));
  }

 private:
  double Slowest(double seconds) {
    std::vector<float> v = {static_cast<float>(seconds)};
    Check(comm_->AllReduce(comm_->world_group(), v, ReduceOp::kMax));
    return v[0];
  }
  std::unique_ptr<Communicator> comm_;
  Allocator alloc_;
  std::unique_ptr<Model> model_;
};

struct Case {
  std::string name;
  StrategySpec strategy;
  int world = 1;
  std::vector<SequenceSpec> sequences;
  int64_t capacity = 0;
};

double MedianOf(int repeats, const std::function<double()>& run) {
  run();  // warm-up: allocations, first touches
  std::vector<double> t;
  for (int r = 0; r < repeats; ++r) t.push_back(run());
  return Median(t);
}

// Per-rank features of a single-rank plan for the fit: layers * (squares, tokens, micro-batches).
Features FitFeatures(const StepPlan& plan, int layers) {
  Features f{0.0, 0.0, 0.0};
  for (const Action& a : plan.ranks[0].actions) {
    if (a.kind == ActionKind::kRecompute) {
      // A recompute is the forward again: a third of the micro-batch's terms.
      for (const TokenRange& r : a.tokens) {
        f[0] += layers / 3.0 * (static_cast<double>(r.end) * r.end - static_cast<double>(r.begin) * r.begin);
        f[1] += layers / 3.0 * static_cast<double>(r.size());
      }
      f[2] += layers / 3.0;
    }
    if (a.kind != ActionKind::kForward) continue;
    for (const TokenRange& r : a.tokens) {
      f[0] += layers * (static_cast<double>(r.end) * r.end - static_cast<double>(r.begin) * r.begin);
      f[1] += layers * static_cast<double>(r.size());
    }
    f[2] += layers;
  }
  return f;
}

StrategySpec Spec(StrategyKind kind, int64_t chunk = 0, int keep = 0) {
  StrategySpec s;
  s.kind = kind;
  s.chunk_size = chunk;
  s.chunk_keep = keep;
  return s;
}

nlohmann::json CalibratePlans(const BenchOptions& o) {
  std::unique_ptr<Runner> runner;
  absl::StatusOr<WorldInfo> launcher = DetectWorld(ProcessEnv());
  std::string backend = "local";
  if (launcher.ok() && launcher->size > 1) {
    absl::StatusOr<std::unique_ptr<Communicator>> comm = MakeMpiCommunicator(absl::Minutes(5));
    Check(comm.status());
    runner = std::make_unique<MpiRunner>(*std::move(comm));
    backend = "mpi";
  } else {
    runner = std::make_unique<LocalRunner>(2);
  }
  const int world = runner->world();
  const ModelConfig model = CalibrationModel();
  const int layers = model.n_layers;
  const CostModel initial = InitialCost(model, world);
  const int64_t c = o.quick ? 512 : 1024;
  const int64_t tokens = o.quick ? 2048 : 6144;
  const int repeats = o.repeats;

  // 1. Fit on single-rank plans: short sequences packed into micro-batches of C and of C/8 (the
  // linear and the fixed terms, which plans of one micro-batch size alone cannot tell apart),
  // long ones (the quadratic term).
  std::vector<Case> fit = {
      {"chunkflow lengths, C", Spec(StrategyKind::kHdp), 1, Batch("chunkflow", 4, c, tokens, 1), c},
      {"chunkflow lengths, C/8", Spec(StrategyKind::kHdp), 1, Batch("chunkflow", 16, c / 8, tokens, 2), c / 8},
      {"lmsys lengths, C/4", Spec(StrategyKind::kHdp), 1, Batch("lmsyschat1m", 16, c / 4, tokens, 3), c / 4},
      {"byted lengths, C", Spec(StrategyKind::kHdp), 1, Batch("byted", 64, c, tokens, 4), c},
      {"long documents, C", Spec(StrategyKind::kHdp), 1, Batch("byted", 8, c, tokens, 5), c},
      {"long documents, 2C", Spec(StrategyKind::kHdp), 1, Batch("byted", 4, 2 * c, tokens, 6), 2 * c},
  };
  std::vector<Features> x;
  std::vector<double> y;
  for (size_t i = 0; i < fit.size(); ++i) {
    const Case& k = fit[i];
    const StepPlan plan = *PlanWithStrategy(k.sequences, k.strategy, {1, k.capacity, c, 0}, initial);
    const PackedBatch batch = Pack(k.sequences, model.vocab_size, 100 + i);
    y.push_back(MedianOf(repeats, [&] { return runner->RunSolo(plan, batch); }));
    x.push_back(FitFeatures(plan, layers));
  }
  const Features fitted = FitNonNegative(x, y);
  // 2. Links.
  const size_t small = 1024, large = size_t{1} << 20;  // 4 KiB and 4 MiB of floats
  const double t_small = runner->Exchange(small, 20);
  const double t_large = runner->Exchange(large, 10);
  const double bandwidth = 4.0 * static_cast<double>(large - small) / std::max(t_large - t_small, 1e-9);
  const double latency = std::max(0.0, t_small - 4.0 * small / bandwidth);

  CostModel cost = initial;
  cost.attention_s = fitted[0];
  cost.linear_s = fitted[1];
  cost.overhead_s = fitted[2];
  cost.intra_node = LinkCost{latency, bandwidth};
  cost.inter_node = cost.intra_node;
  cost.ranks_per_node = world;

  if (runner->reports()) {
    std::printf("calibrate_plans: %s backend, %d ranks (1 thread each), d_model %d, %d layers, "
                "C %lld, medians of %d\n",
                backend.c_str(), world, model.d_model, layers, static_cast<long long>(c), repeats);
    std::printf("  fitted per layer: T(s) = %.4g s^2 + %.4g s + %.4g; link %.1f us + %.2f GB/s\n",
                fitted[0], fitted[1], fitted[2], 1e6 * latency, bandwidth / 1e9);
    std::printf("  %-34s %6s %8s %11s %11s %8s\n", "plan (fitted)", "ranks", "tokens",
                "measured s", "fit s", "error");
  }
  std::vector<double> fit_errors;
  for (size_t i = 0; i < fit.size(); ++i) {
    const double predicted = fitted[0] * x[i][0] + fitted[1] * x[i][1] + fitted[2] * x[i][2];
    fit_errors.push_back(RelativeError(predicted, y[i]));
    int64_t t = 0;
    for (const SequenceSpec& s : fit[i].sequences) t += s.length;
    if (runner->reports()) {
      std::printf("  %-34s %6d %8lld %11.4f %11.4f %7.1f%%\n", fit[i].name.c_str(), 1,
                  static_cast<long long>(t), y[i], predicted, 100 * fit_errors.back());
    }
  }

  // 3. Held out: other batches, every planner, the whole world.
  std::vector<Case> held = {
      {"1 rank, chunkflow lengths", Spec(StrategyKind::kHdp), 1, Batch("chunkflow", 4, c, tokens, 11), c},
      {"1 rank, github lengths", Spec(StrategyKind::kHdp), 1, Batch("github", 32, c, tokens, 12), c},
      {"1 rank, chunks K=1", Spec(StrategyKind::kChunkFlow, c / 2, 1), 1, Batch("byted", 16, 2 * c, tokens, 13), c / 2},
      {"hdp, byted", Spec(StrategyKind::kHdp), world, Batch("byted", 16, world * c, world * tokens, 14), c},
      {"hdp, github", Spec(StrategyKind::kHdp), world, Batch("github", 16, world * c, world * tokens, 15), c},
      {"hdp-naive, chunkflow", Spec(StrategyKind::kHdpNaive), world, Batch("chunkflow", 4, world * c, world * tokens, 16), c},
      {"static, byted", Spec(StrategyKind::kStatic), world, Batch("byted", 16, world * c, world * tokens, 17), c},
      {"megatron-hybrid-cp, byted", Spec(StrategyKind::kMegatronHybridCp), world, Batch("byted", 16, world * c, world * tokens, 18), c},
      {"chunkflow, byted", Spec(StrategyKind::kChunkFlow, c / 2, 2), world, Batch("byted", 16, 2 * c, world * tokens, 19), c / 2},
      {"hdp + chunks, byted", Spec(StrategyKind::kBest, c / 2, 2), world, Batch("byted", 16, world * c, world * tokens, 20), c},
  };
  if (runner->reports()) {
    std::printf("  %-34s %6s %8s %11s %11s %8s\n", "plan (held out)", "ranks", "tokens",
                "measured s", "simulated s", "error");
  }
  std::vector<double> errors;
  nlohmann::json rows = nlohmann::json::array();
  int under = 0;
  for (size_t i = 0; i < held.size(); ++i) {
    const Case& k = held[i];
    int64_t longest = 0, t = 0;
    for (const SequenceSpec& s : k.sequences) {
      longest = std::max(longest, s.length);
      t += s.length;
    }
    StrategySpec spec = k.strategy;
    const StepPlan plan =
        *PlanWithStrategy(k.sequences, spec, {k.world, k.capacity, longest, 0}, cost);
    const PackedBatch batch = Pack(k.sequences, model.vocab_size, 200 + i);
    const double measured = MedianOf(repeats, [&] {
      return k.world == 1 ? runner->RunSolo(plan, batch) : runner->RunPlan(plan, batch);
    });
    CostModel plan_cost = cost;
    const double predicted = SimulateStep(plan, plan_cost)->step_s;
    errors.push_back(RelativeError(predicted, measured));
    under += measured > predicted;
    rows.push_back({{"plan", k.name}, {"ranks", k.world}, {"tokens", t},
                    {"measured_s", measured}, {"simulated_s", predicted},
                    {"error", errors.back()}});
    if (runner->reports()) {
      std::printf("  %-34s %6d %8lld %11.4f %11.4f %7.1f%%\n", k.name.c_str(), k.world,
                  static_cast<long long>(t), measured, predicted, 100 * errors.back());
    }
  }
  const double median = Median(errors);
  const double worst = *std::max_element(errors.begin(), errors.end());
  if (runner->reports()) {
    std::printf("  held out: median error %.1f%%, max %.1f%% (measured above the simulation on "
                "%d of %zu); fit median %.1f%%\n",
                100 * median, 100 * worst, under, errors.size(), 100 * Median(fit_errors));
  }
  return {{"backend", backend},
          {"ranks", world},
          {"attention_s", fitted[0]},
          {"linear_s", fitted[1]},
          {"overhead_s", fitted[2]},
          {"link_latency_s", latency},
          {"link_bytes_per_s", bandwidth},
          {"fit_median_rel_error", Median(fit_errors)},
          {"holdout_median_rel_error", median},
          {"holdout_max_rel_error", worst},
          {"holdout_underpredicted", under},
          {"holdout", rows}};
}

Registrar reg("calibrate_plans", CalibratePlans);

}  // namespace
}  // namespace loom::bench
