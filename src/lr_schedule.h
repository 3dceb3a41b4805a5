// Learning rate: linear warmup, then cosine decay to a floor.
#ifndef LOOM_SRC_LR_SCHEDULE_H_
#define LOOM_SRC_LR_SCHEDULE_H_

#include <cstdint>

#include "absl/status/status.h"

namespace loom {

struct LrSchedule {
  float max_lr = 3e-4f;
  float min_lr = 3e-5f;
  int64_t warmup_steps = 0;
  int64_t total_steps = 1;

  // Learning rate of 0-based step `step`: (step+1)/warmup * max_lr during warmup, then cosine from
  // max_lr to min_lr at total_steps, min_lr after.
  float At(int64_t step) const;
  absl::Status Validate() const;
};

}  // namespace loom

#endif  // LOOM_SRC_LR_SCHEDULE_H_
