#include "parallel/step_plan.h"

namespace loom {

const char* ActionKindName(ActionKind kind) {
  switch (kind) {
    case ActionKind::kForward:
      return "forward";
    case ActionKind::kBackward:
      return "backward";
    case ActionKind::kRingExchange:
      return "ring_exchange";
    case ActionKind::kGradSync:
      return "grad_sync";
    case ActionKind::kRecompute:
      return "recompute";
    case ActionKind::kWeightGrad:
      return "weight_grad";
  }
  return "unknown";
}

int64_t TokenCount(const std::vector<TokenRange>& ranges) {
  int64_t total = 0;
  for (const TokenRange& r : ranges) total += r.size();
  return total;
}

StageSpec StageOf(const StepPlan& plan, int stage, int n_layers) {
  if (plan.stages.empty()) return StageSpec{0, n_layers};
  return plan.stages[static_cast<size_t>(stage)];
}

int64_t TotalTargets(const std::vector<SequenceSpec>& sequences) {
  int64_t total = 0;
  for (const SequenceSpec& s : sequences) total += s.length > 0 ? s.length - 1 : 0;
  return total;
}

}  // namespace loom
