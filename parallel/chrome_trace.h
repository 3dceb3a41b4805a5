// A StepPlan as a Chrome trace (the JSON that chrome://tracing and Perfetto open): one row per
// rank, one slice per action, durations from the cost model. Actions are laid end to end on each
// row; waiting at meeting points and overlap of ring messages with compute are the simulator's
// business, so this view shows how much work each rank has, not when it finishes.
#ifndef LOOM_PARALLEL_CHROME_TRACE_H_
#define LOOM_PARALLEL_CHROME_TRACE_H_

#include <string>

#include "absl/status/status.h"
#include "nlohmann/json.hpp"
#include "parallel/cost_model.h"
#include "parallel/step_plan.h"

namespace loom {

nlohmann::json ChromeTrace(const StepPlan& plan, const CostModel& cost);
// An action's slice label in traces: "F3", "B3", "R3", "W3" (micro-batch 3), "ring 7",
// "grad sync".
std::string ActionSliceName(const Action& a);
// Writes ChromeTrace(plan, cost) to `path` atomically (temporary file, then rename).
absl::Status WriteChromeTrace(const StepPlan& plan, const CostModel& cost,
                              const std::string& path);

}  // namespace loom

#endif  // LOOM_PARALLEL_CHROME_TRACE_H_
