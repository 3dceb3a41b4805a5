#include "data/token_dataset.h"

#include <algorithm>
#include <cassert>
#include <filesystem>
#include <system_error>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "data/status_macros.h"

namespace loom {

absl::StatusOr<TokenDataset> TokenDataset::Open(const std::vector<std::string>& shard_paths,
                                                const DatasetOptions& options) {
  if (shard_paths.empty()) return absl::InvalidArgumentError("dataset: no shards given");
  TokenDataset dataset;
  dataset.shards_.reserve(shard_paths.size());
  dataset.indexes_.reserve(shard_paths.size());
  for (const std::string& path : shard_paths) {
    LOOM_DATA_ASSIGN_OR_RETURN(Shard shard, Shard::Open(path, options.vocab_size));
    DocumentIndex index = DocumentIndex::Load(shard, options.eot_token, options.index_cache);
    dataset.num_tokens_ += shard.num_tokens();
    dataset.document_starts_.push_back(dataset.document_starts_.back() + index.num_documents());
    dataset.shards_.push_back(std::move(shard));
    dataset.indexes_.push_back(std::move(index));
  }
  return dataset;
}

TokenDataset::DocumentLocation TokenDataset::Locate(int64_t document) const {
  assert(0 <= document && document < num_documents());
  // The last shard whose first document is <= document (empty shards share a start and are
  // skipped by taking the last).
  const auto it =
      std::upper_bound(document_starts_.begin(), document_starts_.end() - 1, document) - 1;
  const int shard = static_cast<int>(it - document_starts_.begin());
  const DocumentIndex& index = indexes_[static_cast<size_t>(shard)];
  const int64_t local = document - *it;
  return {shard, index.begin(local), index.length(local)};
}

std::vector<int64_t> TokenDataset::DocumentLengths() const {
  std::vector<int64_t> lengths;
  lengths.reserve(static_cast<size_t>(num_documents()));
  for (const DocumentIndex& index : indexes_) {
    const std::span<const int64_t> b = index.boundaries();
    for (size_t d = 0; d + 1 < b.size(); ++d) lengths.push_back(b[d + 1] - b[d]);
  }
  return lengths;
}

std::string TokenDataset::DescribeDocument(int64_t document) const {
  const DocumentLocation loc = Locate(document);
  return absl::StrFormat("document %d (tokens [%d, %d) of %s)", document, loc.begin,
                         loc.begin + loc.length, shards_[static_cast<size_t>(loc.shard)].path());
}

void TokenDataset::CopyTokens(int64_t document, int64_t offset, int64_t count, int32_t* out) const {
  const DocumentLocation loc = Locate(document);
  assert(0 <= offset && 0 <= count && offset + count <= loc.length);
  shards_[static_cast<size_t>(loc.shard)].CopyTokens(loc.begin + offset, count, out);
}

absl::StatusOr<std::vector<std::string>> ListShards(const std::string& folder,
                                                    const std::string& prefix) {
  std::error_code ec;
  std::filesystem::directory_iterator it(folder, ec);
  if (ec) {
    return absl::NotFoundError(
        absl::StrFormat("shard folder %s: cannot list: %s", folder, ec.message()));
  }
  const std::string head = absl::StrCat(prefix, "_");
  std::vector<std::string> paths;
  for (; it != std::filesystem::directory_iterator(); it.increment(ec)) {
    if (ec) {
      return absl::UnavailableError(
          absl::StrFormat("shard folder %s: listing failed: %s", folder, ec.message()));
    }
    const std::string name = it->path().filename().string();
    if (absl::StartsWith(name, head) && absl::EndsWith(name, ".bin") && it->is_regular_file(ec)) {
      paths.push_back(it->path().string());
    }
  }
  std::sort(paths.begin(), paths.end());
  return paths;
}

}  // namespace loom
