#include "launch/training_data.h"

#include <algorithm>
#include <filesystem>

#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "data/token_dataset.h"
#include "src/status_macros.h"

namespace loom {
namespace fs = std::filesystem;

absl::StatusOr<std::vector<std::string>> ResolveShards(const std::string& spec,
                                                       const std::string& field) {
  std::error_code ec;
  if (spec.empty()) return absl::InvalidArgumentError(absl::StrFormat("%s is empty", field));
  std::vector<std::string> paths;
  if (fs::is_regular_file(spec, ec)) {
    paths.push_back(spec);
  } else if (fs::is_directory(spec, ec)) {
    for (const auto& e : fs::directory_iterator(spec, ec)) {
      if (e.is_regular_file() && e.path().extension() == ".bin") paths.push_back(e.path().string());
    }
    std::sort(paths.begin(), paths.end());
  } else {
    const fs::path p(spec);
    absl::StatusOr<std::vector<std::string>> listed =
        ListShards(p.parent_path().empty() ? "." : p.parent_path().string(),
                   p.filename().string());
    if (listed.ok()) paths = *listed;
  }
  if (paths.empty()) {
    return absl::NotFoundError(absl::StrFormat(
        "%s: '%s' names no shard (a .bin file, a folder of .bin files, or a prefix DIR/NAME of "
        "DIR/NAME_*.bin); run `loom prep` first?",
        field, spec));
  }
  return paths;
}

absl::StatusOr<std::unique_ptr<TokenDataset>> OpenDataset(const std::string& spec,
                                                          const std::string& field,
                                                          const ExperimentConfig& c) {
  LOOM_ASSIGN_OR_RETURN(std::vector<std::string> paths, ResolveShards(spec, field));
  DatasetOptions options;
  options.vocab_size = c.model.vocab_size;
  options.eot_token = static_cast<uint32_t>(c.data.eot_token);
  absl::StatusOr<TokenDataset> ds = TokenDataset::Open(paths, options);
  if (!ds.ok()) {
    return absl::Status(ds.status().code(),
                        absl::StrFormat("%s: %s", field, ds.status().message()));
  }
  // Otherwise the sampler's "no documents" would not say which files were empty.
  if (ds->num_tokens() == 0) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "%s: no tokens in '%s': every shard is empty (%s)", field, spec,
        absl::StrJoin(paths, ", ")));
  }
  return std::make_unique<TokenDataset>(std::move(ds).value());
}

BatchSamplerConfig SamplerConfig(const DataConfig& d) {
  BatchSamplerConfig s;
  s.tokens_per_batch = d.tokens_per_step;
  s.max_sequence_length = d.max_doc_tokens;
  s.oversize = d.long_docs == "reject" ? OversizePolicy::kReject : OversizePolicy::kSplit;
  s.seed = d.seed;
  return s;
}

absl::StatusOr<BatchSampler> TrainingSampler(const TokenDataset& train, const DataConfig& d) {
  const std::vector<int64_t> lengths = train.DocumentLengths();
  absl::StatusOr<BatchSampler> sampler = BatchSampler::Create(
      lengths, SamplerConfig(d), [&train](int64_t doc) { return train.DescribeDocument(doc); });
  if (!sampler.ok()) {
    return absl::Status(sampler.status().code(),
                        absl::StrFormat("data.train: %s", sampler.status().message()));
  }
  return sampler;
}

}  // namespace loom
