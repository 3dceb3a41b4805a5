#include "parallel/pipeline_planner.h"

#include <algorithm>
#include <limits>
#include <numeric>
#include <unordered_set>
#include <utility>
#include <vector>

#include "absl/strings/str_format.h"
#include "parallel/plan_metrics.h"
#include "parallel/simulator.h"
#include "parallel/stage_partition.h"

namespace loom {
namespace {

// One slot of a replica: its rings and its Forward in the replica plan (null for an empty slot).
struct Slot {
  std::vector<const Action*> rings;
  const Action* forward = nullptr;
  double seconds = 0.0;
  bool movable = false;  // neither in a ring nor a dependent chunk
};

struct Replica {
  std::vector<Slot> slots;
  std::vector<std::pair<int, int>> groups;  // dependent chunks: [first slot, + count)
};

absl::StatusOr<std::vector<Replica>> ReadReplicas(const StepPlan& base, const CostModel& cost) {
  std::unordered_set<int64_t> ringed;
  std::vector<int64_t> lengths(base.sequences.size());
  for (size_t i = 0; i < base.sequences.size(); ++i) {
    lengths[i] = base.sequences[i].length;
    if (base.sequences[i].id != static_cast<int64_t>(i)) {
      return absl::InvalidArgumentError("pipeline planning needs sequence ids 0..n-1 in order");
    }
  }
  for (const RankPlan& r : base.ranks) {
    for (const Action& a : r.actions) {
      if (a.kind != ActionKind::kRingExchange) continue;
      for (const TokenRange& t : a.tokens) ringed.insert(t.sequence_id);
    }
  }
  std::vector<Replica> replicas(base.ranks.size());
  for (size_t d = 0; d < base.ranks.size(); ++d) {
    Replica& rep = replicas[d];
    std::vector<const Action*> rings;
    std::vector<int64_t> chunk_of;  // by slot: the sequence a slot holds a chunk of, or -1
    for (const Action& a : base.ranks[d].actions) {
      if (a.kind == ActionKind::kRingExchange) {
        rings.push_back(&a);
        continue;
      }
      if (a.kind != ActionKind::kForward) continue;
      const size_t slot = static_cast<size_t>(a.micro_batch);
      if (slot >= rep.slots.size()) {
        rep.slots.resize(slot + 1);
        chunk_of.resize(slot + 1, -1);
      }
      if (rep.slots[slot].forward != nullptr) {
        return absl::InvalidArgumentError(absl::StrFormat(
            "replica %d runs micro-batch slot %d twice", d, a.micro_batch));
      }
      Slot& s = rep.slots[slot];
      s.rings = std::move(rings);
      rings.clear();
      s.forward = &a;
      s.seconds = cost.MicroBatchSeconds(a.tokens);
      for (const TokenRange& t : a.tokens) {
        if (!ringed.contains(t.sequence_id) &&
            t.size() != lengths[static_cast<size_t>(t.sequence_id)]) {
          chunk_of[slot] = t.sequence_id;
        }
      }
      s.movable = s.rings.empty() && chunk_of[slot] < 0;
    }
    for (size_t i = 0; i < chunk_of.size();) {
      size_t j = i;
      while (j < chunk_of.size() && chunk_of[j] >= 0 && chunk_of[j] == chunk_of[i]) ++j;
      if (j - i > 1) rep.groups.emplace_back(static_cast<int>(i), static_cast<int>(j - i));
      i = j > i ? j : i + 1;
    }
  }
  return replicas;
}

enum class Order { kPlanned, kCostliestFirst, kCheapestFirst, kCheapEnds };

// Slot for each schedule position: the movable slots rearranged among their own positions.
std::vector<int> Arrange(const Replica& rep, Order order) {
  std::vector<int> positions(rep.slots.size());
  std::iota(positions.begin(), positions.end(), 0);
  if (order == Order::kPlanned) return positions;
  std::vector<int> movable;
  for (size_t i = 0; i < rep.slots.size(); ++i) {
    if (rep.slots[i].movable) movable.push_back(static_cast<int>(i));
  }
  std::vector<int> sorted = movable;
  auto costlier = [&](int a, int b) {
    return rep.slots[static_cast<size_t>(a)].seconds > rep.slots[static_cast<size_t>(b)].seconds;
  };
  std::stable_sort(sorted.begin(), sorted.end(), costlier);
  if (order == Order::kCheapestFirst) std::reverse(sorted.begin(), sorted.end());
  if (order == Order::kCheapEnds && sorted.size() >= 2) {
    // The cheapest first and last, the others costliest first between them.
    const int cheapest = sorted.back(), second = sorted[sorted.size() - 2];
    sorted.pop_back();
    sorted.pop_back();
    sorted.insert(sorted.begin(), cheapest);
    sorted.push_back(second);
  }
  for (size_t i = 0; i < movable.size(); ++i) {
    positions[static_cast<size_t>(movable[i])] = sorted[i];
  }
  return positions;
}

struct Layout {
  int p = 1, v = 1, replicas = 1;
  int stages() const { return p * v; }
  // The world rank running `stage` of replica d.
  int Rank(int stage, int d) const { return (stage % p) * replicas + d; }
};

absl::StatusOr<StepPlan> Build(const StepPlan& base, const std::vector<Replica>& replicas,
                               const std::vector<StageSpec>& stages, const Layout& layout,
                               PipelineScheduleKind kind, Order order) {
  StepPlan plan;
  plan.planner = base.planner + "+pp";
  plan.capacity_tokens = base.capacity_tokens;
  plan.sequences = base.sequences;
  plan.stages = stages;
  plan.pipeline_size = layout.p;
  plan.schedule = PipelineScheduleName(kind);
  plan.ranks.resize(static_cast<size_t>(layout.p * layout.replicas));
  const int S = layout.stages();
  const bool zero_bubble = kind == PipelineScheduleKind::kZbh1;
  for (int d = 0; d < layout.replicas; ++d) {
    const Replica& rep = replicas[static_cast<size_t>(d)];
    const std::vector<int> slot_at = Arrange(rep, order);
    // Dependent groups keep their positions (they are not movable).
    PipelineShape shape{layout.p, layout.v, static_cast<int>(rep.slots.size()), rep.groups};
    absl::StatusOr<std::vector<std::vector<PipeOp>>> schedule = MakePipelineSchedule(kind, shape);
    if (!schedule.ok()) return schedule.status();
    for (int k = 0; k < layout.p; ++k) {
      std::vector<Action>& actions =
          plan.ranks[static_cast<size_t>(layout.Rank(k, d))].actions;
      for (const PipeOp& op : (*schedule)[static_cast<size_t>(k)]) {
        const int slot = slot_at[static_cast<size_t>(op.micro_batch)];
        const Slot& s = rep.slots[static_cast<size_t>(slot)];
        if (s.forward == nullptr) continue;  // an empty slot only held its place
        const int stage = op.chunk * layout.p + k;
        Action a;
        a.micro_batch = slot;
        a.stage = stage;
        a.tokens = s.forward->tokens;
        a.context = s.forward->context;
        a.prev_rank = stage > 0 ? layout.Rank(stage - 1, d) : -1;
        a.next_rank = stage + 1 < S ? layout.Rank(stage + 1, d) : -1;
        if (op.kind == PipeOp::Kind::kF) {
          for (const Action* ring : s.rings) {
            Action exchange = *ring;
            exchange.stage = stage;
            exchange.ring_id = ring->ring_id * S + stage;
            for (int& member : exchange.ring) member = layout.Rank(stage, member);
            actions.push_back(std::move(exchange));
          }
          a.kind = ActionKind::kForward;
          a.keep_activations = s.forward->keep_activations;
          actions.push_back(std::move(a));
        } else if (op.kind == PipeOp::Kind::kB) {
          if (!s.forward->keep_activations) {
            Action r = a;
            r.kind = ActionKind::kRecompute;
            actions.push_back(std::move(r));
          }
          a.kind = ActionKind::kBackward;
          a.defer_weight_grads = zero_bubble;
          actions.push_back(std::move(a));
        } else {
          a.kind = ActionKind::kWeightGrad;
          actions.push_back(std::move(a));
        }
      }
    }
  }
  const Action& base_sync = base.ranks.front().actions.back();
  for (RankPlan& r : plan.ranks) {
    Action sync;
    sync.kind = ActionKind::kGradSync;
    sync.gradient_bytes = base_sync.gradient_bytes;
    sync.total_targets = TotalTargets(base.sequences);
    r.actions.push_back(std::move(sync));
  }
  return plan;
}

int64_t PeakBytes(const StepPlan& plan, const CostModel& cost) {
  int64_t peak = 0;
  for (const RankLoad& r : MeasurePlan(plan, cost).ranks) {
    peak = std::max(peak, r.peak_activation_bytes);
  }
  return peak;
}

}  // namespace

absl::StatusOr<StepPlan> PlanPipeline(const StepPlan& replicas, const PipelineOptions& options,
                                      const CostModel& cost) {
  if (options.pp < 1 || options.vpp < 1) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "pipelines need pp >= 1 and vpp >= 1; got %d and %d", options.pp, options.vpp));
  }
  if (replicas.ranks.empty() || replicas.ranks.front().actions.empty() ||
      replicas.ranks.front().actions.back().kind != ActionKind::kGradSync) {
    return absl::InvalidArgumentError("the replica plan must end every rank with its gradient sync");
  }
  const Layout layout{options.pp, options.vpp, replicas.world_size()};
  absl::StatusOr<std::vector<StageSpec>> stages =
      PartitionLayers(cost, layout.stages(), replicas.capacity_tokens);
  if (!stages.ok()) return stages.status();
  absl::StatusOr<std::vector<Replica>> reps = ReadReplicas(replicas, cost);
  if (!reps.ok()) return reps.status();

  if (options.schedule.has_value()) {
    absl::StatusOr<StepPlan> plan =
        Build(replicas, *reps, *stages, layout, *options.schedule, Order::kPlanned);
    if (!plan.ok()) return plan.status();
    plan->activation_budget_bytes =
        std::max(replicas.activation_budget_bytes, PeakBytes(*plan, cost));
    return plan;
  }

  // auto: the shortest simulated step among the candidates within 1F1B's memory.
  std::vector<PipelineScheduleKind> kinds;
  if (options.vpp > 1) {
    kinds = {PipelineScheduleKind::kInterleaved};
  } else {
    kinds = {PipelineScheduleKind::k1f1b, PipelineScheduleKind::kZbh1,
             PipelineScheduleKind::kGpipe};
  }
  // The memory limit is what the first candidate, 1F1B (or interleaved) in planned order, needs.
  int64_t budget = replicas.activation_budget_bytes;
  std::optional<StepPlan> best;
  double best_s = std::numeric_limits<double>::infinity();
  for (const PipelineScheduleKind kind : kinds) {
    for (const Order order :
         {Order::kPlanned, Order::kCostliestFirst, Order::kCheapestFirst, Order::kCheapEnds}) {
      absl::StatusOr<StepPlan> plan = Build(replicas, *reps, *stages, layout, kind, order);
      if (!plan.ok()) return plan.status();
      const int64_t peak = PeakBytes(*plan, cost);
      if (kind == kinds.front() && order == Order::kPlanned) budget = std::max(budget, peak);
      if (peak > budget) continue;
      absl::StatusOr<SimResult> sim = SimulateStep(*plan, cost);
      if (!sim.ok()) return sim.status();
      if (sim->step_s < best_s) {
        best_s = sim->step_s;
        plan->activation_budget_bytes = budget;
        best = *std::move(plan);
      }
    }
  }
  return *std::move(best);
}

}  // namespace loom
