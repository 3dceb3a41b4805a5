#include "src/lr_schedule.h"

#include <cmath>

#include "absl/strings/str_format.h"

namespace loom {

float LrSchedule::At(int64_t step) const {
  if (step < warmup_steps) {
    return max_lr * static_cast<float>(step + 1) / static_cast<float>(warmup_steps);
  }
  if (step >= total_steps) return min_lr;
  const double decay_steps = static_cast<double>(total_steps - warmup_steps);
  const double progress = static_cast<double>(step - warmup_steps) / decay_steps;
  const double cosine = 0.5 * (1.0 + std::cos(3.14159265358979323846 * progress));
  return static_cast<float>(min_lr + (max_lr - min_lr) * cosine);
}

absl::Status LrSchedule::Validate() const {
  if (!(max_lr > 0.0f) || !(min_lr >= 0.0f) || min_lr > max_lr) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "schedule: need 0 <= min_lr <= max_lr and max_lr > 0, got min_lr %g, max_lr %g", min_lr,
        max_lr));
  }
  if (warmup_steps < 0 || total_steps <= 0 || warmup_steps > total_steps) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "schedule: need 0 <= warmup_steps <= total_steps and total_steps > 0, got %d and %d",
        warmup_steps, total_steps));
  }
  return absl::OkStatus();
}

}  // namespace loom
