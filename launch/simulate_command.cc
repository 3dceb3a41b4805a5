// loom simulate: plans for a cluster this machine does not have. A study file (sim_config.h)
// names the cluster, the model, where sequence lengths come from and the strategies to compare;
// every strategy plans the same global batches, each plan is validated and timed by the
// simulator, and one line per strategy gives the figures. A last line of JSON carries them all.
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <limits>
#include <string_view>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "data/length_distribution.h"
#include "data/token_dataset.h"
#include "launch/command_line.h"
#include "launch/commands.h"
#include "launch/sim_config.h"
#include "launch/training_data.h"
#include "nlohmann/json.hpp"
#include "parallel/sim_study.h"
#include "parallel/sim_trace.h"
#include "src/atomic_file.h"
#include "src/model_presets.h"

namespace loom {
namespace {
namespace fs = std::filesystem;

constexpr char kHelp[] =
    "loom simulate --config FILE [--out DIR] [section.key=value ...]\n"
    "  simulates the config's strategies on its cluster: per strategy the step time (median and\n"
    "  p99 over the steps), tokens/s, MFU, balance, bubble, bytes sent and peak memory per GPU,\n"
    "  and the speedup over `static`; the last line is JSON. With --out, DIR gets summary.json\n"
    "  and a Chrome trace per strategy of the step simulate.trace_step (draw the comparison with\n"
    "  scripts/plot_sim.py DIR/summary.json DIR/strategies.png)";

int Fail(int code, absl::string_view message) {
  std::fprintf(stderr, "loom simulate: %.*s\n", static_cast<int>(message.size()), message.data());
  return code;
}

// The config's source of lengths as a distribution.
absl::StatusOr<LengthDistribution> Lengths(const SimDataConfig& d) {
  if (!d.lengths.empty()) return LengthDistribution::Preset(d.lengths);
  if (!d.lengths_file.empty()) {
    absl::StatusOr<LengthDistribution> dist = LengthDistribution::FromLengthsFile(d.lengths_file);
    if (!dist.ok()) return absl::Status(dist.status().code(), absl::StrCat("data.lengths_file: ", dist.status().message()));
    return dist;
  }
  absl::StatusOr<std::vector<std::string>> paths = ResolveShards(d.shards, "data.shards");
  if (!paths.ok()) return paths.status();
  DatasetOptions options;
  options.vocab_size = int64_t{1} << 32;  // any token id: only the documents' lengths are read
  options.eot_token = static_cast<uint32_t>(d.eot_token);
  absl::StatusOr<TokenDataset> ds = TokenDataset::Open(*paths, options);
  if (!ds.ok()) return absl::Status(ds.status().code(), absl::StrCat("data.shards: ", ds.status().message()));
  std::vector<int64_t> lengths;
  for (const int64_t l : ds->DocumentLengths()) {
    if (l > 0) lengths.push_back(l);
  }
  if (lengths.empty()) {
    return absl::InvalidArgumentError(
        absl::StrFormat("data.shards: '%s' holds no documents", d.shards));
  }
  return LengthDistribution::FromLengths(d.shards, std::move(lengths));
}

std::string Gb(double bytes) { return absl::StrFormat("%.1f GB", bytes / 1e9); }

std::string Duration(double s) {
  if (s >= 60) {
    const int64_t whole = std::llround(s);
    return absl::StrFormat("%dm%02ds", whole / 60, whole % 60);
  }
  if (s >= 1) return absl::StrFormat("%.2f s", s);
  return absl::StrFormat("%.1f ms", 1e3 * s);
}

std::string FileLabel(const std::string& label) {
  std::string out;
  for (const char c : label) out += (std::isalnum(static_cast<unsigned char>(c)) || c == '-') ? c : '_';
  return out;
}

nlohmann::ordered_json StrategyJson(const StrategyResult& r) {
  nlohmann::ordered_json j = {{"strategy", r.spec.Label()},
                              {"kind", StrategyKindName(r.spec.kind)}};
  if (!r.error.empty()) {
    j["error"] = r.error;
    return j;
  }
  std::vector<double> plan_s, validate_s, simulate_s;
  for (const StrategyStep& s : r.steps) {
    plan_s.push_back(s.plan_s);
    validate_s.push_back(s.validate_s);
    simulate_s.push_back(s.simulate_s);
  }
  j["tensor_parallel"] = r.cost.tensor_parallel;
  j["world_size"] = r.cost.world_size;
  j["recompute"] = r.cost.cost.layer_recompute;
  j["capacity_tokens"] = r.capacity_tokens;
  j["step_s_median"] = r.median_step_s;
  j["step_s_p99"] = r.p99_step_s;
  j["tokens_per_s"] = r.tokens_per_s;
  j["mfu"] = r.mfu;
  j["balance"] = r.balance;
  j["bubble"] = r.bubble;
  j["bytes_sent_per_gpu"] = r.bytes_sent_per_gpu;
  j["peak_memory_bytes"] = r.peak_memory_bytes;
  j["fits_memory"] = r.fits_memory;
  j["speedup_vs_static"] = r.speedup_vs_static;
  j["plan_s_median"] = Percentile(plan_s, 0.5);
  j["validate_s_median"] = Percentile(validate_s, 0.5);
  j["simulate_s_median"] = Percentile(simulate_s, 0.5);
  return j;
}

const StrategyResult* FindLabel(const StudyResult& study, const std::string& label) {
  for (const StrategyResult& r : study.strategies) {
    if (r.spec.Label() == label) return &r;
  }
  return nullptr;
}
const StrategyResult* FindKind(const StudyResult& study, StrategyKind kind) {
  for (const StrategyResult& r : study.strategies) {
    if (r.spec.kind == kind) return &r;
  }
  return nullptr;
}

// How each strategy runs on the cluster: its tensor-parallel size, ranks, checkpointing, C and
// the memory its model states leave.
void PrintSetups(const StudyResult& study) {
  std::printf("%-20s %3s %6s %10s %9s %13s\n", "strategy", "TP", "ranks", "recompute",
              "C tokens", "model states");
  for (const StrategyResult& r : study.strategies) {
    if (r.cost.world_size == 0) continue;
    std::printf("%-20s %3d %6d %10s %9lld %13s\n", r.spec.Label().c_str(), r.cost.tensor_parallel,
                r.cost.world_size, r.cost.cost.layer_recompute ? "per layer" : "none",
                static_cast<long long>(r.capacity_tokens),
                Gb(static_cast<double>(r.cost.model_state_bytes)).c_str());
  }
}

void PrintTable(const StudyResult& study) {
  std::printf("%-20s %10s %10s %12s %6s %8s %7s %11s %9s %8s\n", "strategy", "step med",
              "step p99", "tokens/s", "MFU", "balance", "bubble", "sent/GPU", "peak mem",
              "speedup");
  for (const StrategyResult& r : study.strategies) {
    if (!r.error.empty()) {
      std::printf("%-20s cannot plan this setting: %s\n", r.spec.Label().c_str(), r.error.c_str());
      continue;
    }
    std::printf("%-20s %10s %10s %12.4g %5.1f%% %8.3f %7.3f %11s %9s %7.2fx%s\n",
                r.spec.Label().c_str(), Duration(r.median_step_s).c_str(),
                Duration(r.p99_step_s).c_str(), r.tokens_per_s, 100 * r.mfu, r.balance, r.bubble,
                Gb(r.bytes_sent_per_gpu).c_str(), Gb(static_cast<double>(r.peak_memory_bytes)).c_str(),
                r.speedup_vs_static,
                r.fits_memory ? "" : "  (over the GPU's memory)");
  }
}

}  // namespace

int SimulateCommand(const std::vector<std::string>& args) {
  absl::StatusOr<CommandLine> cl = CommandLine::Parse("simulate", args, {"config", "out"}, {"help"});
  if (!cl.ok()) {
    std::fprintf(stderr, "%s\n", std::string(cl.status().message()).c_str());
    return 2;
  }
  if (cl->Has("help")) {
    std::puts(kHelp);
    return 0;
  }
  absl::StatusOr<std::string> config_path = cl->Required("config");
  if (!config_path.ok()) {
    std::fprintf(stderr, "%s\n", std::string(config_path.status().message()).c_str());
    return 2;
  }
  absl::StatusOr<SimConfig> config = LoadSimConfig(*config_path, cl->positional());
  if (!config.ok()) return Fail(2, config.status().message());
  absl::StatusOr<ClusterSpec> cluster = ResolveCluster(config->cluster);
  absl::StatusOr<ModelConfig> model = ResolveModel(config->model);
  if (!cluster.ok() || !model.ok()) {
    return Fail(2, (cluster.ok() ? model.status() : cluster.status()).message());
  }
  absl::StatusOr<LengthDistribution> lengths = Lengths(config->data);
  if (!lengths.ok()) return Fail(1, lengths.status().message());
  const std::optional<std::string> out = cl->Get("out");

  StudySetup setup;
  setup.model = *model;
  setup.cluster = *cluster;
  setup.tensor_parallel = config->model.tensor_parallel;
  setup.lengths = &*lengths;
  setup.context_tokens = config->data.context_tokens;
  setup.global_batch_tokens = config->train.global_batch_tokens;
  setup.steps = config->train.steps;
  setup.seed = config->train.seed;
  setup.capacity_tokens = config->train.capacity_tokens;
  setup.layer_recompute = config->train.recompute;
  setup.strategies = config->strategies;
  setup.simulator.overlap_ring_messages = config->simulate.overlap;
  setup.trace_step = out.has_value() ? std::min(config->simulate.trace_step, config->train.steps) : 0;

  std::vector<std::string> written;
  if (out.has_value()) {
    std::error_code ec;
    fs::create_directories(*out, ec);
    if (ec) return Fail(1, absl::StrFormat("--out: cannot create %s: %s", *out, ec.message()));
  }
  const int trace_ranks = config->simulate.trace_ranks;
  TraceSink sink = [&](const StrategySpec& spec, const StepPlan& plan, const CostModel& cost,
                       const SimResult& sim) -> absl::Status {
    const std::string path =
        (fs::path(*out) / absl::StrFormat("trace-%s.json", FileLabel(spec.Label()))).string();
    const std::string title = absl::StrFormat("%s, step %d, simulated (%.3f s)", spec.Label(),
                                              setup.trace_step, sim.step_s);
    if (absl::Status s = WriteSimulatedTrace(plan, cost, sim, path, trace_ranks, title); !s.ok()) {
      return s;
    }
    written.push_back(path);
    return absl::OkStatus();
  };

  const double params = ModelParameters(*model);
  std::printf(
      "simulating %d step(s) of %d x %d %s (%d GPUs), %s (%.1fB parameters), tensor parallel "
      "%d; lengths %s, context %lld, global batch %lld tokens\n",
      setup.steps, cluster->nodes, cluster->gpus_per_node, cluster->gpu.name.c_str(),
      cluster->gpus(), config->model.preset.c_str(), params / 1e9, setup.tensor_parallel,
      lengths->name().c_str(),
      static_cast<long long>(setup.context_tokens),
      static_cast<long long>(setup.global_batch_tokens));
  absl::StatusOr<StudyResult> study = RunStudy(setup, out.has_value() ? sink : TraceSink());
  if (!study.ok()) return Fail(1, study.status().message());
  std::printf("%lld sequences and %lld tokens per step (mean)\n",
              static_cast<long long>(study->sequences_per_step),
              static_cast<long long>(study->tokens_per_step));
  PrintSetups(*study);
  PrintTable(*study);
  const StrategyResult* statik = FindKind(*study, StrategyKind::kStatic);
  if (statik != nullptr && statik->median_step_s > 0 && study->ideal_step_s > 0) {
    std::printf(
        "ideal step (every GPU computing the model's FLOPs at the assumed efficiency, nothing "
        "else): %s, so no strategy can be more than %.2fx faster than static here\n",
        Duration(study->ideal_step_s).c_str(), statik->median_step_s / study->ideal_step_s);
  }
  bool any = false;
  for (const StrategyResult& r : study->strategies) any = any || r.error.empty();
  if (!any) return Fail(1, "no strategy can run this setting (see each one's reason above)");

  nlohmann::ordered_json strategies = nlohmann::ordered_json::array();
  for (const StrategyResult& r : study->strategies) strategies.push_back(StrategyJson(r));
  nlohmann::ordered_json summary = {
      {"config", *config_path},
      {"gpus", cluster->gpus()},
      {"gpu", cluster->gpu.name},
      {"model", config->model.preset},
      {"tensor_parallel", setup.tensor_parallel},
      {"recompute", setup.layer_recompute},
      {"context_tokens", setup.context_tokens},
      {"lengths", lengths->name()},
      {"global_batch_tokens", setup.global_batch_tokens},
      {"tokens_per_step", study->tokens_per_step},
      {"steps", setup.steps},
      {"overlap", setup.simulator.overlap_ring_messages},
      {"ideal_step_s", study->ideal_step_s},
      {"strategies", std::move(strategies)}};
  const SimReferenceConfig& ref = config->reference;
  if (ref.paper_ratio > 0 || !ref.setting.empty()) {
    const StrategyResult* compared = FindLabel(*study, ref.strategy);
    const StrategyResult* megatron = FindKind(*study, StrategyKind::kMegatronHybridCp);
    const StrategyResult* naive = FindKind(*study, StrategyKind::kHdpNaive);
    const double loom_ratio = compared != nullptr ? compared->speedup_vs_static : 0.0;
    const double megatron_ratio = megatron != nullptr ? megatron->speedup_vs_static : 0.0;
    std::printf("%s: paper %.2fx, loom %s %.2fx, megatron-hybrid-cp %.2fx\n", ref.setting.c_str(),
                ref.paper_ratio, ref.strategy.c_str(), loom_ratio, megatron_ratio);
    nlohmann::ordered_json r = {{"setting", ref.setting},
                                {"source", ref.source},
                                {"paper_ratio", ref.paper_ratio},
                                {"loom_strategy", ref.strategy},
                                {"loom_ratio", loom_ratio},
                                {"megatron_hybrid_cp_ratio", megatron_ratio}};
    if (ref.paper_naive_ratio > 0) {
      r["paper_naive_ratio"] = ref.paper_naive_ratio;
      r["loom_naive_ratio"] = naive != nullptr ? naive->speedup_vs_static : 0.0;
    }
    if (statik != nullptr && statik->median_step_s > 0 && study->ideal_step_s > 0) {
      r["ceiling_ratio"] = statik->median_step_s / study->ideal_step_s;
    }
    r["note"] = ref.note;
    summary["reference"] = std::move(r);
  }
  if (out.has_value()) {
    const std::string path = (fs::path(*out) / "summary.json").string();
    const std::string text = summary.dump(1);
    if (absl::Status s = WriteFileAtomically(path, {std::string_view(text)}); !s.ok()) {
      return Fail(1, s.message());
    }
    std::printf("wrote %s and %zu trace(s) of step %d; draw: /usr/bin/python3 scripts/plot_sim.py "
                "%s %s\n",
                path.c_str(), written.size(), setup.trace_step, path.c_str(),
                (fs::path(*out) / "strategies.png").string().c_str());
  }
  std::printf("%s\n", summary.dump().c_str());
  return 0;
}

}  // namespace loom
