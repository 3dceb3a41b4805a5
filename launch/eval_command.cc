// loom eval: the mean token loss of a checkpoint on some data.
#include <cstdio>
#include <filesystem>

#include "absl/strings/str_format.h"
#include "launch/checkpoint.h"
#include "launch/command_line.h"
#include "launch/commands.h"
#include "launch/evaluate.h"
#include "launch/training_data.h"
#include "nlohmann/json.hpp"

namespace loom {
namespace {

absl::StatusOr<nlohmann::json> RunEval(const CommandLine& cl) {
  absl::StatusOr<std::string> dir = cl.Required("checkpoint");
  if (!dir.ok()) return dir.status();
  absl::StatusOr<std::string> data = cl.Required("data");
  if (!data.ok()) return data.status();
  absl::StatusOr<int64_t> tokens = cl.GetInt("tokens", 0);
  if (!tokens.ok()) return tokens.status();
  std::error_code ec;
  if (!std::filesystem::is_directory(*dir, ec)) {
    return absl::NotFoundError(absl::StrFormat(
        "--checkpoint %s: no such folder (a checkpoints/step-NNNNNNNN folder of a run)", *dir));
  }
  if (absl::Status s = VerifyCheckpoint(*dir); !s.ok()) return s;
  absl::StatusOr<ModelConfig> mc = ReadCheckpointModelConfig(*dir);
  if (!mc.ok()) return mc.status();
  // The run's data settings (end-of-text id, sequence length) when the checkpoint has them.
  absl::StatusOr<ExperimentConfig> exp = LoadExperimentConfig(*dir + "/experiment.yaml", {});
  const DataConfig dc = exp.ok() ? exp->data : DataConfig{};
  absl::StatusOr<std::unique_ptr<Model>> model = Model::Create(*mc);
  if (!model.ok()) return model.status();
  if (absl::Status s = ReadCheckpointWeights(*dir, **model); !s.ok()) {
    return absl::Status(s.code(), absl::StrFormat("%s: its weights do not fit the model its "
                                                  "config.json describes: %s",
                                                  *dir, s.message()));
  }
  absl::StatusOr<std::vector<std::string>> shards = ResolveShards(*data, "--data");
  if (!shards.ok()) return shards.status();
  DatasetOptions options;
  options.vocab_size = mc->vocab_size;
  options.eot_token = static_cast<uint32_t>(dc.eot_token);
  absl::StatusOr<TokenDataset> ds = TokenDataset::Open(*shards, options);
  if (!ds.ok()) return ds.status();
  const EvalResult r = Evaluate(
      **model, EvalBatches(*ds, EvalOptions{*tokens, dc.max_doc_tokens, dc.tokens_per_step}));
  std::printf("eval: %s on %s: %lld tokens, %lld targets, mean loss %.6f\n", dir->c_str(),
              data->c_str(), static_cast<long long>(r.tokens), static_cast<long long>(r.targets),
              r.mean_loss());
  return nlohmann::json{{"checkpoint", *dir}, {"data", *data}, {"tokens", r.tokens},
                        {"targets", r.targets}, {"loss", r.mean_loss()}};
}

}  // namespace

int EvalCommand(const std::vector<std::string>& args) {
  absl::StatusOr<CommandLine> cl =
      CommandLine::Parse("eval", args, {"checkpoint", "data", "tokens"}, {"help"});
  if (!cl.ok()) {
    std::fprintf(stderr, "%s\n", std::string(cl.status().message()).c_str());
    return 2;
  }
  if (cl->Has("help")) {
    std::puts("loom eval --checkpoint DIR --data SHARDS [--tokens N]\n"
              "  SHARDS: a shard file, a folder of shards, or a prefix DIR/NAME (DIR/NAME_*.bin)");
    return 0;
  }
  absl::StatusOr<nlohmann::json> result = RunEval(*cl);
  if (!result.ok()) {
    std::fprintf(stderr, "loom eval: %s\n", std::string(result.status().message()).c_str());
    return 1;
  }
  std::printf("%s\n", result->dump().c_str());
  return 0;
}

}  // namespace loom
