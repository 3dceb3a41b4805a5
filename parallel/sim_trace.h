// A simulated step as a Chrome trace (chrome://tracing, Perfetto): one row per rank, each action
// a slice from the time the simulator started it to its end, and the time a rank spent waiting
// (for ring members, a pipeline neighbour's message, the gradient sync) as slices of its own.
// Unlike chrome_trace.h, which lays a plan's actions end to end, this shows when a step ends.
#ifndef LOOM_PARALLEL_SIM_TRACE_H_
#define LOOM_PARALLEL_SIM_TRACE_H_

#include <string>

#include "absl/status/status.h"
#include "nlohmann/json.hpp"
#include "parallel/cost_model.h"
#include "parallel/simulator.h"
#include "parallel/step_plan.h"

namespace loom {

// The first `max_ranks` ranks (all when 0). Each compute slice carries its compute and exposed
// message seconds and the rank's memory while it runs (RankMemoryTimeline).
nlohmann::json SimulatedTrace(const StepPlan& plan, const CostModel& cost, const SimResult& sim,
                              int max_ranks = 0, const std::string& title = "");
absl::Status WriteSimulatedTrace(const StepPlan& plan, const CostModel& cost,
                                 const SimResult& sim, const std::string& path, int max_ranks = 0,
                                 const std::string& title = "");

}  // namespace loom

#endif  // LOOM_PARALLEL_SIM_TRACE_H_
