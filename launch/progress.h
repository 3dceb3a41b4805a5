// What a run tells its user: one JSON object per step in <run_dir>/metrics.jsonl, and a progress
// line with an ETA (rewritten in place on a terminal, plain lines otherwise).
#ifndef LOOM_LAUNCH_PROGRESS_H_
#define LOOM_LAUNCH_PROGRESS_H_

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <string>

#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"

namespace loom {

class MetricsLog {
 public:
  // Opens <run_dir>/metrics.jsonl for appending, first dropping lines of steps after
  // `keep_through_step` (steps a resumed run will compute again).
  static absl::StatusOr<MetricsLog> Open(const std::string& run_dir, int64_t keep_through_step);
  MetricsLog(MetricsLog&& other) noexcept;
  MetricsLog& operator=(MetricsLog&&) = delete;
  ~MetricsLog();
  // Appends one line and flushes, so a crash loses at most the step in flight.
  absl::Status Append(const nlohmann::json& record);

 private:
  MetricsLog(std::string path, std::FILE* file) : path_(std::move(path)), file_(file) {}
  std::string path_;
  std::FILE* file_ = nullptr;
};

// "1h02m", "3m05s", "42s".
std::string FormatDuration(double seconds);

class ProgressLine {
 public:
  // total_steps: the run's length; first_step: where this process started (for the ETA).
  ProgressLine(int64_t first_step, int64_t total_steps, std::FILE* out = stdout);
  // Shows the state after `step` steps.
  // `extra` is appended as it is (say, the mesh's balance).
  void Update(int64_t step, double loss, double lr, double tokens_per_s,
              const std::string& extra = "");
  // Prints a message on its own line (the progress line, on a terminal, is kept below it).
  void Message(const std::string& text);
  void Finish();

 private:
  int64_t first_step_, total_steps_;
  std::FILE* out_;
  bool tty_;
  bool line_open_ = false;
  std::chrono::steady_clock::time_point start_;
};

}  // namespace loom

#endif  // LOOM_LAUNCH_PROGRESS_H_
