#include "launch/sim_config.h"

#include <cerrno>
#include <cstdio>
#include <map>
#include <set>
#include <type_traits>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "data/length_distribution.h"
#include "launch/yaml_fields.h"
#include "src/model_presets.h"
#include "yaml-cpp/yaml.h"

namespace loom {
namespace {

constexpr char kStrategies[] = "strategies";

struct Section {
  const char* name;
  std::vector<YamlField> fields;
};

std::vector<absl::string_view> Choices(const std::vector<std::string>& names) {
  // The names live as long as the process (static preset tables).
  std::vector<absl::string_view> out;
  for (const std::string& n : names) out.push_back(n);
  return out;
}

const std::vector<std::string>& GpuNames() {
  static const auto* names = new std::vector<std::string>(GpuPresetNames());
  return *names;
}
const std::vector<std::string>& ModelNames() {
  static const auto* names = [] {
    auto* n = new std::vector<std::string>(ModelPresetNames());
    n->push_back("custom");
    return n;
  }();
  return *names;
}
const std::vector<std::string>& StrategyNames() {
  static const auto* names = new std::vector<std::string>(StrategyKindNames());
  return *names;
}

// Every key of the scalar sections, bound to the members of `c`.
std::vector<Section> Schema(SimConfig& c) {
  using enum Constraint;
  return {
      {"reference",
       {
           {.key = "setting", .value = &c.reference.setting},
           {.key = "source", .value = &c.reference.source},
           {.key = "paper_ratio", .value = &c.reference.paper_ratio, .constraint = kNonNegative},
           {.key = "paper_naive_ratio",
            .value = &c.reference.paper_naive_ratio,
            .constraint = kNonNegative},
           {.key = "strategy", .value = &c.reference.strategy, .constraint = kNonEmpty},
           {.key = "note", .value = &c.reference.note},
       }},
      {"cluster",
       {
           {.key = "nodes", .value = &c.cluster.nodes, .constraint = kPositive},
           {.key = "gpus_per_node", .value = &c.cluster.gpus_per_node, .constraint = kPositive},
           {.key = "gpu", .value = &c.cluster.gpu, .choices = Choices(GpuNames())},
           {.key = "peak_bf16_tflops",
            .value = &c.cluster.peak_bf16_tflops,
            .constraint = kNonNegative},
           {.key = "hbm_gb_per_s", .value = &c.cluster.hbm_gb_per_s, .constraint = kNonNegative},
           {.key = "memory_gb", .value = &c.cluster.memory_gb, .constraint = kNonNegative},
           {.key = "gemm_efficiency", .value = &c.cluster.gemm_efficiency, .constraint = kPositive},
           {.key = "attention_efficiency",
            .value = &c.cluster.attention_efficiency,
            .constraint = kPositive},
           {.key = "layer_overhead_us",
            .value = &c.cluster.layer_overhead_us,
            .constraint = kNonNegative},
           {.key = "intra_node_gb_per_s",
            .value = &c.cluster.intra_node_gb_per_s,
            .constraint = kNonNegative},
           {.key = "intra_node_latency_us",
            .value = &c.cluster.intra_node_latency_us,
            .constraint = kNonNegative},
           {.key = "inter_node_gb_per_s",
            .value = &c.cluster.inter_node_gb_per_s,
            .constraint = kNonNegative},
           {.key = "inter_node_latency_us",
            .value = &c.cluster.inter_node_latency_us,
            .constraint = kNonNegative},
           {.key = "host_gb_per_s", .value = &c.cluster.host_gb_per_s, .constraint = kNonNegative},
           {.key = "host_memory_gb",
            .value = &c.cluster.host_memory_gb,
            .constraint = kNonNegative},
           {.key = "memory_reserve_fraction",
            .value = &c.cluster.memory_reserve_fraction,
            .constraint = kFraction},
       }},
      {"model",
       {
           {.key = "preset", .value = &c.model.preset, .choices = Choices(ModelNames())},
           {.key = "vocab_size", .value = &c.model.vocab_size, .constraint = kNonNegative},
           {.key = "d_model", .value = &c.model.d_model, .constraint = kNonNegative},
           {.key = "n_layers", .value = &c.model.n_layers, .constraint = kNonNegative},
           {.key = "n_heads", .value = &c.model.n_heads, .constraint = kNonNegative},
           {.key = "n_kv_heads", .value = &c.model.n_kv_heads, .constraint = kNonNegative},
           {.key = "ffn_dim", .value = &c.model.ffn_dim, .constraint = kNonNegative},
           {.key = "tensor_parallel", .value = &c.model.tensor_parallel, .constraint = kPositive},
       }},
      {"data",
       {
           {.key = "lengths", .value = &c.data.lengths},
           {.key = "shards", .value = &c.data.shards},
           {.key = "lengths_file", .value = &c.data.lengths_file},
           {.key = "eot_token", .value = &c.data.eot_token, .constraint = kNonNegative},
           {.key = "context_tokens", .value = &c.data.context_tokens, .constraint = kNonNegative},
       }},
      {"train",
       {
           {.key = "global_batch_tokens",
            .value = &c.train.global_batch_tokens,
            .constraint = kPositive,
            .required = true},
           {.key = "steps", .value = &c.train.steps, .constraint = kPositive},
           {.key = "capacity_tokens",
            .value = &c.train.capacity_tokens,
            .constraint = kNonNegative},
           {.key = "recompute", .value = &c.train.recompute},
           {.key = "seed", .value = &c.train.seed},
       }},
      {"simulate",
       {
           {.key = "overlap", .value = &c.simulate.overlap},
           {.key = "trace_step", .value = &c.simulate.trace_step, .constraint = kNonNegative},
           {.key = "trace_ranks", .value = &c.simulate.trace_ranks, .constraint = kNonNegative},
       }},
  };
}

// The keys of one entry of `strategies:` written as a map.
struct StrategyEntry {
  std::string name;
  StrategySpec spec;
  bool recompute = false;  // read into spec.layer_recompute when given
};
std::vector<YamlField> StrategyFields(StrategyEntry& e) {
  using enum Constraint;
  return {
      {.key = "name", .value = &e.name, .choices = Choices(StrategyNames()), .required = true},
      {.key = "label", .value = &e.spec.label},
      {.key = "capacity_tokens", .value = &e.spec.capacity_tokens, .constraint = kNonNegative},
      {.key = "cp_size", .value = &e.spec.cp_size, .constraint = kNonNegative},
      {.key = "chunk_size", .value = &e.spec.chunk_size, .constraint = kNonNegative},
      {.key = "chunk_keep", .value = &e.spec.chunk_keep, .constraint = kNonNegative},
      {.key = "tensor_parallel", .value = &e.spec.tensor_parallel, .constraint = kNonNegative},
      {.key = "recompute", .value = &e.recompute},
      {.key = "offload", .value = &e.spec.offload},
      {.key = "pipeline_size", .value = &e.spec.pipeline_size, .constraint = Constraint::kPositive},
  };
}

template <typename Named>
std::vector<absl::string_view> Names(const std::vector<Named>& items) {
  std::vector<absl::string_view> names;
  for (const Named& item : items) {
    if constexpr (std::is_same_v<Named, Section>) {
      names.push_back(item.name);
    } else {
      names.push_back(item.key);
    }
  }
  return names;
}

std::string UnknownName(absl::string_view what, absl::string_view name,
                        const std::vector<absl::string_view>& known) {
  const absl::string_view closest = ClosestKey(name, known);
  if (!closest.empty()) return absl::StrFormat("unknown %s; did you mean '%s'?", what, closest);
  return absl::StrFormat("unknown %s; known: %s", what, absl::StrJoin(known, ", "));
}

std::string Where(const std::string& source, const YAML::Mark& mark) {
  if (mark.is_null() || mark.line < 0) return source;
  return absl::StrFormat("%s:%d", source, mark.line + 1);
}

absl::Status Error(absl::string_view where, absl::string_view path, absl::string_view message) {
  return absl::InvalidArgumentError(absl::StrFormat("%s: %s: %s", where, path, message));
}

const YamlField* FindField(const std::vector<YamlField>& fields, absl::string_view key) {
  for (const YamlField& f : fields) {
    if (f.key == key) return &f;
  }
  return nullptr;
}

class SimConfigReader {
 public:
  SimConfigReader(SimConfig& config, const std::string& source)
      : schema_(Schema(config)), config_(config), source_(source) {}

  absl::Status ReadDocument(const std::string& text) {
    std::vector<YAML::Node> documents;
    try {
      documents = YAML::LoadAll(text);
    } catch (const YAML::Exception& e) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "%s: invalid YAML: %s (column %d)", Where(source_, e.mark), e.msg, e.mark.column + 1));
    }
    if (documents.size() > 1) {
      return absl::InvalidArgumentError(
          absl::StrFormat("%s: a second YAML document; a study is one document",
                          Where(source_, documents[1].Mark())));
    }
    if (documents.empty() || documents[0].IsNull()) return absl::OkStatus();
    const YAML::Node& root = documents[0];
    std::vector<absl::string_view> sections = Names(schema_);
    sections.push_back(kStrategies);
    if (!root.IsMap()) {
      return absl::InvalidArgumentError(
          absl::StrFormat("%s: expected a map of sections (%s), got %s", Where(source_, root.Mark()),
                          absl::StrJoin(sections, ", "), DescribeYamlNode(root)));
    }
    std::set<std::string> seen;
    for (auto it = root.begin(); it != root.end(); ++it) {
      const std::string where = Where(source_, it->first.Mark());
      if (!it->first.IsScalar()) {
        return absl::InvalidArgumentError(
            absl::StrFormat("%s: %s is not a section name", where, DescribeYamlNode(it->first)));
      }
      const std::string& name = it->first.Scalar();
      if (!seen.insert(name).second) return Error(where, name, "duplicate section");
      where_[name] = where;
      if (name == kStrategies) {
        if (absl::Status s = ReadStrategies(it->second, where); !s.ok()) return s;
        continue;
      }
      const Section* section = FindSection(name);
      if (section == nullptr) return Error(where, name, UnknownName("section", name, sections));
      if (absl::Status s = ReadMap(section->name, section->fields, it->second, where); !s.ok()) {
        return s;
      }
    }
    return absl::OkStatus();
  }

  absl::Status ApplyOverride(const std::string& text) {
    const std::string where = absl::StrFormat("override '%s'", text);
    const size_t equals = text.find('=');
    if (equals == std::string::npos) {
      return absl::InvalidArgumentError(
          absl::StrFormat("%s: expected section.key=value (e.g. train.steps=20)", where));
    }
    const std::string path(absl::StripAsciiWhitespace(absl::string_view(text).substr(0, equals)));
    const std::vector<std::string> parts = absl::StrSplit(path, '.');
    if (parts[0] == kStrategies) {
      return Error(where, kStrategies, "a list; set it in the file");
    }
    const Section* section = FindSection(parts[0]);
    if (section == nullptr) {
      std::vector<absl::string_view> sections = Names(schema_);
      return Error(where, parts[0], UnknownName("section", parts[0], sections));
    }
    if (parts.size() != 2) {
      return Error(where, path, absl::StrFormat("expected %s.KEY=value", section->name));
    }
    const YamlField* field = FindField(section->fields, parts[1]);
    if (field == nullptr) {
      return Error(where, path, UnknownName("key", parts[1], Names(section->fields)));
    }
    std::vector<YAML::Node> documents;
    try {
      documents = YAML::LoadAll(text.substr(equals + 1));
    } catch (const YAML::Exception& e) {
      return Error(where, path, absl::StrCat("invalid YAML value: ", e.msg));
    }
    if (documents.size() > 1) return Error(where, path, "more than one YAML document");
    const YAML::Node value = documents.empty() ? YAML::Node() : documents[0];
    if (absl::Status s = ReadYamlField(value, *field); !s.ok()) return Error(where, path, s.message());
    where_[path] = where;
    return absl::OkStatus();
  }

  absl::Status Check(std::vector<StrategySpec> strategies) {
    for (const Section& section : schema_) {
      for (const YamlField& field : section.fields) {
        const std::string path = absl::StrCat(section.name, ".", field.key);
        if (field.required && !where_.contains(path)) {
          return Error(WhereSet({section.name}), path, "required but not given");
        }
      }
    }
    const SimDataConfig& d = config_.data;
    const int sources = !d.lengths.empty() + !d.shards.empty() + !d.lengths_file.empty();
    if (sources != 1) {
      return Error(WhereSet({"data.lengths", "data.shards", "data.lengths_file", "data"}), "data",
                   absl::StrFormat("give exactly one of lengths (a preset: %s), shards or "
                                   "lengths_file; got %d",
                                   absl::StrJoin(LengthDistribution::PresetNames(), ", "),
                                   sources));
    }
    if (!d.lengths.empty()) {
      if (absl::StatusOr<LengthDistribution> p = LengthDistribution::Preset(d.lengths); !p.ok()) {
        return Error(WhereSet({"data.lengths"}), "data.lengths", p.status().message());
      }
    }
    if (absl::StatusOr<ClusterSpec> c = ResolveCluster(config_.cluster); !c.ok()) {
      return Located(c.status(), "cluster");
    }
    if (absl::StatusOr<ModelConfig> m = ResolveModel(config_.model); !m.ok()) {
      return Located(m.status(), "model");
    }
    if (strategies.empty()) {
      for (const std::string& name : StrategyKindNames()) {
        StrategySpec spec;
        spec.kind = *ParseStrategyKind(name);
        strategies.push_back(spec);
      }
    }
    std::set<std::string> labels;
    for (const StrategySpec& s : strategies) {
      if (!labels.insert(s.Label()).second) {
        return Error(WhereSet({kStrategies}), kStrategies,
                     absl::StrFormat("two strategies are labelled '%s'; give one a label",
                                     s.Label()));
      }
    }
    const bool has_reference =
        config_.reference.paper_ratio > 0 || !config_.reference.setting.empty();
    if (has_reference && !labels.contains(config_.reference.strategy)) {
      return Error(WhereSet({"reference.strategy", "reference"}), "reference.strategy",
                   absl::StrFormat("names no strategy of the study ('%s'); strategies: %s",
                                   config_.reference.strategy, absl::StrJoin(labels, ", ")));
    }
    config_.strategies = std::move(strategies);
    return absl::OkStatus();
  }

  std::vector<StrategySpec> strategies() const { return strategies_; }

 private:
  const Section* FindSection(absl::string_view name) const {
    for (const Section& s : schema_) {
      if (s.name == name) return &s;
    }
    return nullptr;
  }

  absl::Status ReadMap(absl::string_view prefix, const std::vector<YamlField>& fields,
                       const YAML::Node& node, const std::string& node_where) {
    if (node.IsNull()) return absl::OkStatus();
    if (!node.IsMap()) {
      return Error(node_where, prefix,
                   absl::StrFormat("expected a map of keys, got %s", DescribeYamlNode(node)));
    }
    std::set<std::string> seen;
    for (auto it = node.begin(); it != node.end(); ++it) {
      const std::string where = Where(source_, it->first.Mark());
      if (!it->first.IsScalar()) {
        return Error(where, prefix,
                     absl::StrFormat("%s is not a key name", DescribeYamlNode(it->first)));
      }
      const std::string& key = it->first.Scalar();
      const std::string path = absl::StrCat(prefix, ".", key);
      if (!seen.insert(key).second) return Error(where, path, "duplicate key");
      const YamlField* field = FindField(fields, key);
      if (field == nullptr) return Error(where, path, UnknownName("key", key, Names(fields)));
      if (absl::Status s = ReadYamlField(it->second, *field); !s.ok()) {
        return Error(where, path, s.message());
      }
      where_[path] = where;
    }
    return absl::OkStatus();
  }

  // A list whose entries are a strategy's name, or a map with `name` and its options.
  absl::Status ReadStrategies(const YAML::Node& node, const std::string& where) {
    if (!node.IsSequence() || node.size() == 0) {
      return Error(where, kStrategies,
                   absl::StrFormat("expected a list of strategies (%s), got %s",
                                   absl::StrJoin(StrategyNames(), ", "), DescribeYamlNode(node)));
    }
    for (size_t i = 0; i < node.size(); ++i) {
      const YAML::Node item = node[i];
      const std::string item_where = Where(source_, item.Mark());
      const std::string path = absl::StrFormat("%s[%d]", kStrategies, i);
      StrategyEntry entry;
      std::vector<YamlField> fields = StrategyFields(entry);
      if (item.IsScalar()) {
        if (absl::Status s = ReadYamlField(item, fields[0]); !s.ok()) {
          return Error(item_where, path, s.message());
        }
      } else {
        if (absl::Status s = ReadMap(path, fields, item, item_where); !s.ok()) return s;
        if (!where_.contains(absl::StrCat(path, ".name"))) {
          return Error(item_where, absl::StrCat(path, ".name"), "required but not given");
        }
      }
      entry.spec.kind = *ParseStrategyKind(entry.name);
      if (where_.contains(absl::StrCat(path, ".recompute"))) {
        entry.spec.layer_recompute = entry.recompute ? 1 : 0;
      }
      strategies_.push_back(entry.spec);
    }
    return absl::OkStatus();
  }

  std::string WhereSet(std::initializer_list<absl::string_view> paths) const {
    for (const absl::string_view path : paths) {
      if (const auto it = where_.find(path); it != where_.end()) return it->second;
    }
    return source_;
  }

  // An error of ResolveCluster / ResolveModel, which name a key as "section.key": prefixed with
  // where that key (else the section) was set.
  absl::Status Located(const absl::Status& status, absl::string_view section) const {
    const std::string message(status.message());
    const Section* s = FindSection(section);
    for (const YamlField& field : s->fields) {
      const std::string path = absl::StrCat(section, ".", field.key);
      if (message.find(path) != std::string::npos && where_.contains(path)) {
        return absl::InvalidArgumentError(absl::StrCat(where_.at(path), ": ", message));
      }
    }
    return absl::InvalidArgumentError(absl::StrCat(WhereSet({section}), ": ", message));
  }

  std::vector<Section> schema_;
  SimConfig& config_;
  const std::string& source_;
  std::vector<StrategySpec> strategies_;
  std::map<std::string, std::string, std::less<>> where_;
};

}  // namespace

absl::StatusOr<ClusterSpec> ResolveCluster(const SimClusterConfig& c) {
  absl::StatusOr<GpuSpec> gpu = GpuPreset(c.gpu);
  if (!gpu.ok()) return absl::InvalidArgumentError(absl::StrCat("cluster.gpu: ", gpu.status().message()));
  if (c.peak_bf16_tflops > 0) gpu->peak_bf16_flops = c.peak_bf16_tflops * 1e12;
  if (c.hbm_gb_per_s > 0) gpu->hbm_bytes_per_s = c.hbm_gb_per_s * 1e9;
  if (c.memory_gb > 0) gpu->memory_bytes = static_cast<int64_t>(c.memory_gb * 1e9);
  ClusterSpec spec = DefaultCluster(*gpu, c.nodes, c.gpus_per_node);
  spec.gemm_efficiency = c.gemm_efficiency;
  spec.attention_efficiency = c.attention_efficiency;
  if (c.gemm_efficiency > 1 || c.attention_efficiency > 1) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "cluster.gemm_efficiency and cluster.attention_efficiency are fractions of peak, at most "
        "1; got %g and %g",
        c.gemm_efficiency, c.attention_efficiency));
  }
  spec.layer_overhead_s = c.layer_overhead_us * 1e-6;
  if (c.intra_node_gb_per_s > 0) spec.intra_node.bytes_per_s = c.intra_node_gb_per_s * 1e9;
  if (c.inter_node_gb_per_s > 0) spec.inter_node.bytes_per_s = c.inter_node_gb_per_s * 1e9;
  spec.intra_node.latency_s = c.intra_node_latency_us * 1e-6;
  spec.inter_node.latency_s = c.inter_node_latency_us * 1e-6;
  if (c.host_gb_per_s > 0) spec.host_bytes_per_s = c.host_gb_per_s * 1e9;
  if (c.host_memory_gb > 0) spec.host_memory_bytes = static_cast<int64_t>(c.host_memory_gb * 1e9);
  spec.memory_reserve_fraction = c.memory_reserve_fraction;
  return spec;
}

absl::StatusOr<ModelConfig> ResolveModel(const SimModelConfig& c) {
  ModelConfig model;
  if (c.preset != "custom") {
    absl::StatusOr<ModelConfig> preset = ModelPreset(c.preset);
    if (!preset.ok()) {
      return absl::InvalidArgumentError(absl::StrCat("model.preset: ", preset.status().message()));
    }
    model = *preset;
  }
  const struct {
    const char* key;
    int value;
    int* out;
  } shape[] = {{"vocab_size", c.vocab_size, &model.vocab_size},
               {"d_model", c.d_model, &model.d_model},
               {"n_layers", c.n_layers, &model.n_layers},
               {"n_heads", c.n_heads, &model.n_heads},
               {"n_kv_heads", c.n_kv_heads, &model.n_kv_heads},
               {"ffn_dim", c.ffn_dim, &model.ffn_dim}};
  for (const auto& key : shape) {
    if (key.value > 0) {
      *key.out = key.value;
    } else if (c.preset == "custom") {
      return absl::InvalidArgumentError(
          absl::StrFormat("model.%s: required with model.preset custom", key.key));
    }
  }
  if (absl::Status s = model.Validate(); !s.ok()) return s;
  return model;
}

absl::StatusOr<SimConfig> ParseSimConfig(const std::string& yaml_text, const std::string& source,
                                         const std::vector<std::string>& overrides) {
  SimConfig config;
  SimConfigReader reader(config, source);
  if (absl::Status s = reader.ReadDocument(yaml_text); !s.ok()) return s;
  for (const std::string& text : overrides) {
    if (absl::Status s = reader.ApplyOverride(text); !s.ok()) return s;
  }
  if (absl::Status s = reader.Check(reader.strategies()); !s.ok()) return s;
  return config;
}

absl::StatusOr<SimConfig> LoadSimConfig(const std::string& path,
                                        const std::vector<std::string>& overrides) {
  std::FILE* file = std::fopen(path.c_str(), "rb");
  if (file == nullptr) return absl::ErrnoToStatus(errno, absl::StrCat("cannot open ", path));
  std::string text;
  char buffer[1 << 16];
  size_t n;
  while ((n = std::fread(buffer, 1, sizeof(buffer), file)) > 0) text.append(buffer, n);
  const int read_error = std::ferror(file) ? errno : 0;
  std::fclose(file);
  if (read_error != 0) return absl::ErrnoToStatus(read_error, absl::StrCat("cannot read ", path));
  return ParseSimConfig(text, path, overrides);
}

}  // namespace loom
