#include "data/prep.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <span>
#include <system_error>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/str_format.h"
#include "data/shard_set_writer.h"
#include "data/status_macros.h"
#include "data/token_dataset.h"
#include "nlohmann/json.hpp"

namespace loom {
namespace {

namespace fs = std::filesystem;

constexpr size_t kReadBlock = size_t{1} << 20;
constexpr uint64_t kProgressStep = uint64_t{1} << 20;

// Calls the user's callback when another kProgressStep bytes are done, not per document: a JSONL
// file can hold millions of tiny documents.
class ProgressReporter {
 public:
  ProgressReporter(const std::function<void(const PrepProgress&)>& callback, uint64_t total)
      : callback_(callback), progress_{0, total} {}

  void Advance(uint64_t bytes) {
    progress_.bytes_done = std::min(progress_.bytes_done + bytes, progress_.bytes_total);
    if (callback_ && progress_.bytes_done >= last_reported_ + kProgressStep) {
      last_reported_ = progress_.bytes_done;
      callback_(progress_);
    }
  }
  void Finish() {
    progress_.bytes_done = progress_.bytes_total;
    if (callback_) callback_(progress_);
  }

 private:
  const std::function<void(const PrepProgress&)>& callback_;
  PrepProgress progress_;
  uint64_t last_reported_ = 0;
};

// The two output shard sets and the deterministic train / validation split.
class SplitWriter {
 public:
  static absl::StatusOr<SplitWriter> Create(const std::string& folder, int64_t shard_tokens,
                                            double val_fraction) {
    LOOM_DATA_ASSIGN_OR_RETURN(
        ShardSetWriter train,
        ShardSetWriter::Create(folder, "train", shard_tokens, TokenWidth::kUint16));
    LOOM_DATA_ASSIGN_OR_RETURN(
        ShardSetWriter val,
        ShardSetWriter::Create(folder, "val", shard_tokens, TokenWidth::kUint16));
    return SplitWriter(std::move(train), std::move(val), val_fraction);
  }

  // Starts the next document, `bytes` long before its EOT, in the split it belongs to.
  absl::Status BeginDocument(uint64_t bytes) {
    const double i = static_cast<double>(documents_++);
    const bool validation = std::floor((i + 1) * val_fraction_) > std::floor(i * val_fraction_);
    current_ = validation ? &val_ : &train_;
    return current_->BeginDocument(static_cast<int64_t>(bytes) + 1);
  }
  absl::Status AppendBytes(std::span<const char> bytes) {
    while (!bytes.empty()) {
      const size_t n = std::min(bytes.size(), std::size(block_));
      for (size_t i = 0; i < n; ++i) block_[i] = static_cast<unsigned char>(bytes[i]);
      LOOM_DATA_RETURN_IF_ERROR(current_->Append(std::span<const uint16_t>(block_, n)));
      bytes = bytes.subspan(n);
    }
    return absl::OkStatus();
  }
  absl::Status EndDocument() {
    const uint16_t eot = kByteEndOfText;
    return current_->Append(std::span<const uint16_t>(&eot, 1));
  }
  int64_t documents() const { return documents_; }

  absl::Status Finish(PrepResult* result) {
    result->train_documents = train_.num_documents();
    result->val_documents = val_.num_documents();
    result->train_tokens = train_.num_tokens();
    result->val_tokens = val_.num_tokens();
    LOOM_DATA_ASSIGN_OR_RETURN(result->train_shards, train_.Finish());
    LOOM_DATA_ASSIGN_OR_RETURN(result->val_shards, val_.Finish());
    return absl::OkStatus();
  }

 private:
  SplitWriter(ShardSetWriter train, ShardSetWriter val, double val_fraction)
      : train_(std::move(train)), val_(std::move(val)), val_fraction_(val_fraction) {}

  ShardSetWriter train_;
  ShardSetWriter val_;
  double val_fraction_;
  ShardSetWriter* current_ = nullptr;
  int64_t documents_ = 0;
  uint16_t block_[32768];
};

struct InputFile {
  std::string path;
  uint64_t size = 0;
};

// Every regular file below `folder`, sorted by path. Anything that is neither a folder nor a
// readable regular file (a dangling link, a socket) is an error rather than a silent skip.
absl::StatusOr<std::vector<InputFile>> ListInputFiles(const std::string& folder) {
  std::vector<InputFile> files;
  std::error_code ec;
  fs::recursive_directory_iterator it(folder, ec);
  for (; !ec && it != fs::recursive_directory_iterator(); it.increment(ec)) {
    const fs::directory_entry& entry = *it;
    const std::string path = entry.path().string();
    std::error_code status_ec;
    const fs::file_status status = entry.status(status_ec);
    if (fs::is_directory(status)) continue;
    if (!fs::is_regular_file(status)) {
      return absl::InvalidArgumentError(
          absl::StrFormat("prep input %s: cannot read: %s", path,
                          status_ec ? status_ec.message() : std::string("not a regular file")));
    }
    const uintmax_t size = entry.file_size(status_ec);
    if (status_ec) {
      return absl::InvalidArgumentError(
          absl::StrFormat("prep input %s: cannot read: %s", path, status_ec.message()));
    }
    files.push_back({path, static_cast<uint64_t>(size)});
  }
  if (ec) {
    return absl::InvalidArgumentError(
        absl::StrFormat("prep input folder %s: cannot list: %s", folder, ec.message()));
  }
  std::sort(files.begin(), files.end(),
            [](const InputFile& a, const InputFile& b) { return a.path < b.path; });
  return files;
}

absl::Status PrepFolder(const std::vector<InputFile>& files, SplitWriter& out,
                        ProgressReporter& progress) {
  std::vector<char> buffer(kReadBlock);
  for (const InputFile& file : files) {
    const int fd = ::open(file.path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
      return absl::ErrnoToStatus(errno, absl::StrFormat("prep input %s: cannot open", file.path));
    }
    struct FdCloser {
      int fd;
      ~FdCloser() { ::close(fd); }
    } closer{fd};
    LOOM_DATA_RETURN_IF_ERROR(out.BeginDocument(file.size));
    uint64_t offset = 0;
    while (true) {
      const ssize_t n = ::read(fd, buffer.data(), buffer.size());
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) {
        return absl::ErrnoToStatus(
            errno, absl::StrFormat("prep input %s: read at offset %d failed", file.path, offset));
      }
      if (n == 0) break;
      LOOM_DATA_RETURN_IF_ERROR(
          out.AppendBytes(std::span<const char>(buffer.data(), static_cast<size_t>(n))));
      offset += static_cast<uint64_t>(n);
      progress.Advance(static_cast<uint64_t>(n));
    }
    LOOM_DATA_RETURN_IF_ERROR(out.EndDocument());
  }
  return absl::OkStatus();
}

absl::Status PrepJsonl(const std::string& path, SplitWriter& out, ProgressReporter& progress) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrFormat("prep input %s: cannot open", path));
  std::string line;
  int64_t line_number = 0;
  while (std::getline(in, line)) {
    ++line_number;
    progress.Advance(line.size() + 1);
    if (absl::StripAsciiWhitespace(line).empty()) continue;
    nlohmann::json record;
    try {
      record = nlohmann::json::parse(line);
    } catch (const nlohmann::json::parse_error& e) {
      return absl::InvalidArgumentError(
          absl::StrFormat("%s:%d: not valid JSON: %s", path, line_number, e.what()));
    }
    if (!record.is_object()) {
      return absl::InvalidArgumentError(
          absl::StrFormat("%s:%d: expected a JSON object with a \"text\" field, got %s", path,
                          line_number, record.type_name()));
    }
    const auto text = record.find("text");
    if (text == record.end()) {
      return absl::InvalidArgumentError(
          absl::StrFormat("%s:%d: the object has no \"text\" field", path, line_number));
    }
    if (!text->is_string()) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "%s:%d: field \"text\" is a %s, not a string", path, line_number, text->type_name()));
    }
    const std::string& value = text->get_ref<const std::string&>();
    LOOM_DATA_RETURN_IF_ERROR(out.BeginDocument(value.size()));
    LOOM_DATA_RETURN_IF_ERROR(out.AppendBytes(value));
    LOOM_DATA_RETURN_IF_ERROR(out.EndDocument());
  }
  if (in.bad()) {
    return absl::DataLossError(
        absl::StrFormat("prep input %s: read failed after line %d", path, line_number));
  }
  return absl::OkStatus();
}

// Removes `<folder>/<prefix>_<digits>.bin` shards (and their index caches) that this run did not
// write: leftovers of an earlier run that wrote more shards.
absl::Status RemoveStaleShards(const std::string& folder, const std::string& prefix,
                               const std::vector<std::string>& written) {
  LOOM_DATA_ASSIGN_OR_RETURN(std::vector<std::string> present, ListShards(folder, prefix));
  std::vector<std::string> written_names;
  for (const std::string& path : written) written_names.push_back(fs::path(path).filename());
  for (const std::string& path : present) {
    const fs::path name = fs::path(path).filename();
    if (std::find(written_names.begin(), written_names.end(), name) != written_names.end()) {
      continue;
    }
    const std::string stem = name.stem().string().substr(prefix.size() + 1);
    if (stem.empty() || !std::all_of(stem.begin(), stem.end(), absl::ascii_isdigit)) continue;
    std::error_code ec;
    fs::remove(path, ec);
    if (ec) {
      return absl::PermissionDeniedError(
          absl::StrFormat("prep output %s: cannot remove a stale shard: %s", path, ec.message()));
    }
    fs::remove(IndexCachePath(path), ec);
  }
  return absl::OkStatus();
}

// True when `inner` is `outer` or lies below it.
bool IsWithin(const fs::path& inner, const fs::path& outer) {
  std::error_code ec;
  const fs::path a = fs::weakly_canonical(inner, ec);
  const fs::path b = fs::weakly_canonical(outer, ec);
  auto [mismatch, unused] = std::mismatch(b.begin(), b.end(), a.begin(), a.end());
  return mismatch == b.end();
}

}  // namespace

absl::StatusOr<PrepResult> PrepareShards(const PrepOptions& options) {
  if (!(options.val_fraction >= 0.0 && options.val_fraction < 1.0)) {
    return absl::InvalidArgumentError(
        absl::StrFormat("prep: val_fraction %g is outside [0, 1)", options.val_fraction));
  }
  if (options.output_dir.empty()) return absl::InvalidArgumentError("prep: no output folder");
  std::error_code ec;
  const fs::file_status input_status = fs::status(options.input, ec);
  if (!fs::exists(input_status)) {
    return absl::NotFoundError(absl::StrFormat("prep input %s: does not exist", options.input));
  }
  const bool folder = fs::is_directory(input_status);
  std::vector<InputFile> files;
  uint64_t total_bytes = 0;
  if (folder) {
    if (IsWithin(options.output_dir, options.input)) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "prep: output folder %s lies inside the input folder %s, so its shards would be read "
          "as input",
          options.output_dir, options.input));
    }
    LOOM_DATA_ASSIGN_OR_RETURN(files, ListInputFiles(options.input));
    for (const InputFile& f : files) total_bytes += f.size;
  } else {
    const uintmax_t size = fs::file_size(options.input, ec);
    if (ec) {
      return absl::InvalidArgumentError(
          absl::StrFormat("prep input %s: cannot read: %s", options.input, ec.message()));
    }
    total_bytes = static_cast<uint64_t>(size);
  }

  fs::create_directories(options.output_dir, ec);
  if (ec) {
    return absl::PermissionDeniedError(absl::StrFormat(
        "prep output %s: cannot create the folder: %s", options.output_dir, ec.message()));
  }
  LOOM_DATA_ASSIGN_OR_RETURN(
      SplitWriter out,
      SplitWriter::Create(options.output_dir, options.shard_tokens, options.val_fraction));
  ProgressReporter progress(options.progress, total_bytes);
  if (folder) {
    LOOM_DATA_RETURN_IF_ERROR(PrepFolder(files, out, progress));
  } else {
    LOOM_DATA_RETURN_IF_ERROR(PrepJsonl(options.input, out, progress));
  }
  if (out.documents() == 0) {
    return absl::InvalidArgumentError(
        absl::StrFormat("prep input %s: no documents", options.input));
  }
  PrepResult result;
  result.input_bytes = static_cast<int64_t>(total_bytes);
  LOOM_DATA_RETURN_IF_ERROR(out.Finish(&result));
  LOOM_DATA_RETURN_IF_ERROR(RemoveStaleShards(options.output_dir, "train", result.train_shards));
  LOOM_DATA_RETURN_IF_ERROR(RemoveStaleShards(options.output_dir, "val", result.val_shards));
  progress.Finish();
  return result;
}

}  // namespace loom
