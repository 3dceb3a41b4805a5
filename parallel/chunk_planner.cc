#include "parallel/chunk_planner.h"

#include <algorithm>
#include <functional>
#include <queue>
#include <utility>

#include "absl/strings/str_format.h"
#include "data/chunk_packing.h"

namespace loom {

absl::StatusOr<std::vector<ChunkUnit>> MakeChunkUnits(const std::vector<SequenceSpec>& sequences,
                                                      int64_t chunk_size, int keep,
                                                      const CostModel& cost) {
  if (chunk_size < 1 || keep < 0) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "chunks need chunk_size >= 1 and keep >= 0; got %d and %d", chunk_size, keep));
  }
  std::vector<int64_t> lengths;
  for (const SequenceSpec& s : sequences) lengths.push_back(s.length);
  absl::StatusOr<ChunkPacking> packing = PackChunks(lengths, chunk_size);
  if (!packing.ok()) return packing.status();
  std::vector<ChunkUnit> units;
  for (const Chunk& chunk : packing->chunks) {
    ChunkUnit::Part part;
    for (const ChunkPiece& p : chunk.pieces) {
      part.tokens.push_back({sequences[static_cast<size_t>(p.sequence)].id, p.begin, p.end});
    }
    if (chunk.dependent() && chunk.index > 0) {
      part.context.push_back(
          {sequences[static_cast<size_t>(chunk.long_sequence)].id, 0, chunk.pieces[0].begin});
    }
    const int64_t n = chunk.count;
    const int64_t kept = keep == 0 ? n : std::min<int64_t>(keep, n);
    part.keep = chunk.index >= n - kept;
    if (!chunk.dependent() || chunk.index == 0) units.emplace_back();
    ChunkUnit& unit = units.back();
    const double seconds = cost.MicroBatchSeconds(part.tokens);
    unit.seconds += seconds;
    if (!part.keep) unit.seconds += seconds * (1.0 - cost.backward_fraction);
    unit.chunks.push_back(std::move(part));
    if (chunk.dependent() && n > 1) {
      unit.kept = static_cast<int>(kept);
      unit.chunked_length = lengths[static_cast<size_t>(chunk.long_sequence)];
    }
  }
  return units;
}

void AppendChunkUnit(const ChunkUnit& unit, int* slot, std::vector<Action>* actions) {
  const int first = *slot;
  // Forward in order, then backward in reverse (a standalone chunk: forward, backward).
  for (const ChunkUnit::Part& c : unit.chunks) {
    Action f;
    f.kind = ActionKind::kForward;
    f.micro_batch = (*slot)++;
    f.tokens = c.tokens;
    f.context = c.context;
    f.keep_activations = c.keep;
    actions->push_back(std::move(f));
  }
  for (size_t j = unit.chunks.size(); j-- > 0;) {
    const ChunkUnit::Part& c = unit.chunks[j];
    Action b;
    b.kind = ActionKind::kRecompute;
    b.micro_batch = first + static_cast<int>(j);
    b.tokens = c.tokens;
    b.context = c.context;
    if (!c.keep) actions->push_back(b);
    b.kind = ActionKind::kBackward;
    actions->push_back(std::move(b));
  }
}

int64_t ChunkUnitsBudget(const std::vector<ChunkUnit>& units, int64_t chunk_size,
                         const CostModel& cost) {
  // Peak of a unit: the forward of a sequence's last chunk holds K chunks of activations, the
  // loss gradients of all its chunks, its K/V state and one chunk's scratch.
  int max_kept = 1;
  int64_t longest = 0;
  for (const ChunkUnit& u : units) {
    max_kept = std::max(max_kept, u.kept);
    longest = std::max(longest, u.chunked_length);
  }
  return cost.MicroBatchBytes(chunk_size) +
         (max_kept - 1) * chunk_size * cost.activation_bytes_per_token +
         longest * (cost.ContextBytesPerToken() + cost.pending_bytes_per_token);
}

absl::StatusOr<StepPlan> PlanChunkFlow(const std::vector<SequenceSpec>& sequences,
                                       const ChunkPlannerOptions& options, const CostModel& cost) {
  if (options.world_size < 1) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "chunkflow planning needs world_size >= 1; got %d", options.world_size));
  }
  absl::StatusOr<std::vector<ChunkUnit>> units =
      MakeChunkUnits(sequences, options.chunk_size, options.keep, cost);
  if (!units.ok()) return units.status();

  // LPT: the costliest unit first, each to the least-loaded rank (ties to the lower rank).
  std::vector<size_t> order(units->size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = i;
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) {
    return (*units)[a].seconds > (*units)[b].seconds;
  });
  using Load = std::pair<double, int>;
  std::priority_queue<Load, std::vector<Load>, std::greater<Load>> loads;
  for (int r = 0; r < options.world_size; ++r) loads.push({0.0, r});
  std::vector<std::vector<size_t>> assigned(static_cast<size_t>(options.world_size));
  for (size_t u : order) {
    auto [load, rank] = loads.top();
    loads.pop();
    assigned[static_cast<size_t>(rank)].push_back(u);
    loads.push({load + (*units)[u].seconds, rank});
  }

  StepPlan plan;
  plan.planner = "chunkflow";
  plan.capacity_tokens = options.chunk_size;
  plan.activation_budget_bytes = ChunkUnitsBudget(*units, options.chunk_size, cost);
  plan.sequences = sequences;
  plan.ranks.resize(static_cast<size_t>(options.world_size));
  for (int r = 0; r < options.world_size; ++r) {
    std::vector<Action>& actions = plan.ranks[static_cast<size_t>(r)].actions;
    int slot = 0;
    for (size_t u : assigned[static_cast<size_t>(r)]) AppendChunkUnit((*units)[u], &slot, &actions);
    Action sync;
    sync.kind = ActionKind::kGradSync;
    sync.gradient_bytes = cost.gradient_bytes;
    sync.total_targets = TotalTargets(sequences);
    actions.push_back(std::move(sync));
  }
  return plan;
}

}  // namespace loom
