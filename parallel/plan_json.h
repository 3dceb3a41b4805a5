// StepPlans as JSON, for `loom plan`, for golden plans in tests and for people to read. Token
// ranges are written as [sequence_id, begin, end] triples to keep large plans compact; fields a
// kind does not use are left out.
#ifndef LOOM_PARALLEL_PLAN_JSON_H_
#define LOOM_PARALLEL_PLAN_JSON_H_

#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"
#include "parallel/step_plan.h"

namespace loom {

nlohmann::json PlanToJson(const StepPlan& plan);
// Fails, naming the rank and action, on a missing field, a wrong type or an unknown action kind.
absl::StatusOr<StepPlan> PlanFromJson(const nlohmann::json& json);

}  // namespace loom

#endif  // LOOM_PARALLEL_PLAN_JSON_H_
