#include "data/shard_set_writer.h"

#include <algorithm>
#include <filesystem>
#include <utility>

#include "absl/strings/str_format.h"
#include "data/status_macros.h"

namespace loom {

std::string ShardPath(const std::string& folder, const std::string& prefix, int number) {
  return (std::filesystem::path(folder) / absl::StrFormat("%s_%06d.bin", prefix, number)).string();
}

absl::StatusOr<ShardSetWriter> ShardSetWriter::Create(std::string folder, std::string prefix,
                                                      int64_t shard_tokens, TokenWidth width) {
  if (shard_tokens < 1 || shard_tokens > kMaxShardTokens) {
    return absl::InvalidArgumentError(
        absl::StrFormat("shard_tokens %d is outside [1, %d]", shard_tokens, kMaxShardTokens));
  }
  return ShardSetWriter(std::move(folder), std::move(prefix), shard_tokens, width);
}

ShardSetWriter::ShardSetWriter(std::string folder, std::string prefix, int64_t shard_tokens,
                               TokenWidth width)
    : folder_(std::move(folder)),
      prefix_(std::move(prefix)),
      shard_tokens_(shard_tokens),
      width_(width) {}

absl::Status ShardSetWriter::StartShard() {
  LOOM_DATA_ASSIGN_OR_RETURN(
      ShardWriter writer,
      ShardWriter::Create(ShardPath(folder_, prefix_, static_cast<int>(paths_.size())), width_));
  paths_.push_back(writer.path());
  current_.emplace(std::move(writer));
  return absl::OkStatus();
}

absl::Status ShardSetWriter::FinishShard() {
  absl::Status status = current_->Finish();
  current_.reset();
  return status;
}

absl::Status ShardSetWriter::BeginDocument(int64_t length) {
  ++num_documents_;
  if (current_.has_value() && current_->num_tokens() > 0 &&
      current_->num_tokens() + length > shard_tokens_) {
    LOOM_DATA_RETURN_IF_ERROR(FinishShard());
  }
  return absl::OkStatus();
}

absl::Status ShardSetWriter::Append(std::span<const uint16_t> tokens) {
  while (!tokens.empty()) {
    if (!current_.has_value()) LOOM_DATA_RETURN_IF_ERROR(StartShard());
    const int64_t room = shard_tokens_ - current_->num_tokens();
    const size_t n = static_cast<size_t>(std::min<int64_t>(room, std::ssize(tokens)));
    LOOM_DATA_RETURN_IF_ERROR(current_->Append(tokens.first(n)));
    num_tokens_ += static_cast<int64_t>(n);
    tokens = tokens.subspan(n);
    if (current_->num_tokens() == shard_tokens_) LOOM_DATA_RETURN_IF_ERROR(FinishShard());
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<std::string>> ShardSetWriter::Finish() {
  if (current_.has_value()) LOOM_DATA_RETURN_IF_ERROR(FinishShard());
  return paths_;
}

}  // namespace loom
