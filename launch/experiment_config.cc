#include "launch/experiment_config.h"

#include <cerrno>
#include <cstdio>
#include <map>
#include <set>

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"
#include "launch/yaml_fields.h"
#include "yaml-cpp/yaml.h"

namespace loom {
namespace {

struct Section {
  const char* name;
  std::vector<YamlField> fields;
};

// The file layout: every section and key, bound to the members of `c`. Parsing, writing and the
// error messages' key lists all come from this one table, so they cannot drift apart.
std::vector<Section> Schema(ExperimentConfig& c) {
  using enum Constraint;
  return {
      {"model",
       {
           // Shape checks that involve several fields are ModelConfig::Validate's.
           {.key = "vocab_size", .value = &c.model.vocab_size},
           {.key = "d_model", .value = &c.model.d_model},
           {.key = "n_layers", .value = &c.model.n_layers},
           {.key = "n_heads", .value = &c.model.n_heads},
           {.key = "n_kv_heads", .value = &c.model.n_kv_heads},
           {.key = "ffn_dim", .value = &c.model.ffn_dim},
           {.key = "rope_theta", .value = &c.model.rope_theta},
           {.key = "norm_eps", .value = &c.model.norm_eps},
           {.key = "tied_embeddings", .value = &c.model.tied_embeddings},
       }},
      {"data",
       {
           {.key = "train", .value = &c.data.train, .constraint = kNonEmpty, .required = true},
           {.key = "val", .value = &c.data.val},
           {.key = "eot_token", .value = &c.data.eot_token, .constraint = kNonNegative},
           {.key = "tokens_per_step", .value = &c.data.tokens_per_step, .constraint = kPositive},
           {.key = "max_doc_tokens", .value = &c.data.max_doc_tokens, .constraint = kPositive},
           {.key = "long_docs", .value = &c.data.long_docs, .choices = {"split", "reject"}},
           {.key = "seed", .value = &c.data.seed},
       }},
      {"optimizer",
       {
           {.key = "beta1", .value = &c.optimizer.adamw.beta1, .constraint = kFraction},
           {.key = "beta2", .value = &c.optimizer.adamw.beta2, .constraint = kFraction},
           {.key = "eps", .value = &c.optimizer.adamw.eps, .constraint = kPositive},
           {.key = "weight_decay",
            .value = &c.optimizer.adamw.weight_decay,
            .constraint = kNonNegative},
           {.key = "grad_clip", .value = &c.optimizer.grad_clip},
           {.key = "on_nonfinite",
            .value = &c.optimizer.on_nonfinite,
            .choices = {"skip", "stop"}},
       }},
      {"schedule",
       {
           // Ranges relate the fields to each other, so LrSchedule::Validate checks them.
           {.key = "max_lr", .value = &c.schedule.max_lr},
           {.key = "min_lr", .value = &c.schedule.min_lr},
           {.key = "warmup_steps", .value = &c.schedule.warmup_steps},
           {.key = "total_steps", .value = &c.schedule.total_steps},
       }},
      {"parallel",
       {
           {.key = "world_size", .value = &c.parallel.world_size, .constraint = kPositive},
           {.key = "planner",
            .value = &c.parallel.planner,
            .choices = {"hdp", "naive_hdp", "static", "chunkflow"}},
           {.key = "capacity_tokens",
            .value = &c.parallel.capacity_tokens,
            .constraint = kNonNegative},
           {.key = "cp_size", .value = &c.parallel.cp_size, .constraint = kNonNegative},
           {.key = "chunk_keep", .value = &c.parallel.chunk_keep, .constraint = kNonNegative},
           {.key = "chunk_size", .value = &c.parallel.chunk_size, .constraint = kNonNegative},
           {.key = "zero", .value = &c.parallel.zero, .constraint = kNonNegative},
           {.key = "pp", .value = &c.parallel.pp, .constraint = kPositive},
           {.key = "vpp", .value = &c.parallel.vpp, .constraint = kPositive},
           {.key = "pipeline_schedule",
            .value = &c.parallel.pipeline_schedule,
            .choices = {"auto", "gpipe", "1f1b", "interleaved", "zb-h1"}},
           {.key = "cost_attention_s",
            .value = &c.parallel.cost_attention_s,
            .constraint = kNonNegative},
           {.key = "cost_linear_s", .value = &c.parallel.cost_linear_s, .constraint = kNonNegative},
           {.key = "cost_overhead_s",
            .value = &c.parallel.cost_overhead_s,
            .constraint = kNonNegative},
       }},
      {"runtime",
       {
           {.key = "threads", .value = &c.runtime.threads, .constraint = kNonNegative},
           {.key = "seed", .value = &c.runtime.seed},
           {.key = "backend", .value = &c.runtime.backend, .choices = {"local", "mpi", "nccl"}},
           {.key = "timeout_s", .value = &c.runtime.timeout_s, .constraint = kPositive},
       }},
      {"logging",
       {
           {.key = "run_dir", .value = &c.logging.run_dir, .constraint = kNonEmpty},
           {.key = "log_every", .value = &c.logging.log_every, .constraint = kPositive},
           {.key = "val_every", .value = &c.logging.val_every, .constraint = kNonNegative},
           {.key = "val_tokens", .value = &c.logging.val_tokens, .constraint = kPositive},
       }},
      {"checkpoint",
       {
           {.key = "every", .value = &c.checkpoint.every, .constraint = kNonNegative},
           {.key = "keep_last", .value = &c.checkpoint.keep_last, .constraint = kPositive},
       }},
  };
}

std::vector<absl::string_view> SectionNames(const std::vector<Section>& schema) {
  std::vector<absl::string_view> names;
  for (const Section& section : schema) names.push_back(section.name);
  return names;
}

std::vector<absl::string_view> KeyNames(const Section& section) {
  std::vector<absl::string_view> names;
  for (const YamlField& field : section.fields) names.push_back(field.key);
  return names;
}

// "did you mean 'x'?" when a known name is a likely typo of `name`, else the full list, which is
// short enough to read.
std::string UnknownName(absl::string_view what, absl::string_view name,
                        const std::vector<absl::string_view>& known) {
  const absl::string_view closest = ClosestKey(name, known);
  if (!closest.empty()) return absl::StrFormat("unknown %s; did you mean '%s'?", what, closest);
  return absl::StrFormat("unknown %s; known: %s", what, absl::StrJoin(known, ", "));
}

// yaml-cpp counts lines from 0.
std::string Where(const std::string& source, const YAML::Mark& mark) {
  if (mark.is_null() || mark.line < 0) return source;
  return absl::StrFormat("%s:%d", source, mark.line + 1);
}

absl::Status Error(absl::string_view where, absl::string_view path, absl::string_view message) {
  return absl::InvalidArgumentError(absl::StrFormat("%s: %s: %s", where, path, message));
}

// Fills an ExperimentConfig from a document and then overrides, remembering where each section
// and key was last set so that checks spanning several fields can point at the right line.
class ConfigReader {
 public:
  ConfigReader(ExperimentConfig& config, const std::string& source)
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
          absl::StrFormat("%s: a second YAML document; an experiment is one document",
                          Where(source_, documents[1].Mark())));
    }
    // An empty file, or one of comments only, leaves every default in place.
    if (documents.empty() || documents[0].IsNull()) return absl::OkStatus();
    const YAML::Node& root = documents[0];
    if (!root.IsMap()) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "%s: expected a map of sections (%s), got %s", Where(source_, root.Mark()),
          absl::StrJoin(SectionNames(schema_), ", "), DescribeYamlNode(root)));
    }
    std::set<std::string> seen_sections;
    for (auto it = root.begin(); it != root.end(); ++it) {
      const std::string where = Where(source_, it->first.Mark());
      if (!it->first.IsScalar()) {
        return absl::InvalidArgumentError(
            absl::StrFormat("%s: %s is not a section name", where, DescribeYamlNode(it->first)));
      }
      const std::string& name = it->first.Scalar();
      if (!seen_sections.insert(name).second) return Error(where, name, "duplicate section");
      const Section* section = FindSection(name);
      if (section == nullptr) {
        return Error(where, name, UnknownName("section", name, SectionNames(schema_)));
      }
      where_[name] = where;
      if (absl::Status s = ReadSection(*section, it->second, where); !s.ok()) return s;
    }
    return absl::OkStatus();
  }

  // `text` is "section.key=value"; the value is read as YAML, exactly like the file's.
  absl::Status ApplyOverride(const std::string& text) {
    const std::string where = absl::StrFormat("override '%s'", text);
    const size_t equals = text.find('=');
    if (equals == std::string::npos) {
      return absl::InvalidArgumentError(
          absl::StrFormat("%s: expected section.key=value (e.g. model.n_heads=8)", where));
    }
    const std::string path(absl::StripAsciiWhitespace(absl::string_view(text).substr(0, equals)));
    const std::vector<std::string> parts = absl::StrSplit(path, '.');
    const Section* section = FindSection(parts[0]);
    if (section == nullptr) {
      return Error(where, parts[0], UnknownName("section", parts[0], SectionNames(schema_)));
    }
    if (parts.size() == 1) {
      return Error(where, path,
                   absl::StrFormat("a section; override one of its keys, e.g. %s.%s", section->name,
                                   section->fields[0].key));
    }
    const std::string key_path = absl::StrCat(parts[0], ".", parts[1]);
    const YamlField* field = FindField(*section, parts[1]);
    if (field == nullptr) {
      return Error(where, key_path, UnknownName("key", parts[1], KeyNames(*section)));
    }
    if (parts.size() > 2) {
      return Error(where, path, absl::StrCat(key_path, " has no keys below it"));
    }

    std::vector<YAML::Node> documents;
    try {
      documents = YAML::LoadAll(text.substr(equals + 1));
    } catch (const YAML::Exception& e) {
      return Error(where, key_path, absl::StrCat("invalid YAML value: ", e.msg));
    }
    if (documents.size() > 1) return Error(where, key_path, "more than one YAML document");
    // An empty value loads as no document at all; read it as the null it would be in a file.
    const YAML::Node value = documents.empty() ? YAML::Node() : documents[0];
    if (absl::Status s = ReadYamlField(value, *field); !s.ok()) {
      return Error(where, key_path, s.message());
    }
    where_[key_path] = where;
    return absl::OkStatus();
  }

  // Required keys and the checks that span fields, once the file and all overrides are in.
  absl::Status Check() const {
    for (const Section& section : schema_) {
      for (const YamlField& field : section.fields) {
        const std::string path = absl::StrCat(section.name, ".", field.key);
        if (field.required && !where_.contains(path)) {
          return Error(WhereSet({section.name}), path, "required but not given");
        }
      }
    }
    if (absl::Status s = config_.model.Validate(); !s.ok()) return Located("model", s);
    if (absl::Status s = config_.schedule.Validate(); !s.ok()) return Located("schedule", s);
    if (config_.data.eot_token >= config_.model.vocab_size) {
      return absl::InvalidArgumentError(
          absl::StrFormat("%s: data.eot_token (%d) must be below model.vocab_size (%d)",
                          WhereSet({"data.eot_token", "model.vocab_size", "data", "model"}),
                          config_.data.eot_token, config_.model.vocab_size));
    }
    const ParallelConfig& p = config_.parallel;
    if (p.zero > 1) {
      return Error(WhereSet({"parallel.zero", "parallel"}), "parallel.zero",
                   absl::StrFormat("must be 0 or 1 (ZeRO stage 1), got %d", p.zero));
    }
    if (p.world_size % p.pp != 0) {
      return Error(WhereSet({"parallel.pp", "parallel.world_size", "parallel"}), "parallel.pp",
                   absl::StrFormat("%d does not divide parallel.world_size (%d): the world is "
                                   "pp x replicas",
                                   p.pp, p.world_size));
    }
    const int replicas = p.world_size / p.pp;
    if (p.cp_size > 0 && replicas % p.cp_size != 0) {
      return Error(WhereSet({"parallel.cp_size", "parallel.world_size", "parallel"}),
                   "parallel.cp_size",
                   p.pp == 1 ? absl::StrFormat("%d does not divide parallel.world_size (%d)",
                                               p.cp_size, p.world_size)
                             : absl::StrFormat("%d does not divide the %d pipeline replicas "
                                               "(parallel.world_size %d / parallel.pp %d)",
                                               p.cp_size, replicas, p.world_size, p.pp));
    }
    if (p.pp * p.vpp > config_.model.n_layers) {
      return Error(WhereSet({"parallel.pp", "parallel.vpp", "parallel"}), "parallel.pp",
                   absl::StrFormat("pp x vpp = %d stages but model.n_layers is %d: every stage "
                                   "needs a layer",
                                   p.pp * p.vpp, config_.model.n_layers));
    }
    if (p.vpp > 1 && p.pp == 1) {
      return Error(WhereSet({"parallel.vpp", "parallel"}), "parallel.vpp",
                   absl::StrFormat("%d model chunks per rank need a pipeline (parallel.pp >= 2)",
                                   p.vpp));
    }
    const bool interleaved = p.pipeline_schedule == "interleaved";
    if ((interleaved && p.vpp < 2) ||
        (p.vpp > 1 && p.pipeline_schedule != "auto" && !interleaved)) {
      return Error(WhereSet({"parallel.pipeline_schedule", "parallel.vpp", "parallel"}),
                   "parallel.pipeline_schedule",
                   interleaved ? std::string("interleaved needs parallel.vpp >= 2 (with one model "
                                             "chunk per rank it is 1f1b)")
                               : absl::StrFormat("%s runs one model chunk per rank; with "
                                                 "parallel.vpp %d use interleaved or auto",
                                                 p.pipeline_schedule, p.vpp));
    }
    return absl::OkStatus();
  }

 private:
  const Section* FindSection(absl::string_view name) const {
    for (const Section& section : schema_) {
      if (section.name == name) return &section;
    }
    return nullptr;
  }

  static const YamlField* FindField(const Section& section, absl::string_view key) {
    for (const YamlField& field : section.fields) {
      if (field.key == key) return &field;
    }
    return nullptr;
  }

  absl::Status ReadSection(const Section& section, const YAML::Node& node,
                           const std::string& section_where) {
    // An empty section (say, every key commented out) is a section with all defaults.
    if (node.IsNull()) return absl::OkStatus();
    if (!node.IsMap()) {
      return Error(section_where, section.name,
                   absl::StrFormat("expected a map of keys, got %s", DescribeYamlNode(node)));
    }
    std::set<std::string> seen;
    for (auto it = node.begin(); it != node.end(); ++it) {
      const std::string where = Where(source_, it->first.Mark());
      if (!it->first.IsScalar()) {
        return Error(where, section.name,
                     absl::StrFormat("%s is not a key name", DescribeYamlNode(it->first)));
      }
      const std::string& key = it->first.Scalar();
      const std::string path = absl::StrCat(section.name, ".", key);
      if (!seen.insert(key).second) return Error(where, path, "duplicate key");
      const YamlField* field = FindField(section, key);
      if (field == nullptr) return Error(where, path, UnknownName("key", key, KeyNames(section)));
      if (absl::Status s = ReadYamlField(it->second, *field); !s.ok()) {
        return Error(where, path, s.message());
      }
      where_[path] = where;
    }
    return absl::OkStatus();
  }

  // Where the first of `paths` (keys or sections) that was set came from; the source alone when
  // none was, the value then being a default.
  std::string WhereSet(std::initializer_list<absl::string_view> paths) const {
    for (const absl::string_view path : paths) {
      if (const auto it = where_.find(path); it != where_.end()) return it->second;
    }
    return source_;
  }

  // A Validate() error of `section`, prefixed with where the first field its message names was
  // set (the messages name fields as "section.key"), else where the section was.
  absl::Status Located(absl::string_view section_name, const absl::Status& status) const {
    const absl::string_view message = status.message();
    std::string where;
    size_t first = absl::string_view::npos;
    for (const YamlField& field : FindSection(section_name)->fields) {
      const std::string path = absl::StrCat(section_name, ".", field.key);
      const auto set = where_.find(path);
      // Some Validate() messages name a field by its key alone ("min_lr").
      size_t at = FindWord(message, path);
      if (at == absl::string_view::npos) at = FindWord(message, field.key);
      if (set != where_.end() && at < first) {
        first = at;
        where = set->second;
      }
    }
    if (where.empty()) where = WhereSet({section_name});
    return absl::Status(status.code(), absl::StrFormat("%s: %s", where, message));
  }

  // Position of `word` in `text` neither preceded nor followed by more of an identifier or key
  // path ("model.n_heads" must not match inside a longer key, nor "n_heads" inside a path), or
  // npos.
  static size_t FindWord(absl::string_view text, absl::string_view word) {
    auto part_of_name = [](char c) { return absl::ascii_isalnum(c) || c == '_' || c == '.'; };
    for (size_t at = text.find(word); at != absl::string_view::npos; at = text.find(word, at + 1)) {
      const size_t end = at + word.size();
      const bool starts = at == 0 || !part_of_name(text[at - 1]);
      // A key path may end a sentence ("... model.n_heads."), so a dot after it still ends it.
      const bool ends = end == text.size() || !(absl::ascii_isalnum(text[end]) || text[end] == '_');
      if (starts && ends) return at;
    }
    return absl::string_view::npos;
  }

  std::vector<Section> schema_;
  const ExperimentConfig& config_;
  const std::string& source_;
  std::map<std::string, std::string, std::less<>> where_;  // path -> "source:line" or override
};

}  // namespace

absl::StatusOr<ExperimentConfig> ParseExperimentConfig(const std::string& yaml_text,
                                                       const std::string& source,
                                                       const std::vector<std::string>& overrides) {
  ExperimentConfig config;
  ConfigReader reader(config, source);
  if (absl::Status s = reader.ReadDocument(yaml_text); !s.ok()) return s;
  for (const std::string& override_text : overrides) {
    if (absl::Status s = reader.ApplyOverride(override_text); !s.ok()) return s;
  }
  if (absl::Status s = reader.Check(); !s.ok()) return s;
  return config;
}

absl::StatusOr<ExperimentConfig> LoadExperimentConfig(const std::string& path,
                                                      const std::vector<std::string>& overrides) {
  std::FILE* file = std::fopen(path.c_str(), "rb");
  if (file == nullptr) return absl::ErrnoToStatus(errno, absl::StrCat("cannot open ", path));
  std::string text;
  char buffer[1 << 16];
  size_t n;
  while ((n = std::fread(buffer, 1, sizeof(buffer), file)) > 0) text.append(buffer, n);
  // fopen succeeds on a directory; the read is what fails, with EISDIR.
  const int read_error = std::ferror(file) ? errno : 0;
  std::fclose(file);
  if (read_error != 0) return absl::ErrnoToStatus(read_error, absl::StrCat("cannot read ", path));
  return ParseExperimentConfig(text, path, overrides);
}

std::string ExperimentConfigToYaml(const ExperimentConfig& config) {
  // Schema binds mutable members because parsing writes through it; writing only reads the copy.
  ExperimentConfig copy = config;
  std::string yaml = "# loom experiment, resolved: every key, defaults included.\n";
  for (const Section& section : Schema(copy)) {
    absl::StrAppend(&yaml, section.name, ":\n");
    for (const YamlField& field : section.fields) {
      absl::StrAppend(&yaml, "  ", field.key, ": ", WriteYamlField(field), "\n");
    }
  }
  return yaml;
}

}  // namespace loom
