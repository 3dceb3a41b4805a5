// What the tests that run `loom` as a user would share: a scratch folder with a small prepared
// corpus, a tiny model's config, running commands and reading metrics.jsonl back.
#ifndef LOOM_TESTS_LAUNCH_LAUNCH_TEST_UTIL_H_
#define LOOM_TESTS_LAUNCH_LAUNCH_TEST_UTIL_H_

#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "absl/strings/str_format.h"
#include "data/prep.h"
#include "launch/experiment_config.h"
#include "nlohmann/json.hpp"

namespace loom::testing_util {

namespace fs = std::filesystem;

inline const std::string kLoom = std::string(LOOM_BINARY_DIR) + "/launch/loom";
inline const std::string kRepo = LOOM_SOURCE_DIR;
// Open MPI refuses root without these; CI containers run as root.
inline const std::string kMpiEnv =
    "OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 LOOM_BIN=" + kLoom + " ";

struct Result {
  int exit_code;       // -1 when killed by a signal
  std::string output;  // stdout and stderr
};

inline Result RunShell(const std::string& command) {
  FILE* pipe = popen((command + " 2>&1").c_str(), "r");
  Result r{-1, ""};
  if (pipe == nullptr) return r;
  char buf[4096];
  while (fgets(buf, sizeof buf, pipe)) r.output += buf;
  const int status = pclose(pipe);
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return r;
}

// A fresh folder under the temporary directory, removed with everything in it.
class ScratchDir {
 public:
  explicit ScratchDir(const std::string& prefix) {
    std::string templ = (fs::temp_directory_path() / (prefix + "_XXXXXX")).string();
    if (mkdtemp(templ.data()) != nullptr) path_ = templ;
  }
  ~ScratchDir() {
    std::error_code ec;
    if (!path_.empty()) fs::remove_all(path_, ec);
  }
  const fs::path& path() const { return path_; }

 private:
  fs::path path_;
};

// `docs` documents of 10 to 296 words in root/corpus, prepared into root/data/train_*.bin.
// `extra(d)` is appended to document d (say, a token no other document has).
template <typename Extra>
bool PrepareCorpus(const fs::path& root, int docs, Extra extra) {
  fs::create_directories(root / "corpus");
  const char* words[] = {"a", "ring", "of", "ranks", "passes", "keys", "and", "values", "along"};
  for (int d = 0; d < docs; ++d) {
    std::ofstream f(root / "corpus" / absl::StrFormat("doc%02d.txt", d));
    for (int w = 0; w < 10 + 13 * (d % 23); ++w) {
      f << words[(w * 5 + d) % 9] << (w % 7 ? " " : ".\n");
    }
    f << extra(d);
  }
  PrepOptions prep;
  prep.input = (root / "corpus").string();
  prep.output_dir = (root / "data").string();
  return PrepareShards(prep).ok();
}
inline bool PrepareCorpus(const fs::path& root, int docs) {
  return PrepareCorpus(root, docs, [](int) { return ""; });
}

// A model of 35k parameters on root/data/train: steps of a few tens of milliseconds.
inline ExperimentConfig TinyConfig(const fs::path& root, const std::string& run) {
  ExperimentConfig c;
  c.model.d_model = 32;
  c.model.n_layers = 2;
  c.model.n_heads = 4;
  c.model.n_kv_heads = 2;
  c.model.ffn_dim = 64;
  c.data.train = (root / "data" / "train").string();
  c.data.tokens_per_step = 1024;
  c.data.max_doc_tokens = 256;
  c.schedule.max_lr = 1e-2f;
  c.schedule.min_lr = 1e-3f;
  c.schedule.warmup_steps = 2;
  c.schedule.total_steps = 10;
  c.runtime.threads = 1;
  c.logging.run_dir = (root / run).string();
  c.logging.val_every = 0;
  c.checkpoint.every = 0;
  return c;
}

inline std::string WriteConfig(const fs::path& path, const ExperimentConfig& c) {
  std::ofstream(path) << ExperimentConfigToYaml(c);
  return path.string();
}

inline std::vector<nlohmann::json> Metrics(const fs::path& run) {
  std::vector<nlohmann::json> out;
  std::ifstream in(run / "metrics.jsonl");
  for (std::string line; std::getline(in, line);) {
    if (!line.empty()) out.push_back(nlohmann::json::parse(line));
  }
  return out;
}

}  // namespace loom::testing_util

#endif  // LOOM_TESTS_LAUNCH_LAUNCH_TEST_UTIL_H_
