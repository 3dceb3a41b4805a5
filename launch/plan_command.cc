// loom plan: the step plans a config makes for the first steps of its training data, without
// training. Each plan is validated and written as JSON and as a Chrome trace, with one line of
// figures per step, so a planner's choices can be read (and drawn with scripts/plot_plan.py)
// before a run spends its time on them.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <map>
#include <optional>
#include <string_view>

#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/string_view.h"
#include "data/packed_batch.h"
#include "launch/command_line.h"
#include "launch/commands.h"
#include "launch/experiment_config.h"
#include "launch/parallel_setup.h"
#include "launch/training_data.h"
#include "nlohmann/json.hpp"
#include "parallel/chrome_trace.h"
#include "parallel/plan_json.h"
#include "parallel/simulator.h"
#include "parallel/plan_metrics.h"
#include "parallel/plan_validator.h"
#include "parallel/planner.h"
#include "src/atomic_file.h"

namespace loom {
namespace {
namespace fs = std::filesystem;

constexpr char kHelp[] =
    "loom plan --config FILE [--steps N] --out DIR [key.path=value ...]\n"
    "  plans the first N steps (default 1) of the config's training data as `loom train` would\n"
    "  draw them, validates each plan and writes DIR/step-NNNNNN.plan.json and\n"
    "  DIR/step-NNNNNN.trace.json (chrome://tracing, Perfetto, scripts/plot_plan.py)";

// Usage errors (bad flags, a config that does not parse or does not make sense) exit 2; work that
// fails on a good config (data missing, a batch that cannot be planned, a disk error) exits 1.
int Fail(int code, absl::string_view message) {
  std::fprintf(stderr, "loom plan: %.*s\n", static_cast<int>(message.size()), message.data());
  return code;
}

// The command line's own errors already start with "loom plan: ".
int UsageError(const absl::Status& status) {
  std::fprintf(stderr, "%s\n", std::string(status.message()).c_str());
  return 2;
}

struct PlannedStep {
  int64_t step = 0;  // 1-based, as `loom train` counts
  int64_t tokens = 0;
  StepPlan plan;
  PlanMetrics metrics;
  std::vector<int> ring_sizes;  // in ring id order
  double plan_ms = 0.0;
  std::optional<SimResult> sim;  // pipelines: the simulated step, for its bubble
};

std::vector<int> RingSizes(const StepPlan& plan) {
  std::map<int, int> by_id;
  for (const RankPlan& rank : plan.ranks) {
    for (const Action& a : rank.actions) {
      if (a.kind == ActionKind::kRingExchange) by_id[a.ring_id] = static_cast<int>(a.ring.size());
    }
  }
  std::vector<int> sizes;
  for (const auto& [id, size] : by_id) sizes.push_back(size);
  return sizes;
}

// "2,2,4" for a few rings; sorted sizes with counts ("2x14,4x3") when a line would get long.
std::string DescribeRingSizes(std::vector<int> sizes) {
  if (sizes.size() <= 8) return absl::StrJoin(sizes, ",");
  std::map<int, int> count;
  for (int s : sizes) ++count[s];
  std::vector<std::string> parts;
  for (const auto& [size, n] : count) parts.push_back(absl::StrFormat("%dx%d", size, n));
  return absl::StrJoin(parts, ",");
}

std::string Bytes(double bytes) {
  if (bytes >= 1 << 30) return absl::StrFormat("%.2f GiB", bytes / (1 << 30));
  if (bytes >= 1 << 20) return absl::StrFormat("%.2f MiB", bytes / (1 << 20));
  if (bytes >= 1 << 10) return absl::StrFormat("%.1f KiB", bytes / (1 << 10));
  return absl::StrFormat("%.0f B", bytes);
}

std::string StepLine(const PlannedStep& s, const std::string& planner) {
  const PlanMetrics& m = s.metrics;
  int mb_min = m.ranks.front().micro_batches, mb_max = mb_min;
  int64_t tok_min = m.ranks.front().tokens, tok_max = tok_min;
  int64_t bytes_max = 0;
  int64_t tok_sum = 0;  // a pipeline computes each token once per stage
  for (const RankLoad& r : m.ranks) {
    tok_sum += r.tokens;
    mb_min = std::min(mb_min, r.micro_batches);
    mb_max = std::max(mb_max, r.micro_batches);
    tok_min = std::min(tok_min, r.tokens);
    tok_max = std::max(tok_max, r.tokens);
    bytes_max = std::max(bytes_max, r.ring_bytes_sent);
  }
  std::string rings = absl::StrFormat("rings %d", m.rings);
  if (m.rings > 0) {
    absl::StrAppend(&rings, " (sizes ", DescribeRingSizes(s.ring_sizes), ")");
  }
  const std::string pipeline =
      s.sim.has_value()
          ? absl::StrFormat(", %d stages under %s, simulated step %.3f ms with bubble %.3f",
                            s.plan.num_stages(), s.plan.schedule, 1e3 * s.sim->step_s,
                            s.sim->bubble_fraction())
          : "";
  return absl::StrFormat(
      "step %d: %s, %d sequences, %d tokens, balance %.4f (rank cost max %.3f ms, mean %.3f ms), "
      "micro-batches/rank %d..%d, tokens/rank min %d mean %.0f max %d, %s, ring bytes/rank mean "
      "%s max %s%s, planned in %.2f ms",
      s.step, planner, s.plan.sequences.size(), s.tokens, m.balance(), 1e3 * m.max_compute_s,
      1e3 * m.mean_compute_s, mb_min, mb_max, tok_min,
      static_cast<double>(tok_sum) / static_cast<double>(m.ranks.size()), tok_max, rings,
      Bytes(m.mean_ring_bytes_sent), Bytes(static_cast<double>(bytes_max)), pipeline, s.plan_ms);
}

std::string StepPath(const std::string& dir, int64_t step, const char* suffix) {
  return (fs::path(dir) / absl::StrFormat("step-%06d.%s", step, suffix)).string();
}

// Writes every step's files, each atomically. A failure part way removes the files this call
// wrote (and DIR when it made it), so a failed run leaves nothing behind.
absl::Status WriteSteps(const std::vector<PlannedStep>& steps, const CostModel& cost,
                        const std::string& dir) {
  std::error_code ec;
  const bool existed = fs::exists(dir, ec);
  fs::create_directories(dir, ec);
  if (ec) {
    return absl::PermissionDeniedError(
        absl::StrFormat("--out: cannot create %s: %s", dir, ec.message()));
  }
  std::vector<std::string> written;
  absl::Status status;
  for (const PlannedStep& s : steps) {
    const std::string plan_text = PlanToJson(s.plan).dump(1);
    const std::string trace_text = ChromeTrace(s.plan, cost).dump();
    for (const auto& [path, text] : {std::pair{StepPath(dir, s.step, "plan.json"), &plan_text},
                                     std::pair{StepPath(dir, s.step, "trace.json"), &trace_text}}) {
      status = WriteFileAtomically(path, {std::string_view(*text)});
      if (!status.ok()) break;
      written.push_back(path);
    }
    if (!status.ok()) break;
  }
  if (status.ok()) return status;
  for (const std::string& path : written) fs::remove(path, ec);
  if (!existed) fs::remove(dir, ec);
  return status;
}

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

// The figures over all steps, how to draw a step, and a last line of JSON.
void PrintSummary(const std::vector<PlannedStep>& steps, const PlannerOptions& options,
                  const std::string& out) {
  std::vector<double> balances, plan_ms;
  double rings = 0, ring_bytes = 0;
  int largest_ring = 1;
  for (const PlannedStep& s : steps) {
    balances.push_back(s.metrics.balance());
    plan_ms.push_back(s.plan_ms);
    rings += s.metrics.rings;
    ring_bytes += s.metrics.mean_ring_bytes_sent;
    largest_ring = std::max(largest_ring, s.metrics.largest_ring);
  }
  const double n = static_cast<double>(steps.size());
  double balance_mean = 0;
  for (double b : balances) balance_mean += b / n;
  const double balance_max = *std::max_element(balances.begin(), balances.end());
  std::printf(
      "%lld steps: balance mean %.4f max %.4f, rings per step %.1f (largest %d ranks), "
      "ring bytes per rank per step %s, planning median %.2f ms\n",
      static_cast<long long>(steps.size()), balance_mean, balance_max, rings / n, largest_ring,
      Bytes(ring_bytes / n).c_str(), Median(plan_ms));
  const std::string first = StepPath(out, 1, "trace.json");
  std::printf("wrote %s .. %s (plans and Chrome traces)\n", StepPath(out, 1, "plan.json").c_str(),
              StepPath(out, steps.back().step, "trace.json").c_str());
  // Debian's python3-matplotlib (scripts/setup.sh) installs for /usr/bin/python3, which need not
  // be the first python3 on PATH.
  std::error_code ec;
  const char* python = fs::exists("/usr/bin/python3", ec) ? "/usr/bin/python3" : "python3";
  std::printf("draw step 1: %s scripts/plot_plan.py %s %s\n", python, first.c_str(),
              StepPath(out, 1, "png").c_str());
  // ordered_json: the keys read in the order of the lines above.
  const nlohmann::ordered_json summary = {
      {"steps", steps.size()},
      {"planner", PlannerKindName(options.kind)},
      {"world_size", options.world_size},
      {"capacity_tokens", options.capacity_tokens},
      {"balance_mean", balance_mean},
      {"balance_max", balance_max},
      {"plan_ms_median", Median(plan_ms)},
      {"plan_ms_max", *std::max_element(plan_ms.begin(), plan_ms.end())},
      {"rings_mean", rings / n},
      {"largest_ring", largest_ring},
      {"ring_bytes_per_rank_mean", ring_bytes / n},
      {"out", out}};
  std::printf("%s\n", summary.dump().c_str());
}

}  // namespace

int PlanCommand(const std::vector<std::string>& args) {
  absl::StatusOr<CommandLine> cl =
      CommandLine::Parse("plan", args, {"config", "steps", "out"}, {"help"});
  if (!cl.ok()) return UsageError(cl.status());
  if (cl->Has("help")) {
    std::puts(kHelp);
    return 0;
  }
  absl::StatusOr<std::string> config_path = cl->Required("config");
  if (!config_path.ok()) return UsageError(config_path.status());
  absl::StatusOr<std::string> out = cl->Required("out");
  if (!out.ok()) return UsageError(out.status());
  absl::StatusOr<int64_t> num_steps = cl->GetInt("steps", 1);
  if (!num_steps.ok()) return UsageError(num_steps.status());
  if (*num_steps < 1) return Fail(2, absl::StrFormat("--steps must be >= 1, got %d", *num_steps));

  absl::StatusOr<ExperimentConfig> config = LoadExperimentConfig(*config_path, cl->positional());
  if (!config.ok()) return Fail(2, config.status().message());
  absl::StatusOr<PlannerOptions> options = PlannerOptionsFromConfig(*config);
  if (!options.ok()) return Fail(2, options.status().message());
  const CostModel cost = CostModelFromConfig(*config);
  std::string planner = PlannerKindName(options->kind);
  if (options->kind == PlannerKind::kStatic) {
    absl::StrAppend(&planner, " (cp ", options->cp_size, ")");
  }

  absl::StatusOr<std::unique_ptr<TokenDataset>> train =
      OpenDataset(config->data.train, "data.train", *config);
  if (!train.ok()) return Fail(1, train.status().message());
  absl::StatusOr<BatchSampler> sampler = TrainingSampler(**train, config->data);
  if (!sampler.ok()) return Fail(1, sampler.status().message());

  std::printf(
      "planning %lld step(s) of %s on %d ranks, C %lld tokens per rank per micro-batch, "
      "cost per layer %.3g s^2 + %.3g s + %.3g (s tokens, seconds)\n",
      static_cast<long long>(*num_steps), planner.c_str(), options->world_size,
      static_cast<long long>(options->capacity_tokens), cost.attention_s, cost.linear_s,
      cost.overhead_s);
  std::vector<PlannedStep> steps;
  PackedBatch packed;
  for (int64_t step = 1; step <= *num_steps; ++step) {
    const GlobalBatch batch = sampler->Next();
    PackBatch(**train, batch, &packed);
    const std::vector<SequenceSpec> sequences = SequencesOf(packed);
    PlannedStep s;
    s.step = step;
    s.tokens = batch.num_tokens;
    const auto t0 = std::chrono::steady_clock::now();
    absl::StatusOr<StepPlan> plan = PlanStep(sequences, *options, cost);
    s.plan_ms =
        std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
    if (!plan.ok()) {
      // The planner names sequences by their index in the batch; say where the longest comes
      // from, as it is the usual culprit.
      const auto longest = std::max_element(
          batch.sequences.begin(), batch.sequences.end(),
          [](const SequenceRef& a, const SequenceRef& b) { return a.length < b.length; });
      return Fail(1, absl::StrFormat(
                         "step %d: %s planner: %s (the batch's longest sequence, index %d, is "
                         "the piece [%d, %d) of %s)",
                         step, planner, plan.status().message(), longest - batch.sequences.begin(),
                         longest->offset, longest->offset + longest->length,
                         (*train)->DescribeDocument(longest->document)));
    }
    s.plan = std::move(plan).value();
    if (absl::Status v = ValidatePlan(s.plan, cost); !v.ok()) {
      return Fail(1, absl::StrFormat("step %d: the %s planner made an invalid plan: %s", step,
                                     planner, v.message()));
    }
    s.metrics = MeasurePlan(s.plan, cost);
    s.ring_sizes = RingSizes(s.plan);
    if (!s.plan.stages.empty()) {
      absl::StatusOr<SimResult> sim = SimulateStep(s.plan, cost);
      if (!sim.ok()) return Fail(1, sim.status().message());
      s.sim = *std::move(sim);
    }
    std::printf("%s\n", StepLine(s, planner).c_str());
    steps.push_back(std::move(s));
  }
  if (absl::Status w = WriteSteps(steps, cost, *out); !w.ok()) return Fail(1, w.message());

  PrintSummary(steps, *options, *out);
  return 0;
}

}  // namespace loom
