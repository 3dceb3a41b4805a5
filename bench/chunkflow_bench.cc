// `chunkflow`: what ChunkFlow's chunking (data/chunk_packing.h, parallel/chunk_planner.h) buys on
// this machine, measured by running plans for real with the executor on a one-rank local world.
//
// Model: LLaMA-shaped and small (vocab 257, d_model 64, 2 layers, 4 heads sharing 2 K/V heads,
// ffn 176), so that sequences of 16K tokens run in seconds. The cost model is the FLOP-based one
// with fp32 activations, as this machine runs them. "Measured" memory is the rank's Allocator
// peak during ExecuteStep above the bytes held before (weights, gradients); "predicted" is
// MeasurePlan's peak_activation_bytes for the same plan. The rank runs on one thread whatever
// --threads says (see RunChunkflowBench); `rank_threads` in the JSON says so.
//
// 1. Memory vs the longest sequence. A global batch of 16K tokens: one long sequence of L tokens
//    (sequence 0) plus short sequences drawn from the `chunkflow` preset, capped at C, filling the
//    rest exactly (the last one is cut to fit). L in {1K, 2K, 4K, 8K, 16K}, C = 1K, K = 1.
//    Chunked: PlanChunkFlow(world 1, C, K). Unchunked baseline: PlanStep kHdp on one rank with
//    capacity = L, the smallest capacity that holds every sequence whole (micro-batches of up to L
//    tokens); also, for reference, capacity fixed at the batch's 16K (one micro-batch of the
//    whole batch whatever L is, so it is run at the smallest and largest L only). The
//    *_4k_to_64k figures are MeasurePlan predictions for the same construction scaled by 4
//    (every length, C and the budget times 4); nothing of that size is run.
//    `memory_growth_excluding_kv_state` subtracts the long sequence's K/V state and pending loss
//    gradients, L * (ContextBytesPerToken + pending_bytes_per_token), where the sequence is
//    chunked (L > C); at L = C = 1K the sequence is a single standalone chunk with no state, so
//    nothing is subtracted there.
// 2. Recompute overhead: a batch of one 8K-token sequence, C = 1K; step time with K = 1 (7 of 8
//    chunks recomputed) over K = 0 (all kept), medians of 3 interleaved runs each after a
//    warm-up of each.
// 3. Padding: lengths from the `chunkflow` and `lmsyschat1m` presets divided by 8 (rounded up)
//    and capped at C = 1K, drawn into global batches of about 16K tokens. The chunk packing's
//    padding fraction is averaged over 20 batches per preset; one batch per preset is run
//    (medians of 3 padded and 6 chunked runs, interleaved, after a warm-up): the chunked plan
//    (K = 1; every sequence fits a chunk, so nothing is recomputed) against the same batch with
//    every sequence padded to the batch's longest. The padded baseline runs through the same
//    executor as a plan of one padded sequence per micro-batch: padding tokens
//    extend their sequence (same sequence id, positions continue) with no target, so they cost
//    the compute of a full-length sequence (attention included, as a dense causal kernel over a
//    padded row would) and add nothing to the loss or the gradient. Throughput counts real tokens
//    only.
//
// --repeats is ignored (3 timed runs per figure keep the whole run near 2.5 minutes).
// --quick: budgets and lengths divided by 4 (batch 4K, L up to 4K, C = 256), one timed run each;
// the JSON keys keep their names (chunk_size says which scale ran), and the 4x predictions are
// the full-size ones.
#include <cblas.h>
#include <omp.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <vector>

#include "absl/time/time.h"
#include "bench/bench.h"
#include "bench/random_batch.h"
#include "data/chunk_packing.h"
#include "data/length_distribution.h"
#include "data/packed_batch.h"
#include "nlohmann/json.hpp"
#include "parallel/chunk_planner.h"
#include "parallel/cost_model.h"
#include "parallel/plan_metrics.h"
#include "parallel/plan_validator.h"
#include "parallel/planner.h"
#include "parallel/step_executor.h"
#include "runtime/local_world.h"
#include "src/model.h"
#include "src/random.h"

namespace loom::bench {
namespace {

[[noreturn]] void Fail(const absl::Status& status) {
  std::fprintf(stderr, "chunkflow bench: %s\n", status.ToString().c_str());
  std::exit(1);
}

template <typename T>
T OrDie(absl::StatusOr<T> value) {
  if (!value.ok()) Fail(value.status());
  return std::move(value).value();
}

ModelConfig SmallLlama() {
  ModelConfig c;
  c.vocab_size = 257;
  c.d_model = 64;
  c.n_layers = 2;
  c.n_heads = 4;
  c.n_kv_heads = 2;
  c.ffn_dim = 176;
  return c;
}

CostModel Fp32Cost(const ModelConfig& config) {
  HardwareSpec hardware;
  hardware.bytes_per_element = 4;
  return CostModel::FromModelConfig(config, hardware);
}

std::vector<SequenceSpec> Specs(const std::vector<int64_t>& lengths) {
  std::vector<SequenceSpec> s;
  for (int64_t l : lengths) s.push_back({static_cast<int64_t>(s.size()), l});
  return s;
}

int64_t Sum(const std::vector<int64_t>& v) {
  int64_t total = 0;
  for (int64_t x : v) total += x;
  return total;
}

// A plan with the batch it runs on.
struct Job {
  const StepPlan* plan;
  const PackedBatch* batch;
};

struct JobResult {
  int64_t peak_step_bytes = 0;  // allocator peak during the step, above what was held before
  double seconds = 0.0;
};

// Runs the jobs in order on a one-rank local world with one model (weights from seed 1), each
// with the allocator's peak reset before it.
std::vector<JobResult> RunJobs(const ModelConfig& config, const std::vector<Job>& jobs,
                               int threads) {
  std::vector<JobResult> results(jobs.size());
  std::unique_ptr<LocalWorld> world = OrDie(LocalWorld::Create(1, absl::Seconds(600)));
  const absl::Status status = world->Run([&](Communicator& comm) -> absl::Status {
    omp_set_num_threads(threads);
    openblas_set_num_threads(threads);
    Allocator allocator;
    absl::StatusOr<std::unique_ptr<Model>> model = Model::Create(config, &allocator);
    if (!model.ok()) return model.status();
    (*model)->InitWeights(1);
    for (size_t j = 0; j < jobs.size(); ++j) {
      const size_t before = allocator.current_bytes();
      allocator.ResetPeak();
      absl::StatusOr<StepOutcome> outcome;
      results[j].seconds = TimeSeconds(
          [&] { outcome = ExecuteStep(comm, *jobs[j].plan, *jobs[j].batch, **model); });
      if (!outcome.ok()) return outcome.status();
      results[j].peak_step_bytes = static_cast<int64_t>(allocator.peak_bytes() - before);
    }
    return absl::OkStatus();
  });
  if (!status.ok()) Fail(status);
  return results;
}

double MiB(double bytes) { return bytes / 1048576.0; }

// ---- 1. Memory vs the longest sequence ----------------------------------------------------

// One long sequence of `longest` tokens, then short ones from the chunkflow preset capped at
// `cap`, filling `budget` exactly.
std::vector<int64_t> LongPlusShorts(int64_t longest, int64_t budget, int64_t cap, uint64_t seed) {
  const LengthDistribution dist = OrDie(LengthDistribution::Preset("chunkflow"));
  std::vector<int64_t> lengths = {longest};
  int64_t total = longest;
  for (uint64_t draw = 0; total < budget; ++draw) {
    for (const int64_t l : dist.Sample(1024, seed * 1000 + draw)) {
      const int64_t x = std::min({l, cap, budget - total});
      lengths.push_back(x);
      total += x;
      if (total >= budget) break;
    }
  }
  return lengths;
}

std::vector<int64_t> Scaled(const std::vector<int64_t>& lengths, int64_t factor) {
  std::vector<int64_t> out;
  for (int64_t l : lengths) out.push_back(l * factor);
  return out;
}

struct MemoryPoint {
  int64_t longest = 0;
  int64_t chunked_measured = 0, chunked_predicted = 0;
  int64_t unchunked_measured = 0, unchunked_predicted = 0;    // capacity = longest
  int64_t fixed_measured = 0, fixed_predicted = 0;            // capacity = budget
  int64_t chunked_state = 0;  // the long sequence's K/V state and pending gradients, if chunked
  int64_t scaled_chunked_predicted = 0, scaled_unchunked_predicted = 0;  // 4x construction
  int sequences = 0;
};

int64_t PredictedPeak(const StepPlan& plan, const CostModel& cost) {
  return MeasurePlan(plan, cost).ranks[0].peak_activation_bytes;
}

StepPlan ValidChunkFlow(const std::vector<int64_t>& lengths, int64_t chunk, int keep,
                        const CostModel& cost) {
  StepPlan plan = OrDie(PlanChunkFlow(Specs(lengths), {1, chunk, keep}, cost));
  if (absl::Status s = ValidatePlan(plan, cost); !s.ok()) Fail(s);
  return plan;
}

StepPlan ValidHdp(const std::vector<int64_t>& lengths, int64_t capacity, const CostModel& cost) {
  PlannerOptions o;
  o.kind = PlannerKind::kHdp;
  o.world_size = 1;
  o.capacity_tokens = capacity;
  StepPlan plan = OrDie(PlanStep(Specs(lengths), o, cost));
  if (absl::Status s = ValidatePlan(plan, cost); !s.ok()) Fail(s);
  return plan;
}

double Growth(int64_t last, int64_t first) {
  return first > 0 ? static_cast<double>(last) / static_cast<double>(first) : 0.0;
}

nlohmann::json MemorySection(const ModelConfig& config, const CostModel& cost, int64_t unit,
                             int threads) {
  const int64_t chunk = unit;         // C
  const int64_t budget = 16 * unit;   // tokens of the global batch
  const int keep = 1;
  const int64_t state_per_token = cost.ContextBytesPerToken() + cost.pending_bytes_per_token;
  const int64_t scale_to_full = 1024 / unit;  // the 4x predictions are always for C = 4K
  std::vector<MemoryPoint> points;
  for (const int64_t longest : {unit, 2 * unit, 4 * unit, 8 * unit, 16 * unit}) {
    const std::vector<int64_t> lengths = LongPlusShorts(longest, budget, chunk, 17);
    MemoryPoint p;
    p.longest = longest;
    p.sequences = static_cast<int>(lengths.size());
    const StepPlan chunked = ValidChunkFlow(lengths, chunk, keep, cost);
    const StepPlan unchunked = ValidHdp(lengths, longest, cost);
    const StepPlan fixed = ValidHdp(lengths, budget, cost);
    p.chunked_predicted = PredictedPeak(chunked, cost);
    p.unchunked_predicted = PredictedPeak(unchunked, cost);
    p.fixed_predicted = PredictedPeak(fixed, cost);
    p.chunked_state = longest > chunk ? longest * state_per_token : 0;
    const PackedBatch batch = RandomPackedBatch(lengths, config.vocab_size, 5);
    // The capacity-16K plan is one micro-batch of the whole batch for every L: run at the
    // smallest L only (at L = budget it is the capacity-L plan, run anyway).
    std::vector<Job> jobs = {{&chunked, &batch}, {&unchunked, &batch}};
    if (longest == unit) jobs.push_back({&fixed, &batch});
    const std::vector<JobResult> r = RunJobs(config, jobs, threads);
    p.chunked_measured = r[0].peak_step_bytes;
    p.unchunked_measured = r[1].peak_step_bytes;
    p.fixed_measured = longest == unit ? r[2].peak_step_bytes
                       : longest == budget ? r[1].peak_step_bytes
                                           : -1;
    // The full-size construction scaled 4x (also under --quick), predicted only.
    const std::vector<int64_t> scaled =
        Scaled(LongPlusShorts(longest * scale_to_full, budget * scale_to_full,
                              chunk * scale_to_full, 17),
               4);
    p.scaled_chunked_predicted =
        PredictedPeak(ValidChunkFlow(scaled, 4 * scale_to_full * chunk, keep, cost), cost);
    p.scaled_unchunked_predicted =
        PredictedPeak(ValidHdp(scaled, 4 * scale_to_full * longest, cost), cost);
    points.push_back(p);
  }

  std::printf("\n1. peak step memory vs the longest sequence L: batch %lld tokens, C = %lld, "
              "K = %d, one rank (MiB; measured = allocator peak during the step above weights "
              "and grads)\n",
              static_cast<long long>(budget), static_cast<long long>(chunk), keep);
  std::printf("  (cap=batch: every L gives the same plan, one micro-batch of the whole batch; "
              "measured at the first and last L, -1 = not run)\n");
  std::printf("  %6s %5s | %-29s | %-29s | %-20s | %s\n", "L", "seqs",
              "chunked: measured  pred  m/p", "unchunked cap=L: meas pred m/p",
              "cap=batch: meas pred", "chunked - L's state");
  for (const MemoryPoint& p : points) {
    std::printf("  %6lld %5d | %9.2f %8.2f %8.3f  | %9.2f %8.2f %8.3f  | %8.2f %8.2f   | %9.2f\n",
                static_cast<long long>(p.longest), p.sequences, MiB(p.chunked_measured),
                MiB(p.chunked_predicted),
                static_cast<double>(p.chunked_measured) / p.chunked_predicted,
                MiB(p.unchunked_measured), MiB(p.unchunked_predicted),
                static_cast<double>(p.unchunked_measured) / p.unchunked_predicted,
                p.fixed_measured >= 0 ? MiB(p.fixed_measured) : -1.0, MiB(p.fixed_predicted),
                MiB(p.chunked_measured - p.chunked_state));
  }
  const MemoryPoint& a = points.front();
  const MemoryPoint& z = points.back();
  const double growth = Growth(z.chunked_measured, a.chunked_measured);
  const double unchunked_growth = Growth(z.unchunked_measured, a.unchunked_measured);
  const double excluding = Growth(z.chunked_measured - z.chunked_state,
                                  a.chunked_measured - a.chunked_state);
  const double predicted_growth = Growth(z.chunked_predicted, a.chunked_predicted);
  const double predicted_unchunked_growth = Growth(z.unchunked_predicted, a.unchunked_predicted);
  const double scaled_growth = Growth(z.scaled_chunked_predicted, a.scaled_chunked_predicted);
  const double scaled_unchunked_growth =
      Growth(z.scaled_unchunked_predicted, a.scaled_unchunked_predicted);
  const double fixed_growth = Growth(z.fixed_measured, a.fixed_measured);
  std::printf("  growth L %lld -> %lld, MEASURED:  chunked %.3f, unchunked (cap = L) %.3f, "
              "unchunked (cap = batch) %.3f, chunked without L's K/V state + pending grads %.3f\n",
              static_cast<long long>(a.longest), static_cast<long long>(z.longest), growth,
              unchunked_growth, fixed_growth, excluding);
  std::printf("  growth L %lld -> %lld, predicted: chunked %.3f, unchunked (cap = L) %.3f\n",
              static_cast<long long>(a.longest), static_cast<long long>(z.longest),
              predicted_growth, predicted_unchunked_growth);
  const int64_t f = 4 * scale_to_full;
  std::printf("  scaled 4x (batch %lld, C = %lld, L %lld..%lld), PREDICTED only (MeasurePlan, not "
              "run):\n", static_cast<long long>(f * budget), static_cast<long long>(f * chunk),
              static_cast<long long>(f * a.longest), static_cast<long long>(f * z.longest));
  std::printf("  %8s %14s %18s\n", "L", "chunked MiB", "unchunked MiB");
  for (const MemoryPoint& p : points) {
    std::printf("  %8lld %14.2f %18.2f\n", static_cast<long long>(f * p.longest),
                MiB(p.scaled_chunked_predicted), MiB(p.scaled_unchunked_predicted));
  }
  std::printf("  growth (predicted): chunked %.3f, unchunked %.3f\n", scaled_growth,
              scaled_unchunked_growth);

  nlohmann::json per_l = nlohmann::json::array();
  for (const MemoryPoint& p : points) {
    per_l.push_back({{"longest", p.longest},
                     {"chunked_measured_bytes", p.chunked_measured},
                     {"chunked_predicted_bytes", p.chunked_predicted},
                     {"unchunked_measured_bytes", p.unchunked_measured},
                     {"unchunked_predicted_bytes", p.unchunked_predicted},
                     {"unchunked_cap_batch_measured_bytes", p.fixed_measured},
                     {"scaled4x_chunked_predicted_bytes", p.scaled_chunked_predicted},
                     {"scaled4x_unchunked_predicted_bytes", p.scaled_unchunked_predicted}});
  }
  // Under --quick the *_1k_to_16k figures are measured at a quarter of the size (256 -> 4K, see
  // chunk_size in the JSON); the *_4k_to_64k predictions are the full-size ones either way.
  return {{"memory_growth_4k_to_64k", scaled_growth},
          {"unchunked_memory_growth_4k_to_64k", scaled_unchunked_growth},
          {"memory_growth_1k_to_16k", growth},
          {"unchunked_memory_growth_1k_to_16k", unchunked_growth},
          {"memory_growth_excluding_kv_state", excluding},
          {"predicted_memory_growth_1k_to_16k", predicted_growth},
          {"predicted_unchunked_memory_growth_1k_to_16k", predicted_unchunked_growth},
          {"unchunked_cap_batch_memory_growth_1k_to_16k", fixed_growth},
          {"memory_points", per_l}};
}

// ---- 2. Recompute overhead ------------------------------------------------------------------

nlohmann::json RecomputeSection(const ModelConfig& config, const CostModel& cost, int64_t unit,
                                int repeats, int threads) {
  const int64_t chunk = unit;
  const std::vector<int64_t> lengths = {8 * unit};
  const StepPlan k1 = ValidChunkFlow(lengths, chunk, 1, cost);
  const StepPlan k0 = ValidChunkFlow(lengths, chunk, 0, cost);
  const PackedBatch batch = RandomPackedBatch(lengths, config.vocab_size, 9);
  std::vector<Job> jobs = {{&k1, &batch}, {&k0, &batch}};  // warm-up
  for (int r = 0; r < repeats; ++r) {
    // Alternate which goes first, so a drift in load touches both alike.
    if (r % 2 == 0) {
      jobs.push_back({&k1, &batch});
      jobs.push_back({&k0, &batch});
    } else {
      jobs.push_back({&k0, &batch});
      jobs.push_back({&k1, &batch});
    }
  }
  const std::vector<JobResult> res = RunJobs(config, jobs, threads);
  std::vector<double> t1, t0;
  int64_t peak1 = 0, peak0 = 0;
  for (size_t j = 2; j < jobs.size(); ++j) {
    (jobs[j].plan == &k1 ? t1 : t0).push_back(res[j].seconds);
    (jobs[j].plan == &k1 ? peak1 : peak0) = res[j].peak_step_bytes;
  }
  const double s1 = Median(t1), s0 = Median(t0);
  const double predicted = MeasurePlan(k1, cost).ranks[0].compute_s /
                           MeasurePlan(k0, cost).ranks[0].compute_s;
  std::printf("\n2. recompute overhead: one sequence of %lld tokens, C = %lld (%lld chunks), "
              "medians of %d interleaved runs\n",
              static_cast<long long>(lengths[0]), static_cast<long long>(chunk),
              static_cast<long long>(lengths[0] / chunk), repeats);
  std::printf("  %-14s %10s %10s %10s %12s\n", "K", "median s", "min s", "max s", "peak MiB");
  auto row = [](const char* name, const std::vector<double>& t, int64_t peak) {
    std::printf("  %-14s %10.3f %10.3f %10.3f %12.2f\n", name, Median(t),
                *std::min_element(t.begin(), t.end()), *std::max_element(t.begin(), t.end()),
                MiB(peak));
  };
  row("K = 1", t1, peak1);
  row("K = 0 (all)", t0, peak0);
  std::printf("  recompute_overhead_k1 = %.3f (cost model predicts %.3f)\n", s1 / s0, predicted);
  return {{"recompute_overhead_k1", s1 / s0},
          {"recompute_overhead_k1_predicted", predicted},
          {"recompute_k1_step_s", s1},
          {"recompute_k0_step_s", s0},
          {"recompute_k1_peak_bytes", peak1},
          {"recompute_k0_peak_bytes", peak0}};
}

// ---- 3. Padding ------------------------------------------------------------------------------

// Preset lengths divided by `scale` (rounded up) and capped at `cap`, until about `tokens`.
std::vector<int64_t> PresetBatch(const LengthDistribution& dist, int64_t scale, int64_t cap,
                                 int64_t tokens, uint64_t seed) {
  std::vector<int64_t> lengths;
  int64_t total = 0;
  for (uint64_t draw = 0; total < tokens; ++draw) {
    for (const int64_t length : dist.Sample(1024, seed * 1000 + draw)) {
      const int64_t l = std::min(cap, (length + scale - 1) / scale);
      lengths.push_back(l);
      total += l;
      if (total >= tokens) break;
    }
  }
  return lengths;
}

nlohmann::json PaddingSection(const ModelConfig& config, const CostModel& cost, int64_t unit,
                              int repeats, int threads) {
  const int64_t chunk = unit;
  const int64_t tokens = 16 * unit;
  const int batches_for_fraction = 20;
  nlohmann::json per_preset = nlohmann::json::object();
  double worst_fraction = 0.0, worst_speedup = 0.0;
  bool first = true;
  std::printf("\n3. padding: preset lengths / 8, capped at C = %lld, batches of ~%lld tokens; "
              "padding fraction over %d batches, throughput on the first (medians of %d padded, %d "
              "chunked runs)\n",
              static_cast<long long>(chunk), static_cast<long long>(tokens),
              batches_for_fraction, repeats, 2 * repeats);
  std::printf("  %-12s %8s %8s %7s %8s | %10s %10s | %9s %9s %10s %10s %8s\n", "preset",
              "pad frac", "(range)", "seqs", "longest", "chunks", "padded tok", "chunk s",
              "padded s", "chunk t/s", "padded t/s", "ratio");
  for (const std::string name : {"chunkflow", "lmsyschat1m"}) {
    const LengthDistribution dist = OrDie(LengthDistribution::Preset(name));
    double fraction_sum = 0.0, fraction_min = 1.0, fraction_max = 0.0;
    for (int b = 0; b < batches_for_fraction; ++b) {
      const std::vector<int64_t> lengths = PresetBatch(dist, 8, chunk, tokens, 100 + b);
      const double f = OrDie(PackChunks(lengths, chunk)).padding_fraction();
      fraction_sum += f;
      fraction_min = std::min(fraction_min, f);
      fraction_max = std::max(fraction_max, f);
    }
    const double fraction = fraction_sum / batches_for_fraction;

    const std::vector<int64_t> lengths = PresetBatch(dist, 8, chunk, tokens, 100);
    const int64_t real = Sum(lengths);
    const int64_t longest = *std::max_element(lengths.begin(), lengths.end());
    const ChunkPacking packing = OrDie(PackChunks(lengths, chunk));
    const StepPlan chunked = ValidChunkFlow(lengths, chunk, 1, cost);
    const PackedBatch batch = RandomPackedBatch(lengths, config.vocab_size, 21);
    // Every sequence padded to the longest, one per micro-batch: a chunk plan with C = longest
    // over sequences of exactly C tokens puts each in its own chunk.
    const std::vector<int64_t> padded_lengths(lengths.size(), longest);
    const StepPlan padded = ValidChunkFlow(padded_lengths, longest, 0, cost);
    const PackedBatch padded_batch = RandomPackedBatch(lengths, config.vocab_size, 21, longest);
    // Warm-up: the chunked plan (its micro-batches have the padded rows' size). Then, per
    // repeat, the padded plan between two chunked runs: the chunked step is ~1 s against
    // 10-15 s, so the extra run costs little and steadies its median against bursts of load.
    std::vector<Job> jobs = {{&chunked, &batch}};
    for (int r = 0; r < repeats; ++r) {
      jobs.push_back({&chunked, &batch});
      jobs.push_back({&padded, &padded_batch});
      jobs.push_back({&chunked, &batch});
    }
    const std::vector<JobResult> res = RunJobs(config, jobs, threads);
    std::vector<double> tc, tp;
    for (size_t j = 1; j < jobs.size(); ++j) {
      (jobs[j].plan == &chunked ? tc : tp).push_back(res[j].seconds);
    }
    const double sc = Median(tc), sp = Median(tp);
    const double chunk_tps = static_cast<double>(real) / sc;
    const double padded_tps = static_cast<double>(real) / sp;
    const double ratio = chunk_tps / padded_tps;
    std::printf("  %-12s %8.4f %.3f-%.3f %5zu %8lld | %10zu %10lld | %9.3f %9.3f %10.0f %10.0f "
                "%8.3f\n",
                name.c_str(), fraction, fraction_min, fraction_max, lengths.size(),
                static_cast<long long>(longest), packing.chunks.size(),
                static_cast<long long>(PaddedTokens(lengths)), sc, sp, chunk_tps, padded_tps,
                ratio);
    per_preset[name] = {{"padding_fraction", fraction},
                        {"padding_fraction_run_batch", packing.padding_fraction()},
                        {"sequences", lengths.size()},
                        {"real_tokens", real},
                        {"chunks", packing.chunks.size()},
                        {"padded_tokens", PaddedTokens(lengths)},
                        {"chunked_step_s", sc},
                        {"padded_step_s", sp},
                        {"chunked_tokens_per_s", chunk_tps},
                        {"padded_tokens_per_s", padded_tps},
                        {"tokens_per_s_vs_padded", ratio}};
    worst_fraction = std::max(worst_fraction, fraction);
    worst_speedup = first ? ratio : std::min(worst_speedup, ratio);
    first = false;
  }
  std::printf("  padding_fraction (worse preset) %.4f; tokens_per_s_vs_padded (worse preset) "
              "%.3f\n", worst_fraction, worst_speedup);
  return {{"padding_fraction", worst_fraction},
          {"tokens_per_s_vs_padded", worst_speedup},
          {"padding", per_preset}};
}

nlohmann::json RunChunkflowBench(const BenchOptions& o) {
  const ModelConfig config = SmallLlama();
  const CostModel cost = Fp32Cost(config);
  const int64_t unit = o.quick ? 256 : 1024;
  // Timed repetitions are fixed (--repeats is ignored) so that the whole run stays near 2.5
  // minutes of one core: 3 per figure, the padded baseline alone taking ~25 s per repetition.
  const int repeats = o.quick ? 1 : 3;
  // One OpenMP / OpenBLAS thread for the rank, whatever --threads says. Two threads are about
  // 1.35x faster on a quiet machine, but on this shared 2-core machine any other load stalls
  // their barriers: one 2-thread run's K = 1 step times spread from 1.45 to 8.2 s (median 5.4 s,
  // recompute overhead 4.6 against 1.2 at one thread). One thread keeps the ratios meaningful.
  const int threads = 1;
  std::printf("chunkflow: vocab %d, d_model %d, %d layers, %d heads (%d kv), ffn %d; fp32 cost "
              "model; one rank (local world), %d thread (fixed, --threads ignored)%s\n",
              config.vocab_size, config.d_model, config.n_layers, config.n_heads,
              config.n_kv_heads, config.ffn_dim, threads, o.quick ? "; --quick: sizes / 4" : "");
  nlohmann::json result = nlohmann::json::object();
  const auto t0 = TimeSeconds([&] {
    result.update(MemorySection(config, cost, unit, threads));
  });
  const auto t1 = TimeSeconds([&] {
    result.update(RecomputeSection(config, cost, unit, repeats, threads));
  });
  const auto t2 = TimeSeconds([&] {
    result.update(PaddingSection(config, cost, unit, repeats, threads));
  });
  std::printf("\nsection times: memory %.1f s, recompute %.1f s, padding %.1f s\n", t0, t1, t2);
  result["chunk_size"] = unit;
  result["rank_threads"] = threads;
  return result;
}

Registrar reg_chunkflow("chunkflow", RunChunkflowBench);

}  // namespace
}  // namespace loom::bench
