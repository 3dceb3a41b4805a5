// loom inspect: what is in a shard or a checkpoint.
#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "absl/strings/str_format.h"
#include "data/document_index.h"
#include "data/shard.h"
#include "launch/checkpoint.h"
#include "launch/commands.h"
#include "src/safetensors.h"

namespace loom {
namespace {

int InspectShard(const std::string& path) {
  // Token ids are shown as they are: the vocabulary bound is the widest the format allows.
  absl::StatusOr<Shard> shard = Shard::Open(path, kMaxVocabSize);
  if (!shard.ok()) {
    std::fprintf(stderr, "loom inspect: %s\n", std::string(shard.status().message()).c_str());
    return 1;
  }
  constexpr uint32_t kEot = 256;
  const DocumentIndex index = DocumentIndex::Load(*shard, kEot, IndexCache::kReadOnly);
  const std::vector<int64_t> lengths = index.Lengths();
  std::printf("shard %s\n  format: %s tokens\n  tokens: %lld\n  documents: %lld (split at "
              "end-of-text id %u)\n",
              path.c_str(), TokenWidthName(shard->width()),
              static_cast<long long>(shard->num_tokens()),
              static_cast<long long>(index.num_documents()), kEot);
  if (lengths.empty()) return 0;
  // Document lengths in power-of-two buckets, with a bar per bucket.
  std::vector<int64_t> docs(64, 0), tokens(64, 0);
  for (int64_t len : lengths) {
    int b = 0;
    while ((int64_t{1} << (b + 1)) <= len) ++b;
    ++docs[static_cast<size_t>(b)];
    tokens[static_cast<size_t>(b)] += len;
  }
  const int64_t most = *std::max_element(docs.begin(), docs.end());
  std::printf("  document lengths:\n  %-22s %10s %8s  \n", "length", "documents", "tokens%");
  for (size_t b = 0; b < docs.size(); ++b) {
    if (docs[b] == 0) continue;
    const std::string range = absl::StrFormat("[%d, %d)", int64_t{1} << b, int64_t{1} << (b + 1));
    std::printf("  %-22s %10lld %7.1f%%  %s\n", range.c_str(), static_cast<long long>(docs[b]),
                100.0 * tokens[b] / shard->num_tokens(),
                std::string(static_cast<size_t>(1 + 40 * docs[b] / most), '#').c_str());
  }
  return 0;
}

int InspectCheckpoint(const std::string& dir) {
  const absl::Status verified = VerifyCheckpoint(dir);
  absl::StatusOr<SafetensorsFile> weights = SafetensorsFile::Read(dir + "/model.safetensors");
  if (!weights.ok()) {
    std::fprintf(stderr, "loom inspect: %s\n", std::string(weights.status().message()).c_str());
    return 1;
  }
  std::printf("checkpoint %s\n  manifest: %s\n", dir.c_str(),
              verified.ok() ? "every file matches its checksum"
                            : std::string(verified.message()).c_str());
  std::ifstream state(dir + "/state.json"), config(dir + "/config.json");
  std::stringstream ss;
  if (state) ss << "  state.json:\n" << state.rdbuf() << "\n";
  if (config) ss << "  config.json:\n" << config.rdbuf() << "\n";
  std::fputs(ss.str().c_str(), stdout);
  int64_t total = 0;
  std::printf("  tensors (%zu):\n", weights->entries().size());
  for (const auto& [name, e] : weights->entries()) {
    int64_t n = 1;
    std::string shape;
    for (int64_t d : e.shape) {
      n *= d;
      shape += (shape.empty() ? "" : ", ") + std::to_string(d);
    }
    total += n;
    std::printf("    %-52s %s [%s]\n", name.c_str(), DTypeName(e.dtype), shape.c_str());
  }
  std::printf("  parameters: %lld\n", static_cast<long long>(total));
  return verified.ok() ? 0 : 1;
}

}  // namespace

int InspectCommand(const std::vector<std::string>& args) {
  if (args.size() != 1 || args[0] == "--help") {
    std::fputs("usage: loom inspect PATH   (a .bin shard or a checkpoint folder)\n",
               args.size() == 1 ? stdout : stderr);
    return args.size() == 1 ? 0 : 2;
  }
  const std::string& path = args[0];
  std::error_code ec;
  if (std::filesystem::is_directory(path, ec)) return InspectCheckpoint(path);
  if (std::filesystem::is_regular_file(path, ec)) return InspectShard(path);
  std::fprintf(stderr, "loom inspect: %s: no such file or folder\n", path.c_str());
  return 1;
}

}  // namespace loom
