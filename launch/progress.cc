#include "launch/progress.h"

#include <unistd.h>

#include <fstream>
#include <sstream>

#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "src/atomic_file.h"

namespace loom {

absl::StatusOr<MetricsLog> MetricsLog::Open(const std::string& run_dir,
                                            int64_t keep_through_step) {
  const std::string path = run_dir + "/metrics.jsonl";
  std::ifstream in(path);
  if (in) {
    // Keep the lines of steps already done; rewrite the file atomically without the rest.
    std::stringstream ss;
    ss << in.rdbuf();
    std::string kept;
    for (absl::string_view line : absl::StrSplit(ss.str(), '\n', absl::SkipEmpty())) {
      const nlohmann::json j = nlohmann::json::parse(line, nullptr, false);
      if (!j.is_discarded() && j.contains("step") && j["step"].get<int64_t>() <= keep_through_step) {
        kept += std::string(line) + "\n";
      }
    }
    if (absl::Status s = WriteFileAtomically(path, {kept}); !s.ok()) return s;
  }
  std::FILE* f = std::fopen(path.c_str(), "a");
  if (f == nullptr) {
    return absl::PermissionDeniedError(absl::StrFormat("cannot open %s for appending", path));
  }
  return MetricsLog(path, f);
}

MetricsLog::MetricsLog(MetricsLog&& other) noexcept
    : path_(std::move(other.path_)), file_(other.file_) {
  other.file_ = nullptr;
}

MetricsLog::~MetricsLog() {
  if (file_ != nullptr) std::fclose(file_);
}

absl::Status MetricsLog::Append(const nlohmann::json& record) {
  const std::string line = record.dump() + "\n";
  if (std::fwrite(line.data(), 1, line.size(), file_) != line.size() || std::fflush(file_) != 0) {
    return absl::DataLossError(absl::StrFormat("cannot write to %s", path_));
  }
  return absl::OkStatus();
}

std::string FormatDuration(double seconds) {
  if (!(seconds >= 0)) return "?";
  const int64_t s = static_cast<int64_t>(seconds + 0.5);
  if (s >= 3600) return absl::StrFormat("%dh%02dm", s / 3600, (s % 3600) / 60);
  if (s >= 60) return absl::StrFormat("%dm%02ds", s / 60, s % 60);
  return absl::StrFormat("%ds", s);
}

ProgressLine::ProgressLine(int64_t first_step, int64_t total_steps, std::FILE* out)
    : first_step_(first_step),
      total_steps_(total_steps),
      out_(out),
      tty_(isatty(fileno(out)) != 0),
      start_(std::chrono::steady_clock::now()) {}

void ProgressLine::Update(int64_t step, double loss, double lr, double tokens_per_s,
                          const std::string& extra) {
  const double elapsed =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  const int64_t done = step - first_step_;
  const double eta = done > 0 ? elapsed / done * (total_steps_ - step) : -1;
  const std::string text = absl::StrFormat(
      "step %d/%d  loss %.4f  lr %.2e  %.0f tok/s%s  elapsed %s  ETA %s", step, total_steps_,
      loss, lr, tokens_per_s, extra, FormatDuration(elapsed), FormatDuration(eta));
  if (tty_) {
    std::fprintf(out_, "\r\033[K%s", text.c_str());
    line_open_ = true;
  } else {
    std::fprintf(out_, "%s\n", text.c_str());
  }
  std::fflush(out_);
}

void ProgressLine::Message(const std::string& text) {
  if (line_open_) std::fprintf(out_, "\r\033[K");
  std::fprintf(out_, "%s\n", text.c_str());
  line_open_ = false;
  std::fflush(out_);
}

void ProgressLine::Finish() {
  if (line_open_) std::fprintf(out_, "\n");
  line_open_ = false;
  std::fflush(out_);
}

}  // namespace loom
