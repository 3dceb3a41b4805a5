#include "parallel/chrome_trace.h"

#include <string_view>

#include "absl/strings/str_format.h"
#include "src/atomic_file.h"

namespace loom {
namespace {

using nlohmann::json;

double ActionSeconds(const StepPlan& plan, const Action& a, const CostModel& cost,
                     int world_size) {
  switch (a.kind) {
    case ActionKind::kForward:
    case ActionKind::kBackward:
    case ActionKind::kRecompute:
    case ActionKind::kWeightGrad:
      return cost.ComputeSeconds(plan, a);
    case ActionKind::kRingExchange:
      return cost.RingSeconds(a.ring, a.bytes_per_step);
    case ActionKind::kGradSync:
      return cost.GradSyncSeconds(world_size);
  }
  return 0.0;
}

}  // namespace

std::string ActionSliceName(const Action& a) {
  switch (a.kind) {
    case ActionKind::kForward:
      return absl::StrFormat("F%d", a.micro_batch);
    case ActionKind::kBackward:
      return absl::StrFormat("B%d", a.micro_batch);
    case ActionKind::kRecompute:
      return absl::StrFormat("R%d", a.micro_batch);
    case ActionKind::kWeightGrad:
      return absl::StrFormat("W%d", a.micro_batch);
    case ActionKind::kRingExchange:
      return absl::StrFormat("ring %d", a.ring_id);
    case ActionKind::kGradSync:
      return "grad sync";
  }
  return "";
}

nlohmann::json ChromeTrace(const StepPlan& plan, const CostModel& cost) {
  json events = json::array();
  events.push_back({{"name", "process_name"},
                    {"ph", "M"},
                    {"pid", 0},
                    {"args", {{"name", absl::StrFormat("%s plan", plan.planner)}}}});
  for (int rank = 0; rank < plan.world_size(); ++rank) {
    events.push_back({{"name", "thread_name"},
                      {"ph", "M"},
                      {"pid", 0},
                      {"tid", rank},
                      {"args", {{"name", absl::StrFormat("rank %d", rank)}}}});
    double now_us = 0.0;
    const std::vector<Action>& actions = plan.ranks[static_cast<size_t>(rank)].actions;
    for (size_t i = 0; i < actions.size(); ++i) {
      const Action& a = actions[i];
      const double dur_us = 1e6 * ActionSeconds(plan, a, cost, plan.world_size());
      json args = {{"action", i}, {"kind", ActionKindName(a.kind)}};
      if (a.kind != ActionKind::kGradSync) {
        args["micro_batch"] = a.micro_batch;
        args["tokens"] = TokenCount(a.tokens);
        args["sequences"] = a.tokens.size();
        if (!plan.stages.empty()) args["stage"] = a.stage;
      }
      if (a.kind == ActionKind::kRingExchange) {
        args["ring"] = a.ring;
        args["bytes_per_step"] = a.bytes_per_step;
      }
      events.push_back({{"name", ActionSliceName(a)},
                        {"cat", ActionKindName(a.kind)},
                        {"ph", "X"},
                        {"pid", 0},
                        {"tid", rank},
                        {"ts", now_us},
                        {"dur", dur_us},
                        {"args", std::move(args)}});
      now_us += dur_us;
    }
  }
  return {{"traceEvents", std::move(events)}, {"displayTimeUnit", "ms"}};
}

absl::Status WriteChromeTrace(const StepPlan& plan, const CostModel& cost,
                              const std::string& path) {
  const std::string text = ChromeTrace(plan, cost).dump();
  return WriteFileAtomically(path, {std::string_view(text)});
}

}  // namespace loom
