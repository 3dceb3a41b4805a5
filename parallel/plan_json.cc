#include "parallel/plan_json.h"

#include <string>

#include "absl/strings/str_format.h"

namespace loom {
namespace {

using nlohmann::json;

json RangesToJson(const std::vector<TokenRange>& ranges) {
  json out = json::array();
  for (const TokenRange& r : ranges) out.push_back({r.sequence_id, r.begin, r.end});
  return out;
}

json ActionToJson(const Action& a) {
  json out = {{"kind", ActionKindName(a.kind)}};
  switch (a.kind) {
    case ActionKind::kRingExchange:
      out["ring_id"] = a.ring_id;
      out["ring"] = a.ring;
      out["bytes_per_step"] = a.bytes_per_step;
      [[fallthrough]];
    case ActionKind::kForward:
    case ActionKind::kBackward:
    case ActionKind::kRecompute:
    case ActionKind::kWeightGrad:
      out["micro_batch"] = a.micro_batch;
      out["tokens"] = RangesToJson(a.tokens);
      // Written only where they differ from the default, so plans without chunks or pipelines
      // read as before.
      if (!a.context.empty()) out["context"] = RangesToJson(a.context);
      if (!a.keep_activations) out["keep_activations"] = false;
      if (a.offload_ratio > 0) out["offload_ratio"] = a.offload_ratio;
      if (a.stage != 0) out["stage"] = a.stage;
      if (a.prev_rank != -1) out["prev_rank"] = a.prev_rank;
      if (a.next_rank != -1) out["next_rank"] = a.next_rank;
      if (a.defer_weight_grads) out["defer_weight_grads"] = true;
      break;
    case ActionKind::kGradSync:
      out["gradient_bytes"] = a.gradient_bytes;
      out["total_targets"] = a.total_targets;
      break;
  }
  return out;
}

absl::StatusOr<ActionKind> KindFromName(const std::string& name) {
  for (const ActionKind kind : {ActionKind::kForward, ActionKind::kBackward,
                                ActionKind::kRingExchange, ActionKind::kGradSync,
                                ActionKind::kRecompute, ActionKind::kWeightGrad}) {
    if (name == ActionKindName(kind)) return kind;
  }
  return absl::InvalidArgumentError(absl::StrFormat("unknown action kind '%s'", name));
}

absl::StatusOr<Action> ActionFromJson(const json& in) {
  Action a;
  absl::StatusOr<ActionKind> kind = KindFromName(in.at("kind").get<std::string>());
  if (!kind.ok()) return kind.status();
  a.kind = *kind;
  if (a.kind == ActionKind::kGradSync) {
    a.gradient_bytes = in.at("gradient_bytes").get<int64_t>();
    a.total_targets = in.at("total_targets").get<int64_t>();
    return a;
  }
  a.micro_batch = in.at("micro_batch").get<int>();
  for (const json& r : in.at("tokens")) {
    a.tokens.push_back({r.at(0).get<int64_t>(), r.at(1).get<int64_t>(), r.at(2).get<int64_t>()});
  }
  if (in.contains("context")) {
    for (const json& r : in.at("context")) {
      a.context.push_back(
          {r.at(0).get<int64_t>(), r.at(1).get<int64_t>(), r.at(2).get<int64_t>()});
    }
  }
  if (in.contains("keep_activations")) a.keep_activations = in.at("keep_activations").get<bool>();
  if (in.contains("offload_ratio")) a.offload_ratio = in.at("offload_ratio").get<double>();
  a.stage = in.value("stage", 0);
  a.prev_rank = in.value("prev_rank", -1);
  a.next_rank = in.value("next_rank", -1);
  a.defer_weight_grads = in.value("defer_weight_grads", false);
  if (a.kind == ActionKind::kRingExchange) {
    a.ring_id = in.at("ring_id").get<int>();
    a.ring = in.at("ring").get<std::vector<int>>();
    a.bytes_per_step = in.at("bytes_per_step").get<int64_t>();
  }
  return a;
}

}  // namespace

nlohmann::json PlanToJson(const StepPlan& plan) {
  json sequences = json::array();
  for (const SequenceSpec& s : plan.sequences) sequences.push_back({s.id, s.length});
  json ranks = json::array();
  for (const RankPlan& rank : plan.ranks) {
    json actions = json::array();
    for (const Action& a : rank.actions) actions.push_back(ActionToJson(a));
    ranks.push_back({{"actions", std::move(actions)}});
  }
  json out = {{"planner", plan.planner},
              {"capacity_tokens", plan.capacity_tokens},
              {"activation_budget_bytes", plan.activation_budget_bytes},
              {"sequences", std::move(sequences)},
              {"ranks", std::move(ranks)}};
  if (!plan.stages.empty()) {
    json stages = json::array();
    for (const StageSpec& s : plan.stages) stages.push_back({s.first_layer, s.last_layer});
    out["stages"] = std::move(stages);
    out["pipeline_size"] = plan.pipeline_size;
    out["schedule"] = plan.schedule;
  }
  return out;
}

absl::StatusOr<StepPlan> PlanFromJson(const nlohmann::json& json) {
  StepPlan plan;
  std::string where = "plan";
  try {
    plan.planner = json.at("planner").get<std::string>();
    plan.capacity_tokens = json.at("capacity_tokens").get<int64_t>();
    plan.activation_budget_bytes = json.at("activation_budget_bytes").get<int64_t>();
    if (json.contains("stages")) {
      for (const nlohmann::json& s : json.at("stages")) {
        plan.stages.push_back({s.at(0).get<int>(), s.at(1).get<int>()});
      }
      plan.pipeline_size = json.at("pipeline_size").get<int>();
      plan.schedule = json.at("schedule").get<std::string>();
    }
    for (const nlohmann::json& s : json.at("sequences")) {
      plan.sequences.push_back({s.at(0).get<int64_t>(), s.at(1).get<int64_t>()});
    }
    const nlohmann::json& ranks = json.at("ranks");
    for (size_t r = 0; r < ranks.size(); ++r) {
      RankPlan rank;
      const nlohmann::json& actions = ranks[r].at("actions");
      for (size_t i = 0; i < actions.size(); ++i) {
        where = absl::StrFormat("rank %d action %d", r, i);
        absl::StatusOr<Action> a = ActionFromJson(actions[i]);
        if (!a.ok()) {
          return absl::InvalidArgumentError(
              absl::StrFormat("step plan JSON, %s: %s", where, a.status().message()));
        }
        rank.actions.push_back(*std::move(a));
      }
      plan.ranks.push_back(std::move(rank));
    }
  } catch (const nlohmann::json::exception& e) {
    return absl::InvalidArgumentError(absl::StrFormat("step plan JSON, %s: %s", where, e.what()));
  }
  return plan;
}

}  // namespace loom
