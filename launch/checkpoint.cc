#include "launch/checkpoint.h"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "absl/strings/str_format.h"
#include "nlohmann/json.hpp"
#include "src/atomic_file.h"
#include "src/safetensors.h"
#include "src/status_macros.h"

namespace loom {
namespace fs = std::filesystem;
namespace {

constexpr char kCheckpointsDir[] = "checkpoints";
constexpr char kPrefix[] = "step-";

absl::StatusOr<std::string> ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrFormat("cannot open %s", path));
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// FNV-1a, 64 bit: enough to tell a damaged or truncated file from the one that was written.
uint64_t Checksum(const std::string& bytes) {
  uint64_t h = 1469598103934665603ull;
  for (unsigned char c : bytes) h = (h ^ c) * 1099511628211ull;
  return h;
}

absl::Status WriteText(const std::string& path, const std::string& text) {
  return WriteFileAtomically(path, {text});
}

// step-00000120 -> 120, or -1 for anything else.
int64_t StepOfFolder(const std::string& name) {
  if (name.rfind(kPrefix, 0) != 0) return -1;
  const std::string digits = name.substr(sizeof(kPrefix) - 1);
  if (digits.empty() || !std::all_of(digits.begin(), digits.end(), ::isdigit)) return -1;
  return std::stoll(digits);
}

std::vector<std::pair<int64_t, fs::path>> CheckpointFolders(const std::string& run_dir) {
  std::vector<std::pair<int64_t, fs::path>> out;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(fs::path(run_dir) / kCheckpointsDir, ec)) {
    const int64_t step = StepOfFolder(entry.path().filename().string());
    if (step >= 0 && entry.is_directory()) out.emplace_back(step, entry.path());
  }
  std::sort(out.begin(), out.end());
  return out;
}

}  // namespace

std::string HuggingFaceConfigJson(const ModelConfig& c) {
  nlohmann::ordered_json j = {
      {"architectures", {"LlamaForCausalLM"}},
      {"model_type", "llama"},
      {"vocab_size", c.vocab_size},
      {"hidden_size", c.d_model},
      {"intermediate_size", c.ffn_dim},
      {"num_hidden_layers", c.n_layers},
      {"num_attention_heads", c.n_heads},
      {"num_key_value_heads", c.n_kv_heads},
      {"head_dim", c.head_dim()},
      {"hidden_act", "silu"},
      {"rms_norm_eps", c.norm_eps},
      {"rope_theta", c.rope_theta},
      {"tie_word_embeddings", c.tied_embeddings},
      {"attention_bias", false},
      {"mlp_bias", false},
      {"torch_dtype", "float32"},
  };
  return j.dump(2) + "\n";
}

absl::StatusOr<std::string> WriteCheckpoint(const std::string& run_dir, const Model& model,
                                            AdamW& adamw, const TrainingState& state,
                                            const ExperimentConfig& config, int keep_last) {
  const fs::path root = fs::path(run_dir) / kCheckpointsDir;
  const std::string name = absl::StrFormat("%s%08d", kPrefix, state.step);
  const fs::path final_dir = root / name;
  const fs::path tmp_dir = root / ("." + name + ".tmp");
  std::error_code ec;
  fs::remove_all(tmp_dir, ec);
  fs::create_directories(tmp_dir, ec);
  if (ec) {
    return absl::PermissionDeniedError(
        absl::StrFormat("cannot create checkpoint folder %s: %s", tmp_dir.string(), ec.message()));
  }
  auto fail = [&](absl::Status s) {
    fs::remove_all(tmp_dir, ec);
    return s;
  };

  std::vector<TensorRef> weights;
  for (const ParamEntry& e : model.layout().entries()) {
    weights.push_back({e.name, DType::kF32, e.shape, model.params() + e.offset});
  }
  const std::vector<std::string> files = {"model.safetensors", "config.json",
                                          "optimizer.safetensors", "state.json",
                                          "experiment.yaml"};
  absl::Status s = WriteSafetensors((tmp_dir / files[0]).string(), weights,
                                    {{"format", "pt"}, {"step", std::to_string(state.step)}});
  if (s.ok()) s = WriteText((tmp_dir / files[1]).string(), HuggingFaceConfigJson(model.config()));
  if (s.ok()) {
    const std::vector<int64_t> shape = {static_cast<int64_t>(model.num_params())};
    s = WriteSafetensors((tmp_dir / files[2]).string(),
                         {{"adamw.m", DType::kF32, shape, adamw.m().data()},
                          {"adamw.v", DType::kF32, shape, adamw.v().data()}});
  }
  if (s.ok()) {
    const nlohmann::ordered_json j = {
        {"step", state.step},
        {"adamw_step", adamw.step()},
        {"threads", state.threads},
        {"sampler",
         {{"epoch", state.sampler.epoch},
          {"cursor", state.sampler.cursor},
          {"seed", state.sampler.seed},
          {"fingerprint", state.sampler.fingerprint}}}};
    s = WriteText((tmp_dir / files[3]).string(), j.dump(2) + "\n");
  }
  if (s.ok()) s = WriteText((tmp_dir / files[4]).string(), ExperimentConfigToYaml(config));
  if (!s.ok()) return fail(s);

  nlohmann::ordered_json manifest = {{"step", state.step}, {"files", nlohmann::json::object()}};
  for (const std::string& f : files) {
    absl::StatusOr<std::string> bytes = ReadFile((tmp_dir / f).string());
    if (!bytes.ok()) return fail(bytes.status());
    manifest["files"][f] = {{"bytes", bytes->size()},
                            {"fnv1a64", absl::StrFormat("%016x", Checksum(*bytes))}};
  }
  s = WriteText((tmp_dir / "manifest.json").string(), manifest.dump(2) + "\n");
  if (!s.ok()) return fail(s);
  fs::remove_all(final_dir, ec);
  fs::rename(tmp_dir, final_dir, ec);
  if (ec) {
    return fail(absl::PermissionDeniedError(absl::StrFormat(
        "cannot rename %s to %s: %s", tmp_dir.string(), final_dir.string(), ec.message())));
  }
  auto folders = CheckpointFolders(run_dir);
  for (size_t i = 0; i + static_cast<size_t>(std::max(keep_last, 1)) < folders.size(); ++i) {
    fs::remove_all(folders[i].second, ec);
  }
  return final_dir.string();
}

absl::Status VerifyCheckpoint(const std::string& dir) {
  LOOM_ASSIGN_OR_RETURN(std::string text, ReadFile(dir + "/manifest.json"));
  const nlohmann::json manifest = nlohmann::json::parse(text, nullptr, false);
  if (manifest.is_discarded() || !manifest.contains("files") || !manifest["files"].is_object()) {
    return absl::DataLossError(absl::StrFormat("%s/manifest.json is not a manifest", dir));
  }
  for (auto it = manifest["files"].begin(); it != manifest["files"].end(); ++it) {
    const std::string path = dir + "/" + it.key();
    absl::StatusOr<std::string> bytes = ReadFile(path);
    if (!bytes.ok()) return absl::DataLossError(absl::StrFormat("%s is missing", path));
    const std::string sum = absl::StrFormat("%016x", Checksum(*bytes));
    if (bytes->size() != (*it)["bytes"].get<size_t>() ||
        sum != (*it)["fnv1a64"].get<std::string>()) {
      return absl::DataLossError(
          absl::StrFormat("%s does not match its checksum in the manifest", path));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<std::string> LatestCheckpoint(const std::string& run_dir,
                                             std::vector<std::string>* passed_over) {
  auto folders = CheckpointFolders(run_dir);
  std::string problems;
  for (auto it = folders.rbegin(); it != folders.rend(); ++it) {
    const absl::Status s = VerifyCheckpoint(it->second.string());
    if (s.ok()) return it->second.string();
    if (passed_over != nullptr) passed_over->emplace_back(s.message());
    problems += absl::StrFormat("\n  %s", s.message());
  }
  return absl::NotFoundError(
      absl::StrFormat("no complete checkpoint in %s/%s%s", run_dir, kCheckpointsDir, problems));
}

absl::StatusOr<ModelConfig> ReadCheckpointModelConfig(const std::string& dir) {
  const std::string path = dir + "/config.json";
  LOOM_ASSIGN_OR_RETURN(std::string text, ReadFile(path));
  const nlohmann::json j = nlohmann::json::parse(text, nullptr, false);
  if (j.is_discarded() || !j.is_object()) {
    return absl::DataLossError(absl::StrFormat("%s is not JSON", path));
  }
  ModelConfig c;
  try {
    c.vocab_size = j.at("vocab_size").get<int>();
    c.d_model = j.at("hidden_size").get<int>();
    c.ffn_dim = j.at("intermediate_size").get<int>();
    c.n_layers = j.at("num_hidden_layers").get<int>();
    c.n_heads = j.at("num_attention_heads").get<int>();
    c.n_kv_heads = j.value("num_key_value_heads", c.n_heads);
    c.norm_eps = j.value("rms_norm_eps", 1e-5f);
    c.rope_theta = j.value("rope_theta", 10000.0f);
    c.tied_embeddings = j.value("tie_word_embeddings", false);
  } catch (const nlohmann::json::exception& e) {
    return absl::DataLossError(absl::StrFormat("%s: %s", path, e.what()));
  }
  if (absl::Status s = c.Validate(); !s.ok()) {
    return absl::InvalidArgumentError(absl::StrFormat("%s: %s", path, s.message()));
  }
  return c;
}

absl::Status ReadCheckpointWeights(const std::string& dir, Model& model) {
  LOOM_ASSIGN_OR_RETURN(SafetensorsFile file, SafetensorsFile::Read(dir + "/model.safetensors"));
  for (const ParamEntry& e : model.layout().entries()) {
    LOOM_ASSIGN_OR_RETURN(std::vector<float> w, file.F32(e.name, e.shape));
    std::copy(w.begin(), w.end(), model.params() + e.offset);
  }
  return absl::OkStatus();
}

absl::StatusOr<TrainingState> ReadCheckpointState(const std::string& dir, AdamW& adamw) {
  LOOM_ASSIGN_OR_RETURN(SafetensorsFile opt, SafetensorsFile::Read(dir + "/optimizer.safetensors"));
  const std::vector<int64_t> shape = {static_cast<int64_t>(adamw.m().numel())};
  LOOM_ASSIGN_OR_RETURN(std::vector<float> m, opt.F32("adamw.m", shape));
  LOOM_ASSIGN_OR_RETURN(std::vector<float> v, opt.F32("adamw.v", shape));
  std::copy(m.begin(), m.end(), adamw.m().data());
  std::copy(v.begin(), v.end(), adamw.v().data());
  const std::string path = dir + "/state.json";
  LOOM_ASSIGN_OR_RETURN(std::string text, ReadFile(path));
  const nlohmann::json j = nlohmann::json::parse(text, nullptr, false);
  TrainingState state;
  try {
    state.step = j.at("step").get<int64_t>();
    adamw.set_step(j.at("adamw_step").get<int64_t>());
    state.threads = j.at("threads").get<int>();
    const nlohmann::json& s = j.at("sampler");
    state.sampler.epoch = s.at("epoch").get<uint64_t>();
    state.sampler.cursor = s.at("cursor").get<uint64_t>();
    state.sampler.seed = s.at("seed").get<uint64_t>();
    state.sampler.fingerprint = s.at("fingerprint").get<uint64_t>();
  } catch (const nlohmann::json::exception& e) {
    return absl::DataLossError(absl::StrFormat("%s: %s", path, e.what()));
  }
  return state;
}

}  // namespace loom
