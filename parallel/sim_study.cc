#include "parallel/sim_study.h"

#include <algorithm>
#include <chrono>
#include <cmath>

#include "absl/strings/str_format.h"
#include "data/length_batch.h"
#include "parallel/plan_validator.h"

namespace loom {
namespace {

double Seconds(std::chrono::steady_clock::time_point from, std::chrono::steady_clock::time_point to) {
  return std::chrono::duration<double>(to - from).count();
}

// Ring K/V (and dK/dV) and pipeline activations (and their gradients) each rank sends, per GPU.
std::vector<double> BytesSent(const StepPlan& plan, const CostModel& cost) {
  std::vector<double> sent(plan.ranks.size(), 0.0);
  for (size_t r = 0; r < plan.ranks.size(); ++r) {
    for (const Action& a : plan.ranks[r].actions) {
      if (a.kind == ActionKind::kRingExchange) {
        sent[r] += static_cast<double>(
            cost.RingBytesSent(static_cast<int>(a.ring.size()), a.bytes_per_step));
      }
      const bool sends = (a.kind == ActionKind::kForward && a.next_rank >= 0) ||
                         (a.kind == ActionKind::kBackward && a.prev_rank >= 0);
      if (sends) {
        sent[r] += static_cast<double>(TokenCount(a.tokens) * cost.stage_message_bytes_per_token);
      }
    }
  }
  return sent;
}

StrategyStep Measure(const StepPlan& plan, const CostModel& cost, const SimResult& sim,
                     const ClusterCost& cc, double flops, int gpus) {
  StrategyStep s;
  s.step_s = sim.step_s;
  s.mfu = sim.step_s > 0 ? flops / (sim.step_s * gpus * cc.peak_flops_per_gpu) : 0.0;
  double busy_max = 0.0, busy_sum = 0.0;
  for (const RankTimeline& t : sim.ranks) {
    busy_max = std::max(busy_max, t.busy_s);
    busy_sum += t.busy_s;
  }
  const double busy_mean = busy_sum / static_cast<double>(std::max<size_t>(sim.ranks.size(), 1));
  s.balance = busy_mean > 0 ? busy_max / busy_mean : 1.0;
  s.bubble = sim.bubble_fraction();
  const std::vector<double> sent = BytesSent(plan, cost);
  for (const double b : sent) {
    s.bytes_sent_mean += b / static_cast<double>(sent.size());
    s.bytes_sent_max = std::max(s.bytes_sent_max, b);
  }
  s.peak_memory_bytes = cc.model_state_bytes + sim.peak_memory_bytes();
  for (const RankPlan& rank : plan.ranks) {
    int forwards = 0;
    for (const Action& a : rank.actions) forwards += a.kind == ActionKind::kForward;
    s.micro_batches_max = std::max(s.micro_batches_max, forwards);
  }
  return s;
}

double Median(std::vector<double> v) { return Percentile(std::move(v), 0.5); }

}  // namespace

double Percentile(std::vector<double> values, double p) {
  if (values.empty()) return 0.0;
  std::sort(values.begin(), values.end());
  const double rank = std::ceil(p * static_cast<double>(values.size()));
  const size_t i = static_cast<size_t>(std::clamp(rank, 1.0, static_cast<double>(values.size())));
  return values[i - 1];
}

absl::StatusOr<StudyResult> RunStudy(const StudySetup& setup, const TraceSink& trace) {
  if (setup.lengths == nullptr || setup.global_batch_tokens < 1 || setup.steps < 1) {
    return absl::InvalidArgumentError(
        "a study needs a length distribution, a positive global batch and at least one step");
  }
  StudyResult out;
  const int gpus = setup.cluster.gpus();
  const int64_t longest =
      setup.context_tokens > 0 ? setup.context_tokens : setup.lengths->max_length();
  std::vector<StrategyContext> contexts;
  for (const StrategySpec& spec : setup.strategies) {
    StrategyResult r;
    r.spec = spec;
    const int tp = spec.tensor_parallel > 0 ? spec.tensor_parallel : setup.tensor_parallel;
    const bool recompute =
        spec.layer_recompute < 0
            ? setup.layer_recompute && spec.kind != StrategyKind::kBest
            : spec.layer_recompute > 0;
    absl::StatusOr<ClusterCost> cc = MakeClusterCost(setup.model, setup.cluster, tp, recompute,
                                                     std::max(spec.pipeline_size, 1));
    if (cc.ok()) {
      r.cost = *std::move(cc);
      r.capacity_tokens = spec.capacity_tokens > 0   ? spec.capacity_tokens
                          : setup.capacity_tokens > 0 ? setup.capacity_tokens
                                                      : CapacityFromMemory(r.cost);
      if (r.capacity_tokens < 1) {
        r.error = absl::StrFormat(
            "not even 1,024 tokens per GPU fit in the %.1f GB the model states leave",
            r.cost.activation_budget_bytes / 1e9);
      }
    } else {
      r.error = std::string(cc.status().message());
    }
    contexts.push_back({r.cost.world_size, r.capacity_tokens, longest,
                        r.cost.activation_budget_bytes, r.cost.host_memory_bytes});
    out.strategies.push_back(std::move(r));
  }

  SimulatorOptions simulator = setup.simulator;
  simulator.track_memory = true;  // the peak memory per GPU comes from the simulated timeline
  double tokens_sum = 0.0, sequences_sum = 0.0;
  std::vector<double> ideal;
  for (int step = 1; step <= setup.steps; ++step) {
    const std::vector<int64_t> lengths =
        DrawLengthBatch(*setup.lengths, setup.global_batch_tokens, setup.context_tokens,
                        setup.seed * 1000003 + static_cast<uint64_t>(step));
    std::vector<SequenceSpec> sequences;
    sequences.reserve(lengths.size());
    for (const int64_t l : lengths) {
      sequences.push_back({static_cast<int64_t>(sequences.size()), l});
      tokens_sum += static_cast<double>(l);
    }
    sequences_sum += static_cast<double>(sequences.size());
    const double flops = TrainingFlops(setup.model, sequences);
    ideal.push_back(IdealStepSeconds(setup.model, setup.cluster, sequences));
    for (size_t k = 0; k < out.strategies.size(); ++k) {
      StrategyResult& result = out.strategies[k];
      if (!result.error.empty()) continue;
      const CostModel& cost = result.cost.cost;
      const auto t0 = std::chrono::steady_clock::now();
      absl::StatusOr<StepPlan> plan = PlanWithStrategy(sequences, result.spec, contexts[k], cost);
      if (!plan.ok()) {
        result.error = absl::StrFormat("step %d: %s", step, plan.status().message());
        result.steps.clear();
        continue;
      }
      const auto t1 = std::chrono::steady_clock::now();
      if (absl::Status v = ValidatePlan(*plan, cost); !v.ok()) {
        return absl::InternalError(absl::StrFormat("step %d: the %s plan is invalid: %s", step,
                                                   result.spec.Label(), v.message()));
      }
      const auto t2 = std::chrono::steady_clock::now();
      absl::StatusOr<SimResult> sim = SimulateStep(*plan, cost, simulator);
      if (!sim.ok()) {
        return absl::InternalError(absl::StrFormat("step %d: simulating the %s plan: %s", step,
                                                   result.spec.Label(), sim.status().message()));
      }
      const auto t3 = std::chrono::steady_clock::now();
      StrategyStep s = Measure(*plan, cost, *sim, result.cost, flops, gpus);
      s.plan_s = Seconds(t0, t1);
      s.validate_s = Seconds(t1, t2);
      s.simulate_s = Seconds(t2, t3);
      result.steps.push_back(s);
      if (step == setup.trace_step && trace) {
        if (absl::Status w = trace(result.spec, *plan, cost, *sim); !w.ok()) return w;
      }
    }
  }
  out.ideal_step_s = Median(ideal);
  out.tokens_per_step = static_cast<int64_t>(tokens_sum / setup.steps);
  out.sequences_per_step = static_cast<int64_t>(sequences_sum / setup.steps);

  const StrategyResult* baseline = nullptr;
  for (StrategyResult& r : out.strategies) {
    if (r.steps.empty()) continue;
    std::vector<double> times, mfu;
    double balance = 0, bubble = 0, bytes = 0;
    for (const StrategyStep& s : r.steps) {
      times.push_back(s.step_s);
      mfu.push_back(s.mfu);
      balance += s.balance;
      bubble += s.bubble;
      bytes += s.bytes_sent_mean;
      r.peak_memory_bytes = std::max(r.peak_memory_bytes, s.peak_memory_bytes);
    }
    const double n = static_cast<double>(r.steps.size());
    r.median_step_s = Median(times);
    r.p99_step_s = Percentile(times, 0.99);
    r.tokens_per_s = r.median_step_s > 0 ? tokens_sum / setup.steps / r.median_step_s : 0.0;
    r.mfu = Median(mfu);
    r.balance = balance / n;
    r.bubble = bubble / n;
    r.bytes_sent_per_gpu = bytes / n;
    r.fits_memory = r.peak_memory_bytes <= r.cost.usable_memory_bytes;
    if (baseline == nullptr && r.spec.kind == StrategyKind::kStatic) baseline = &r;
  }
  if (baseline != nullptr) {
    for (StrategyResult& r : out.strategies) {
      if (r.median_step_s > 0) r.speedup_vs_static = baseline->median_step_s / r.median_step_s;
    }
  }
  return out;
}

}  // namespace loom
