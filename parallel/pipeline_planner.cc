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

enum class Order { kPlanned, kCostliestFirst, kCheapestFirst, kCheapEnds, kGroupsFirst };

// Where each slot runs in the schedule: slot_at[position], and the dependent groups by position.
struct Arrangement {
  std::vector<int> slot_at;
  std::vector<std::pair<int, int>> groups;
};

// What may move: single slots and whole dependent groups, around the ring slots, which keep
// their positions. Dependent groups stay after the replica's last ring slot: a group's reversed
// backwards pull forwards in early, which would change the order of this replica's ring
// meetings against the other members'. Empty when the order would split a group around a ring
// slot or put one before a ring slot.
std::optional<Arrangement> Arrange(const Replica& rep, Order order) {
  struct Item {
    int first = 0;  // slot
    int count = 1;
    double seconds = 0.0;
    bool group = false;
  };
  std::vector<Item> items;
  std::vector<int> free_positions;
  std::vector<int> group_of(rep.slots.size(), -1);
  for (size_t g = 0; g < rep.groups.size(); ++g) {
    const auto [first, count] = rep.groups[g];
    for (int i = first; i < first + count; ++i) group_of[static_cast<size_t>(i)] = static_cast<int>(g);
  }
  Arrangement out;
  out.slot_at.resize(rep.slots.size());
  for (size_t i = 0; i < rep.slots.size(); ++i) {
    if (!rep.slots[i].rings.empty()) {
      out.slot_at[i] = static_cast<int>(i);
      continue;
    }
    free_positions.push_back(static_cast<int>(i));
    if (group_of[i] < 0) {
      items.push_back({static_cast<int>(i), 1, rep.slots[i].seconds, false});
      continue;
    }
    const auto [first, count] = rep.groups[static_cast<size_t>(group_of[i])];
    if (static_cast<int>(i) != first) continue;
    Item group{first, count, 0.0, true};
    for (int j = first; j < first + count; ++j) group.seconds += rep.slots[static_cast<size_t>(j)].seconds;
    items.push_back(group);
  }
  auto costlier = [](const Item& a, const Item& b) { return a.seconds > b.seconds; };
  switch (order) {
    case Order::kPlanned:
      break;
    case Order::kCostliestFirst:
      std::stable_sort(items.begin(), items.end(), costlier);
      break;
    case Order::kCheapestFirst:
      std::stable_sort(items.begin(), items.end(),
                       [](const Item& a, const Item& b) { return a.seconds < b.seconds; });
      break;
    case Order::kCheapEnds:
      // The cheapest first and the next cheapest last: they set the fill and the drain.
      std::stable_sort(items.begin(), items.end(), costlier);
      if (items.size() >= 2) {
        const Item cheapest = items.back(), second = items[items.size() - 2];
        items.resize(items.size() - 2);
        items.insert(items.begin(), cheapest);
        items.push_back(second);
      }
      break;
    case Order::kGroupsFirst:
      // Dependent chunks first: the others then fill the stages while the chunks' backwards
      // come back last chunk first.
      std::stable_sort(items.begin(), items.end(), costlier);
      std::stable_partition(items.begin(), items.end(), [](const Item& i) { return i.group; });
      break;
  }
  int last_ring = -1;
  for (size_t i = 0; i < rep.slots.size(); ++i) {
    if (!rep.slots[i].rings.empty()) last_ring = static_cast<int>(i);
  }
  size_t next = 0;
  for (const Item& it : items) {
    if (it.group && free_positions[next] < last_ring) return std::nullopt;
    for (int j = 0; j < it.count; ++j) {
      const int position = free_positions[next + static_cast<size_t>(j)];
      if (j > 0 && position != free_positions[next + static_cast<size_t>(j) - 1] + 1) {
        return std::nullopt;
      }
      out.slot_at[static_cast<size_t>(position)] = it.first + j;
    }
    if (it.group) out.groups.emplace_back(free_positions[next], it.count);
    next += static_cast<size_t>(it.count);
  }
  return out;
}

struct Layout {
  int p = 1, v = 1, replicas = 1;
  int stages() const { return p * v; }
  // The world rank running `stage` of replica d.
  int Rank(int stage, int d) const { return (stage % p) * replicas + d; }
};

absl::StatusOr<StepPlan> Build(const StepPlan& base, const std::vector<Replica>& replicas,
                               const std::vector<StageSpec>& stages, const Layout& layout,
                               PipelineScheduleKind kind, Order order, int extra_warmup = 0) {
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
    std::optional<Arrangement> arranged = Arrange(rep, order);
    // An order that cannot keep a group whole keeps the planned one on this replica.
    if (!arranged.has_value()) arranged = Arrange(rep, Order::kPlanned);
    const std::vector<int>& slot_at = arranged->slot_at;
    PipelineShape shape{layout.p, layout.v, static_cast<int>(rep.slots.size()), arranged->groups,
                        extra_warmup};
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
  PipelineScheduleKind best_kind = kinds.front();
  Order best_order = Order::kPlanned;
  bool first = true;
  auto consider = [&](PipelineScheduleKind kind, Order order, int extra) -> absl::Status {
    absl::StatusOr<StepPlan> plan = Build(replicas, *reps, *stages, layout, kind, order, extra);
    if (!plan.ok()) return plan.status();
    const int64_t peak = PeakBytes(*plan, cost);
    if (first) budget = std::max(budget, peak);
    first = false;
    if (peak > budget) return absl::OkStatus();
    absl::StatusOr<SimResult> sim = SimulateStep(*plan, cost);
    // A candidate that cannot finish is not a candidate (the planned 1F1B always can).
    if (absl::IsFailedPrecondition(sim.status())) return absl::OkStatus();
    if (!sim.ok()) return sim.status();
    if (sim->step_s < best_s) {
      best_s = sim->step_s;
      best_kind = kind;
      best_order = order;
      plan->activation_budget_bytes = budget;
      best = *std::move(plan);
    }
    return absl::OkStatus();
  };
  for (const PipelineScheduleKind kind : kinds) {
    for (const Order order : {Order::kPlanned, Order::kCostliestFirst, Order::kCheapestFirst,
                              Order::kCheapEnds, Order::kGroupsFirst}) {
      if (absl::Status s = consider(kind, order, 0); !s.ok()) return s;
    }
  }
  // Then more forwards in flight for the best 1F1B-like candidate, while memory allows.
  if (best_kind == PipelineScheduleKind::k1f1b || best_kind == PipelineScheduleKind::kZbh1) {
    for (const int extra : {std::max(1, options.pp / 2), options.pp, 2 * options.pp}) {
      if (absl::Status s = consider(best_kind, best_order, extra); !s.ok()) return s;
    }
  }
  if (!best.has_value()) {
    return absl::FailedPreconditionError(
        "no pipeline schedule could finish this step's plan (the validator names the fault when "
        "the schedule is given explicitly)");
  }
  return *std::move(best);
}

}  // namespace loom
