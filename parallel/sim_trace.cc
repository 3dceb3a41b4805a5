#include "parallel/sim_trace.h"

#include <algorithm>
#include <string_view>

#include "absl/strings/str_format.h"
#include "parallel/chrome_trace.h"
#include "parallel/plan_metrics.h"
#include "src/atomic_file.h"

namespace loom {

using nlohmann::json;

json SimulatedTrace(const StepPlan& plan, const CostModel& cost, const SimResult& sim,
                    int max_ranks, const std::string& title) {
  json events = json::array();
  events.push_back(
      {{"name", "process_name"},
       {"ph", "M"},
       {"pid", 0},
       {"args",
        {{"name", title.empty() ? absl::StrFormat("%s, simulated", plan.planner) : title}}}});
  const int ranks = max_ranks > 0 ? std::min(max_ranks, plan.world_size()) : plan.world_size();
  for (int rank = 0; rank < ranks; ++rank) {
    events.push_back({{"name", "thread_name"},
                      {"ph", "M"},
                      {"pid", 0},
                      {"tid", rank},
                      {"args", {{"name", absl::StrFormat("rank %d", rank)}}}});
    const std::vector<Action>& actions = plan.ranks[static_cast<size_t>(rank)].actions;
    const RankTimeline& timeline = sim.ranks[static_cast<size_t>(rank)];
    const std::vector<RankMemory> memory = RankMemoryTimeline(plan, rank, cost);
    double free_s = 0.0;
    for (size_t i = 0; i < actions.size(); ++i) {
      const Action& a = actions[i];
      const ActionTime& t = timeline.actions[i];
      if (a.kind == ActionKind::kRingExchange) continue;  // a meeting point, no time of its own
      if (t.start_s > free_s + 1e-12) {
        events.push_back({{"name", "wait"},
                          {"cat", "wait"},
                          {"ph", "X"},
                          {"pid", 0},
                          {"tid", rank},
                          {"ts", 1e6 * free_s},
                          {"dur", 1e6 * (t.start_s - free_s)},
                          {"args", {{"before_action", i}}}});
      }
      json args = {{"action", i},
                   {"kind", ActionKindName(a.kind)},
                   {"compute_s", t.compute_s},
                   {"exposed_messages_s", std::max(0.0, t.end_s - t.start_s - t.compute_s)},
                   {"memory_bytes", memory[i].bytes()}};
      if (a.kind != ActionKind::kGradSync) {
        args["micro_batch"] = a.micro_batch;
        args["tokens"] = TokenCount(a.tokens);
        if (!plan.stages.empty()) args["stage"] = a.stage;
      }
      events.push_back({{"name", ActionSliceName(a)},
                        {"cat", ActionKindName(a.kind)},
                        {"ph", "X"},
                        {"pid", 0},
                        {"tid", rank},
                        {"ts", 1e6 * t.start_s},
                        {"dur", 1e6 * (t.end_s - t.start_s)},
                        {"args", std::move(args)}});
      free_s = t.end_s;
    }
  }
  return {{"traceEvents", std::move(events)},
          {"displayTimeUnit", "ms"},
          {"otherData", {{"step_s", sim.step_s}, {"ranks_shown", ranks}, {"world", plan.world_size()}}}};
}

absl::Status WriteSimulatedTrace(const StepPlan& plan, const CostModel& cost,
                                 const SimResult& sim, const std::string& path, int max_ranks,
                                 const std::string& title) {
  const std::string text = SimulatedTrace(plan, cost, sim, max_ranks, title).dump();
  return WriteFileAtomically(path, {std::string_view(text)});
}

}  // namespace loom
