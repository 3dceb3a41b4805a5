#include "launch/experiment_config.h"

#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <sstream>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace loom {
namespace {

using ::testing::HasSubstr;
using ::testing::StartsWith;

// The smallest valid experiment: data.train is the one required key.
constexpr char kMinimal[] = "data:\n  train: shards/train\n";

absl::StatusOr<ExperimentConfig> Parse(const std::string& yaml,
                                       const std::vector<std::string>& overrides = {}) {
  return ParseExperimentConfig(yaml, "exp.yaml", overrides);
}

// The error message of parsing `yaml`, which must fail with InvalidArgument.
std::string ErrorOf(const std::string& yaml, const std::vector<std::string>& overrides = {}) {
  absl::StatusOr<ExperimentConfig> config = Parse(yaml, overrides);
  if (config.ok()) {
    ADD_FAILURE() << "parsed without error:\n" << yaml;
    return "";
  }
  EXPECT_EQ(config.status().code(), absl::StatusCode::kInvalidArgument) << config.status();
  return std::string(config.status().message());
}

void ExpectSameConfig(const ExperimentConfig& a, const ExperimentConfig& b) {
  EXPECT_EQ(a.model.vocab_size, b.model.vocab_size);
  EXPECT_EQ(a.model.d_model, b.model.d_model);
  EXPECT_EQ(a.model.n_layers, b.model.n_layers);
  EXPECT_EQ(a.model.n_heads, b.model.n_heads);
  EXPECT_EQ(a.model.n_kv_heads, b.model.n_kv_heads);
  EXPECT_EQ(a.model.ffn_dim, b.model.ffn_dim);
  EXPECT_EQ(a.model.rope_theta, b.model.rope_theta);
  EXPECT_EQ(a.model.norm_eps, b.model.norm_eps);
  EXPECT_EQ(a.model.tied_embeddings, b.model.tied_embeddings);
  EXPECT_EQ(a.data.train, b.data.train);
  EXPECT_EQ(a.data.val, b.data.val);
  EXPECT_EQ(a.data.eot_token, b.data.eot_token);
  EXPECT_EQ(a.data.tokens_per_step, b.data.tokens_per_step);
  EXPECT_EQ(a.data.max_doc_tokens, b.data.max_doc_tokens);
  EXPECT_EQ(a.data.long_docs, b.data.long_docs);
  EXPECT_EQ(a.data.seed, b.data.seed);
  EXPECT_EQ(a.optimizer.adamw.beta1, b.optimizer.adamw.beta1);
  EXPECT_EQ(a.optimizer.adamw.beta2, b.optimizer.adamw.beta2);
  EXPECT_EQ(a.optimizer.adamw.eps, b.optimizer.adamw.eps);
  EXPECT_EQ(a.optimizer.adamw.weight_decay, b.optimizer.adamw.weight_decay);
  EXPECT_EQ(a.optimizer.grad_clip, b.optimizer.grad_clip);
  EXPECT_EQ(a.optimizer.on_nonfinite, b.optimizer.on_nonfinite);
  EXPECT_EQ(a.schedule.max_lr, b.schedule.max_lr);
  EXPECT_EQ(a.schedule.min_lr, b.schedule.min_lr);
  EXPECT_EQ(a.schedule.warmup_steps, b.schedule.warmup_steps);
  EXPECT_EQ(a.schedule.total_steps, b.schedule.total_steps);
  EXPECT_EQ(a.parallel.world_size, b.parallel.world_size);
  EXPECT_EQ(a.parallel.planner, b.parallel.planner);
  EXPECT_EQ(a.parallel.capacity_tokens, b.parallel.capacity_tokens);
  EXPECT_EQ(a.parallel.chunk_keep, b.parallel.chunk_keep);
  EXPECT_EQ(a.parallel.chunk_size, b.parallel.chunk_size);
  EXPECT_EQ(a.parallel.cp_size, b.parallel.cp_size);
  EXPECT_EQ(a.parallel.zero, b.parallel.zero);
  EXPECT_EQ(a.parallel.cost_attention_s, b.parallel.cost_attention_s);
  EXPECT_EQ(a.parallel.cost_linear_s, b.parallel.cost_linear_s);
  EXPECT_EQ(a.parallel.cost_overhead_s, b.parallel.cost_overhead_s);
  EXPECT_EQ(a.runtime.threads, b.runtime.threads);
  EXPECT_EQ(a.runtime.seed, b.runtime.seed);
  EXPECT_EQ(a.runtime.backend, b.runtime.backend);
  EXPECT_EQ(a.runtime.timeout_s, b.runtime.timeout_s);
  EXPECT_EQ(a.logging.run_dir, b.logging.run_dir);
  EXPECT_EQ(a.logging.log_every, b.logging.log_every);
  EXPECT_EQ(a.logging.val_every, b.logging.val_every);
  EXPECT_EQ(a.logging.val_tokens, b.logging.val_tokens);
  EXPECT_EQ(a.checkpoint.every, b.checkpoint.every);
  EXPECT_EQ(a.checkpoint.keep_last, b.checkpoint.keep_last);
}

TEST(ExperimentConfigTest, KeysNotGivenKeepTheirDefaults) {
  absl::StatusOr<ExperimentConfig> config = Parse(kMinimal);
  ASSERT_TRUE(config.ok()) << config.status();
  ExperimentConfig expected;
  expected.data.train = "shards/train";
  ExpectSameConfig(*config, expected);
}

TEST(ExperimentConfigTest, EmptySectionMeansDefaults) {
  absl::StatusOr<ExperimentConfig> config =
      Parse("model:\n  # all defaults\ndata:\n  train: t\ncheckpoint:\n");
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->model.d_model, ExperimentConfig().model.d_model);
}

TEST(ExperimentConfigTest, FullFileParses) {
  const std::string yaml = R"(# every section
model:
  vocab_size: 512
  d_model: 64
  n_layers: 2
  n_heads: 4
  n_kv_heads: 1
  ffn_dim: 176
  rope_theta: 500000.0
  norm_eps: 1e-6
  tied_embeddings: true
data:
  train: "runs/x/train"
  val: runs/x/val
  eot_token: 0
  tokens_per_step: 2048
  max_doc_tokens: 512
  long_docs: reject
  seed: 18446744073709551615
optimizer:
  beta1: 0.8
  beta2: 0.99
  eps: 1.0e-10
  weight_decay: 0
  grad_clip: -1
schedule:
  max_lr: 6e-4
  min_lr: 0
  warmup_steps: 10
  total_steps: 1000
parallel:
  world_size: 4
runtime:
  threads: 2
  seed: 7
logging:
  run_dir: runs/x/run
  log_every: 5
  val_every: 0
  val_tokens: 4096
checkpoint:
  every: 0
  keep_last: 1
)";
  absl::StatusOr<ExperimentConfig> config = Parse(yaml);
  ASSERT_TRUE(config.ok()) << config.status();
  const ExperimentConfig& c = *config;
  EXPECT_EQ(c.model.vocab_size, 512);
  EXPECT_EQ(c.model.d_model, 64);
  EXPECT_EQ(c.model.n_layers, 2);
  EXPECT_EQ(c.model.n_heads, 4);
  EXPECT_EQ(c.model.n_kv_heads, 1);
  EXPECT_EQ(c.model.ffn_dim, 176);
  EXPECT_EQ(c.model.rope_theta, 500000.0f);
  EXPECT_EQ(c.model.norm_eps, 1e-6f);
  EXPECT_TRUE(c.model.tied_embeddings);
  EXPECT_EQ(c.data.train, "runs/x/train");
  EXPECT_EQ(c.data.val, "runs/x/val");
  EXPECT_EQ(c.data.eot_token, 0);
  EXPECT_EQ(c.data.tokens_per_step, 2048);
  EXPECT_EQ(c.data.max_doc_tokens, 512);
  EXPECT_EQ(c.data.long_docs, "reject");
  EXPECT_EQ(c.data.seed, 18446744073709551615u);
  EXPECT_EQ(c.optimizer.adamw.beta1, 0.8f);
  EXPECT_EQ(c.optimizer.adamw.beta2, 0.99f);
  EXPECT_EQ(c.optimizer.adamw.eps, 1e-10f);
  EXPECT_EQ(c.optimizer.adamw.weight_decay, 0.0f);
  EXPECT_EQ(c.optimizer.grad_clip, -1.0);
  EXPECT_EQ(c.schedule.max_lr, 6e-4f);
  EXPECT_EQ(c.schedule.min_lr, 0.0f);
  EXPECT_EQ(c.schedule.warmup_steps, 10);
  EXPECT_EQ(c.schedule.total_steps, 1000);
  EXPECT_EQ(c.parallel.world_size, 4);
  EXPECT_EQ(c.runtime.threads, 2);
  EXPECT_EQ(c.runtime.seed, 7u);
  EXPECT_EQ(c.logging.run_dir, "runs/x/run");
  EXPECT_EQ(c.logging.log_every, 5);
  EXPECT_EQ(c.logging.val_every, 0);
  EXPECT_EQ(c.logging.val_tokens, 4096);
  EXPECT_EQ(c.checkpoint.every, 0);
  EXPECT_EQ(c.checkpoint.keep_last, 1);
}

TEST(ExperimentConfigTest, UnknownTopLevelKeySuggestsSection) {
  EXPECT_EQ(ErrorOf("data:\n  train: t\nmodle:\n  d_model: 64\n"),
            "exp.yaml:3: modle: unknown section; did you mean 'model'?");
}

TEST(ExperimentConfigTest, UnknownNestedKeySuggestsKey) {
  EXPECT_EQ(ErrorOf("data:\n  train: t\nmodel:\n  d_model: 64\n  n_headz: 4\n"),
            "exp.yaml:5: model.n_headz: unknown key; did you mean 'n_heads'?");
}

TEST(ExperimentConfigTest, UnknownKeyFarFromAllListsTheKnownOnes) {
  EXPECT_EQ(ErrorOf("data:\n  train: t\ncheckpoint:\n  frequency: 10\n"),
            "exp.yaml:4: checkpoint.frequency: unknown key; known: every, keep_last");
}

TEST(ExperimentConfigTest, DuplicateKey) {
  EXPECT_EQ(ErrorOf("data:\n  train: t\n  train: u\n"), "exp.yaml:3: data.train: duplicate key");
}

TEST(ExperimentConfigTest, WrongTypeForInt) {
  EXPECT_EQ(ErrorOf("data:\n  train: t\nmodel:\n  n_heads: eight\n"),
            "exp.yaml:4: model.n_heads: expected an integer, got 'eight'");
  EXPECT_EQ(ErrorOf("data:\n  train: t\nmodel:\n  n_heads: 8.5\n"),
            "exp.yaml:4: model.n_heads: expected an integer, got '8.5'");
  EXPECT_EQ(ErrorOf("data:\n  train: t\nmodel:\n  n_heads: \"8\"\n"),
            "exp.yaml:4: model.n_heads: expected an integer, got the quoted string \"8\"");
  EXPECT_EQ(ErrorOf("data:\n  train: t\nmodel:\n  n_heads: 4294967296\n"),
            "exp.yaml:4: model.n_heads: expected an integer in [-2147483648, 2147483647], got "
            "'4294967296'");
  EXPECT_EQ(ErrorOf("data:\n  train: t\nmodel:\n  n_heads:\n"),
            "exp.yaml:4: model.n_heads: expected an integer, got nothing");
}

TEST(ExperimentConfigTest, NegativeForUnsigned) {
  EXPECT_EQ(ErrorOf("data:\n  train: t\n  seed: -1\n"),
            "exp.yaml:3: data.seed: expected a non-negative integer, got '-1'");
}

TEST(ExperimentConfigTest, WrongTypeForFloat) {
  EXPECT_EQ(ErrorOf("data:\n  train: t\nschedule:\n  max_lr: fast\n"),
            "exp.yaml:4: schedule.max_lr: expected a number, got 'fast'");
  EXPECT_EQ(ErrorOf("data:\n  train: t\nschedule:\n  max_lr: .inf\n"),
            "exp.yaml:4: schedule.max_lr: expected a number, got '.inf'");
  EXPECT_EQ(ErrorOf("data:\n  train: t\noptimizer:\n  grad_clip: nan\n"),
            "exp.yaml:4: optimizer.grad_clip: expected a finite number, got 'nan'");
  EXPECT_EQ(ErrorOf("data:\n  train: t\noptimizer:\n  eps: 1e60\n"),
            "exp.yaml:4: optimizer.eps: expected a number within 32-bit floating point range, "
            "got '1e60'");
}

TEST(ExperimentConfigTest, WrongTypeForBool) {
  EXPECT_EQ(ErrorOf("data:\n  train: t\nmodel:\n  tied_embeddings: yes\n"),
            "exp.yaml:4: model.tied_embeddings: expected true or false, got 'yes'");
  EXPECT_EQ(ErrorOf("data:\n  train: t\nmodel:\n  tied_embeddings: 1\n"),
            "exp.yaml:4: model.tied_embeddings: expected true or false, got '1'");
}

TEST(ExperimentConfigTest, WrongTypeForString) {
  EXPECT_EQ(ErrorOf("data:\n  train: [a, b]\n"),
            "exp.yaml:2: data.train: expected a string, got a sequence");
  EXPECT_EQ(
      ErrorOf("data:\n  train: t\n  val:\n"),
      "exp.yaml:3: data.val: expected a string, got nothing (write \"\" for an empty string)");
  EXPECT_EQ(ErrorOf("data:\n  train: \"\"\n"), "exp.yaml:2: data.train: must not be empty");
}

TEST(ExperimentConfigTest, OutOfRangeValues) {
  EXPECT_EQ(ErrorOf("data:\n  train: t\n  tokens_per_step: 0\n"),
            "exp.yaml:3: data.tokens_per_step: must be positive, got 0");
  EXPECT_EQ(ErrorOf("data:\n  train: t\noptimizer:\n  beta2: 1.0\n"),
            "exp.yaml:4: optimizer.beta2: must be in [0, 1), got 1");
  EXPECT_EQ(ErrorOf("data:\n  train: t\nlogging:\n  val_every: -5\n"),
            "exp.yaml:4: logging.val_every: must be >= 0, got -5");
  EXPECT_EQ(ErrorOf("data:\n  train: t\nparallel:\n  world_size: 0\n"),
            "exp.yaml:4: parallel.world_size: must be positive, got 0");
}

TEST(ExperimentConfigTest, MissingTrainData) {
  EXPECT_EQ(ErrorOf("model:\n  d_model: 64\ndata:\n  val: v\n"),
            "exp.yaml:3: data.train: required but not given");
  EXPECT_EQ(ErrorOf(""), "exp.yaml: data.train: required but not given");
}

TEST(ExperimentConfigTest, SectionNotAMap) {
  EXPECT_EQ(ErrorOf("data:\n  train: t\nmodel: 5\n"),
            "exp.yaml:3: model: expected a map of keys, got '5'");
  EXPECT_EQ(ErrorOf("data:\n  train: t\noptimizer:\n  - 0.9\n"),
            "exp.yaml:3: optimizer: expected a map of keys, got a sequence");
  EXPECT_THAT(ErrorOf("- model\n"), StartsWith("exp.yaml:1: expected a map of sections ("));
}

TEST(ExperimentConfigTest, YamlSyntaxErrorNamesTheLine) {
  EXPECT_THAT(ErrorOf("data:\n  train: t\nmodel:\n  d_model: 64\n    n_heads: 4\n"),
              StartsWith("exp.yaml:5: invalid YAML: "));
  EXPECT_THAT(ErrorOf("data:\n  train: t\nmodel: {d_model: 64\n"),
              StartsWith("exp.yaml:4: invalid YAML: "));
}

TEST(ExperimentConfigTest, SecondDocumentIsAnError) {
  EXPECT_THAT(ErrorOf("data:\n  train: t\n---\ndata:\n  train: u\n"),
              StartsWith("exp.yaml:4: a second YAML document"));
}

TEST(ExperimentConfigTest, BadLongDocsValue) {
  EXPECT_EQ(ErrorOf("data:\n  train: t\n  long_docs: truncate\n"),
            "exp.yaml:3: data.long_docs: must be one of split|reject, got 'truncate'");
}

TEST(ExperimentConfigTest, ModelValidationNamesTheField) {
  // The line is that of the first field the message names that the file sets.
  EXPECT_EQ(ErrorOf("data:\n  train: t\nmodel:\n  d_model: 100\n  n_heads: 8\n"),
            "exp.yaml:4: model.d_model (100) must be divisible by model.n_heads (8)");
  EXPECT_EQ(ErrorOf("data:\n  train: t\nmodel:\n  d_model: 64\n  n_kv_heads: 0\n"),
            "exp.yaml:5: model.n_kv_heads must be positive, got 0");
}

TEST(ExperimentConfigTest, ScheduleValidation) {
  // LrSchedule names its fields by key alone; the error still points at the first one named.
  EXPECT_EQ(ErrorOf("data:\n  train: t\nschedule:\n  max_lr: 1e-4\n  min_lr: 1e-3\n"),
            "exp.yaml:5: schedule: need 0 <= min_lr <= max_lr and max_lr > 0, got min_lr 0.001, "
            "max_lr 0.0001");
  EXPECT_EQ(ErrorOf("data:\n  train: t\nschedule:\n  warmup_steps: 20\n  total_steps: 10\n"),
            "exp.yaml:4: schedule: need 0 <= warmup_steps <= total_steps and total_steps > 0, "
            "got 20 and 10");
  const absl::StatusOr<ExperimentConfig> overridden = ParseExperimentConfig(
      "data:\n  train: t\nschedule:\n  max_lr: 1e-4\n", "exp.yaml", {"schedule.min_lr=1e-3"});
  ASSERT_FALSE(overridden.ok());
  EXPECT_EQ(overridden.status().message(),
            "override 'schedule.min_lr=1e-3': schedule: need 0 <= min_lr <= max_lr and max_lr > 0, "
            "got min_lr 0.001, max_lr 0.0001");
}

TEST(ExperimentConfigTest, EotTokenMustBeInTheVocabulary) {
  EXPECT_EQ(ErrorOf("data:\n  train: t\n  eot_token: 300\n"),
            "exp.yaml:3: data.eot_token (300) must be below model.vocab_size (257)");
}

TEST(ExperimentConfigTest, OverridesApplyAfterTheFile) {
  absl::StatusOr<ExperimentConfig> config = Parse(
      "data:\n  train: t\nmodel:\n  n_heads: 4\n",
      {"model.n_heads=2", "model.n_kv_heads=2", "data.train=other/train", "optimizer.beta1=0.5",
       "model.tied_embeddings=true", "logging.run_dir=\"a b: c\"", " parallel.world_size =2"});
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->model.n_heads, 2);
  EXPECT_EQ(config->data.train, "other/train");
  EXPECT_EQ(config->optimizer.adamw.beta1, 0.5f);
  EXPECT_TRUE(config->model.tied_embeddings);
  EXPECT_EQ(config->logging.run_dir, "a b: c");
  EXPECT_EQ(config->parallel.world_size, 2);
}

TEST(ExperimentConfigTest, OverrideCanSupplyTheRequiredKey) {
  absl::StatusOr<ExperimentConfig> config = Parse("", {"data.train=t"});
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->data.train, "t");
}

TEST(ExperimentConfigTest, OverrideErrors) {
  EXPECT_EQ(ErrorOf(kMinimal, {"model.n_headz=4"}),
            "override 'model.n_headz=4': model.n_headz: unknown key; did you mean 'n_heads'?");
  EXPECT_EQ(ErrorOf(kMinimal, {"modle.n_heads=4"}),
            "override 'modle.n_heads=4': modle: unknown section; did you mean 'model'?");
  EXPECT_EQ(ErrorOf(kMinimal, {"model=4"}),
            "override 'model=4': model: a section; override one of its keys, e.g. "
            "model.vocab_size");
  EXPECT_EQ(ErrorOf(kMinimal, {"model.n_heads.x=4"}),
            "override 'model.n_heads.x=4': model.n_heads.x: model.n_heads has no keys below it");
  EXPECT_EQ(ErrorOf(kMinimal, {"model.n_heads=four"}),
            "override 'model.n_heads=four': model.n_heads: expected an integer, got 'four'");
  EXPECT_EQ(ErrorOf(kMinimal, {"model.tied_embeddings=yes"}),
            "override 'model.tied_embeddings=yes': model.tied_embeddings: expected true or false, "
            "got 'yes'");
  EXPECT_EQ(ErrorOf(kMinimal, {"model.n_heads="}),
            "override 'model.n_heads=': model.n_heads: expected an integer, got nothing");
  EXPECT_EQ(ErrorOf(kMinimal, {"model.n_heads"}),
            "override 'model.n_heads': expected section.key=value (e.g. model.n_heads=8)");
  EXPECT_THAT(ErrorOf(kMinimal, {"model.n_heads=[4"}),
              StartsWith("override 'model.n_heads=[4': model.n_heads: invalid YAML value: "));
}

TEST(ExperimentConfigTest, ValidationPointsAtTheOverride) {
  EXPECT_EQ(ErrorOf(kMinimal, {"model.d_model=100"}),
            "override 'model.d_model=100': model.d_model (100) must be divisible by model.n_heads "
            "(8)");
}

TEST(ExperimentConfigTest, RoundTripKeepsEveryField) {
  ExperimentConfig c;
  c.model = {.vocab_size = 1000,
             .d_model = 96,
             .n_layers = 3,
             .n_heads = 6,
             .n_kv_heads = 3,
             .ffn_dim = 250,
             .rope_theta = 12345.678f,
             .norm_eps = 1.1e-7f,
             .tied_embeddings = true};
  c.data = {.train = "a/\"quoted\" path: #1",
            .val = "",
            .eot_token = 999,
            .tokens_per_step = 123456789012,
            .max_doc_tokens = 77,
            .long_docs = "reject",
            .seed = 18446744073709551557u};
  c.optimizer.adamw = {
      .beta1 = 0.1f + 0.2f, .beta2 = 0.999999f, .eps = 3e-38f, .weight_decay = 1.0f / 3.0f};
  c.optimizer.grad_clip = 0.1 + 0.2;
  c.schedule = {.max_lr = 1.0f / 7.0f, .min_lr = 1e-30f, .warmup_steps = 5, .total_steps = 6};
  c.parallel = {.world_size = 8,
                .planner = "static",
                .capacity_tokens = 4097,
                .chunk_keep = 3,
                .chunk_size = 1025,
                .cp_size = 4,
                .zero = 1,
                .cost_attention_s = 1.0 / 3e8,
                .cost_linear_s = 2.5e-6,
                .cost_overhead_s = 0.1 + 0.2};
  c.runtime = {.threads = 3, .seed = 9007199254740993u, .backend = "mpi", .timeout_s = 0.7};
  c.logging = {
      .run_dir = " lead\\ing\ttab\nnewline", .log_every = 2, .val_every = 0, .val_tokens = 1};
  c.checkpoint = {.every = 0, .keep_last = 1};

  const std::string yaml = ExperimentConfigToYaml(c);
  absl::StatusOr<ExperimentConfig> parsed = Parse(yaml);
  ASSERT_TRUE(parsed.ok()) << parsed.status() << "\n" << yaml;
  ExpectSameConfig(*parsed, c);
  EXPECT_EQ(ExperimentConfigToYaml(*parsed), yaml);
}

TEST(ExperimentConfigTest, YamlNamesEverySection) {
  const std::string yaml = ExperimentConfigToYaml(ExperimentConfig());
  for (const char* section : {"model:", "data:", "optimizer:", "schedule:", "parallel:", "runtime:",
                              "logging:", "checkpoint:"}) {
    EXPECT_THAT(yaml, HasSubstr(std::string("\n") + section + "\n")) << yaml;
  }
}

TEST(ExperimentConfigTest, ReadmeDocumentsEveryKey) {
  std::ifstream file(LOOM_SOURCE_DIR "/configs/README.md");
  ASSERT_TRUE(file.is_open());
  const std::string readme((std::istreambuf_iterator<char>(file)),
                           std::istreambuf_iterator<char>());
  // Every "  key: value" line of the emitted YAML is a key the README's tables must list.
  std::istringstream yaml(ExperimentConfigToYaml(ExperimentConfig()));
  for (std::string line; std::getline(yaml, line);) {
    if (line.rfind("  ", 0) != 0) continue;
    const std::string key = line.substr(2, line.find(':') - 2);
    EXPECT_THAT(readme, HasSubstr("| `" + key + "` |")) << key;
  }
}

TEST(ExperimentConfigTest, LoadReadsTheFile) {
  const std::string path = (std::filesystem::temp_directory_path() /
                            ("experiment_config_test_" + std::to_string(getpid()) + ".yaml"))
                               .string();
  std::FILE* file = std::fopen(path.c_str(), "w");
  ASSERT_NE(file, nullptr);
  std::fputs("data:\n  train: t\nmodel:\n  n_heads: 16\n  n_layers: x\n", file);
  std::fclose(file);
  absl::StatusOr<ExperimentConfig> config = LoadExperimentConfig(path, {});
  EXPECT_EQ(config.status().message(), path + ":5: model.n_layers: expected an integer, got 'x'");
  // Overrides apply after the file is read, so they cannot paper over a bad value in it.
  config = LoadExperimentConfig(path, {"model.n_layers=2"});
  EXPECT_FALSE(config.ok());

  file = std::fopen(path.c_str(), "w");
  ASSERT_NE(file, nullptr);
  std::fputs("data:\n  train: t\nmodel:\n  n_heads: 16\n", file);
  std::fclose(file);
  config = LoadExperimentConfig(path, {});
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->model.n_heads, 16);
  std::filesystem::remove(path);
}

TEST(ExperimentConfigTest, LoadNamesAMissingFile) {
  absl::StatusOr<ExperimentConfig> config = LoadExperimentConfig("/nonexistent/exp.yaml", {});
  EXPECT_EQ(config.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(config.status().message(), HasSubstr("/nonexistent/exp.yaml"));
  config = LoadExperimentConfig(std::filesystem::temp_directory_path().string(), {});
  EXPECT_FALSE(config.ok());
  EXPECT_THAT(config.status().message(),
              HasSubstr(std::filesystem::temp_directory_path().string()));
}

TEST(ExperimentConfigTest, TinyConfigParses) {
  absl::StatusOr<ExperimentConfig> config =
      LoadExperimentConfig(LOOM_SOURCE_DIR "/configs/tiny.yaml", {});
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->model.vocab_size, 257);
  EXPECT_EQ(config->model.d_model, 128);
  EXPECT_EQ(config->model.n_layers, 4);
  EXPECT_EQ(config->model.n_heads, 4);
  EXPECT_EQ(config->model.n_kv_heads, 2);
  EXPECT_EQ(config->model.ffn_dim, 352);
  EXPECT_EQ(config->data.train, "runs/quickstart/data/train");
  EXPECT_EQ(config->data.val, "runs/quickstart/data/val");
  EXPECT_EQ(config->data.tokens_per_step, 4096);
  EXPECT_EQ(config->data.max_doc_tokens, 1024);
  EXPECT_EQ(config->schedule.max_lr, 3e-3f);
  EXPECT_EQ(config->schedule.min_lr, 3e-4f);
  EXPECT_EQ(config->schedule.warmup_steps, 20);
  EXPECT_EQ(config->schedule.total_steps, 300);
  EXPECT_EQ(config->logging.run_dir, "runs/quickstart/run");
  EXPECT_EQ(config->logging.val_every, 50);
  EXPECT_EQ(config->checkpoint.every, 100);
  EXPECT_EQ(config->checkpoint.keep_last, 2);
}

}  // namespace
}  // namespace loom
