#include "parallel/hybrid_planner.h"

#include <algorithm>
#include <functional>
#include <queue>
#include <utility>

#include "absl/strings/str_format.h"
#include "parallel/balance_scheduler.h"
#include "parallel/chunk_planner.h"
#include "parallel/plan_metrics.h"

namespace loom {

absl::StatusOr<StepPlan> PlanHdpWithChunks(const std::vector<SequenceSpec>& sequences,
                                           const HybridOptions& options, const CostModel& cost) {
  // The options here; the sequences once it is known which of them ring.
  if (absl::Status s = CheckHdpBatch({}, options.hdp); !s.ok()) return s;
  const int64_t capacity = options.hdp.capacity_tokens;
  if (options.chunk_size < 1 || options.chunk_size > capacity) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "chunk_size must be between 1 and the rank capacity C = %d tokens; got %d", capacity,
        options.chunk_size));
  }
  const int world = options.hdp.world_size;
  // The mean rank load: every sequence's compute plus the fixed cost of the micro-batches that
  // hold them at C tokens each.
  double total = 0.0;
  int64_t tokens = 0;
  std::vector<SequenceSpec> longer;
  for (const SequenceSpec& s : sequences) {
    total += cost.DocumentSeconds(s.length);
    tokens += s.length;
    if (s.length > capacity) longer.push_back(s);
  }
  total += static_cast<double>((tokens + capacity - 1) / capacity) * cost.overhead_s *
           cost.n_layers;
  const double mean_load = total / world;
  absl::StatusOr<std::vector<ChunkUnit>> units =
      MakeChunkUnits(longer, options.chunk_size, options.keep, cost);
  if (!units.ok()) return units.status();
  // Every sequence here is longer than a chunk, so each unit is one sequence's chunks. One longer
  // than the whole world holds cannot ring and runs as chunks whatever it costs.
  const int64_t world_tokens = static_cast<int64_t>(world) * capacity;
  std::vector<ChunkUnit> chunked;
  std::vector<int64_t> chunked_ids;
  for (ChunkUnit& u : *units) {
    if (u.seconds > mean_load && u.chunked_length <= world_tokens) continue;
    chunked_ids.push_back(u.chunks.front().tokens.front().sequence_id);
    chunked.push_back(std::move(u));
  }
  std::sort(chunked_ids.begin(), chunked_ids.end());
  std::vector<SequenceSpec> rest;
  for (const SequenceSpec& s : sequences) {
    if (!std::binary_search(chunked_ids.begin(), chunked_ids.end(), s.id)) rest.push_back(s);
  }

  StepPlan plan;
  if (rest.empty()) {
    plan.ranks.resize(static_cast<size_t>(world));
    Action sync;
    sync.kind = ActionKind::kGradSync;
    for (RankPlan& r : plan.ranks) r.actions.push_back(sync);
  } else {
    if (absl::Status s = CheckHdpBatch(rest, options.hdp, &cost); !s.ok()) return s;
    absl::StatusOr<StepPlan> hdp = PlanBalancedHdp(rest, options.hdp, cost);
    if (!hdp.ok()) return hdp.status();
    plan = *std::move(hdp);
  }
  plan.planner = "hdp+chunks";
  plan.capacity_tokens = capacity;
  plan.sequences = sequences;
  if (!chunked.empty()) {
    plan.activation_budget_bytes =
        std::max(std::max(plan.activation_budget_bytes, cost.MicroBatchBytes(capacity)),
                 ChunkUnitsBudget(chunked, options.chunk_size, cost));
  }

  // The chunked sequences, costliest first, onto the least-loaded ranks after their HDP work.
  const PlanMetrics metrics = MeasurePlan(plan, cost);
  using Load = std::pair<double, int>;
  std::priority_queue<Load, std::vector<Load>, std::greater<Load>> loads;
  for (int r = 0; r < world; ++r) loads.push({metrics.ranks[static_cast<size_t>(r)].compute_s, r});
  std::stable_sort(chunked.begin(), chunked.end(),
                   [](const ChunkUnit& a, const ChunkUnit& b) { return a.seconds > b.seconds; });
  std::vector<std::vector<Action>> appended(static_cast<size_t>(world));
  std::vector<int> next_slot(static_cast<size_t>(world), 0);
  for (int r = 0; r < world; ++r) {
    for (const Action& a : plan.ranks[static_cast<size_t>(r)].actions) {
      next_slot[static_cast<size_t>(r)] = std::max(next_slot[static_cast<size_t>(r)], a.micro_batch + 1);
    }
  }
  for (const ChunkUnit& u : chunked) {
    auto [load, rank] = loads.top();
    loads.pop();
    AppendChunkUnit(u, &next_slot[static_cast<size_t>(rank)], &appended[static_cast<size_t>(rank)]);
    loads.push({load + u.seconds, rank});
  }
  for (int r = 0; r < world; ++r) {
    std::vector<Action>& actions = plan.ranks[static_cast<size_t>(r)].actions;
    Action sync = actions.back();  // GradSync stays last
    actions.pop_back();
    actions.insert(actions.end(), appended[static_cast<size_t>(r)].begin(),
                   appended[static_cast<size_t>(r)].end());
    sync.kind = ActionKind::kGradSync;
    sync.gradient_bytes = cost.gradient_bytes;
    sync.total_targets = TotalTargets(sequences);
    actions.push_back(std::move(sync));
  }
  return plan;
}

}  // namespace loom
