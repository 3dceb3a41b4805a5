#include "parallel/pipeline_planner.h"

#include <algorithm>
#include <limits>
#include <numeric>
#include <optional>
#include <unordered_set>
#include <utility>
#include <vector>

#include "absl/strings/str_format.h"
#include "parallel/plan_metrics.h"
#include "parallel/simulator.h"
#include "parallel/stage_partition.h"
#include "parallel/token_slicing.h"

namespace loom {
namespace {

// One slot of a replica: its rings and what its Forward in the replica plan computes (`used`
// false for an empty slot).
struct Slot {
  std::vector<const Action*> rings;
  bool used = false;
  std::vector<TokenRange> tokens;
  std::vector<TokenRange> context;
  bool keep_activations = true;
  double seconds = 0.0;
};

struct Replica {
  std::vector<Slot> slots;
  std::vector<std::pair<int, int>> groups;  // dependent chunks: [first slot, + count)
  std::vector<int64_t> group_sequence;        // the sequence each group holds chunks of
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
      if (rep.slots[slot].used) {
        return absl::InvalidArgumentError(absl::StrFormat(
            "replica %d runs micro-batch slot %d twice", d, a.micro_batch));
      }
      Slot& s = rep.slots[slot];
      s.rings = std::move(rings);
      rings.clear();
      s.used = true;
      s.tokens = a.tokens;
      s.context = a.context;
      s.keep_activations = a.keep_activations;
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
      if (j - i > 1) {
        rep.groups.emplace_back(static_cast<int>(i), static_cast<int>(j - i));
        rep.group_sequence.push_back(chunk_of[i]);
      }
      i = j > i ? j : i + 1;
    }
  }
  return replicas;
}

int LastRingSlot(const Replica& rep) {
  int last_ring = -1;
  for (size_t i = 0; i < rep.slots.size(); ++i) {
    if (!rep.slots[i].rings.empty()) last_ring = static_cast<int>(i);
  }
  return last_ring;
}

// One dependent group cut anew by SliceForPipeline (token_slicing.h), its slots appended to
// `out`; false (nothing appended) when its chunks are not one contiguous range of the sequence
// or the slicing would not change them. Slices are at most as long as the group's longest chunk
// (the chunk size the base planner was given). A slice keeps its activations only if every chunk
// it overlaps did, so it never holds more than the planned chunks. Whole documents that shared a
// chunk's micro-batch move to one slot of their own after the slices.
bool SliceGroup(const Replica& rep, size_t g, int stages, const CostModel& cost, Replica& out) {
  const auto [first, count] = rep.groups[g];
  const int64_t sequence = rep.group_sequence[g];
  struct Chunk {
    int64_t begin, end;
    bool keep;
  };
  std::vector<Chunk> chunks;
  std::vector<TokenRange> others;
  int64_t longest = 0;
  for (int i = first; i < first + count; ++i) {
    const Slot& slot = rep.slots[static_cast<size_t>(i)];
    int found = 0;
    for (const TokenRange& t : slot.tokens) {
      if (t.sequence_id != sequence) {
        others.push_back(t);
        continue;
      }
      if (++found > 1 || (!chunks.empty() && t.begin != chunks.back().end)) return false;
      chunks.push_back({t.begin, t.end, slot.keep_activations});
      longest = std::max(longest, t.size());
    }
    if (found != 1) return false;
  }
  const TokenCuts cuts =
      SliceForPipeline(chunks.front().begin, chunks.back().end, longest, stages, cost);
  bool same = cuts.size() == chunks.size() + 1;
  for (size_t i = 0; same && i < chunks.size(); ++i) same = cuts[i] == chunks[i].begin;
  if (same) return false;
  out.groups.emplace_back(static_cast<int>(out.slots.size()), static_cast<int>(cuts.size()) - 1);
  out.group_sequence.push_back(sequence);
  size_t c = 0;  // the first chunk that may overlap the next slice
  for (size_t i = 0; i + 1 < cuts.size(); ++i) {
    Slot slot;
    slot.used = true;
    slot.tokens = {{sequence, cuts[i], cuts[i + 1]}};
    if (cuts[i] > 0) slot.context = {{sequence, 0, cuts[i]}};
    while (chunks[c].end <= cuts[i]) ++c;
    for (size_t k = c; k < chunks.size() && chunks[k].begin < cuts[i + 1]; ++k) {
      slot.keep_activations = slot.keep_activations && chunks[k].keep;
    }
    slot.seconds = cost.MicroBatchSeconds(slot.tokens);
    out.slots.push_back(std::move(slot));
  }
  if (!others.empty()) {
    Slot slot;
    slot.used = true;
    slot.tokens = std::move(others);
    slot.seconds = cost.MicroBatchSeconds(slot.tokens);
    out.slots.push_back(std::move(slot));
  }
  return true;
}

// The replicas with their dependent groups sliced for a pipeline of `stages` stages
// (SliceGroup); empty when no group changes. Only groups after a replica's last ring slot are
// sliced: their new slots move the slots after them, which must not include a ring's slot (a
// ring's members meet in the same slot on every member replica).
std::optional<std::vector<Replica>> SliceChains(const std::vector<Replica>& replicas, int stages,
                                                const CostModel& cost) {
  std::vector<Replica> out(replicas.size());
  bool changed = false;
  for (size_t d = 0; d < replicas.size(); ++d) {
    const Replica& rep = replicas[d];
    Replica& sliced = out[d];
    const int last_ring = LastRingSlot(rep);
    size_t g = 0;
    for (size_t i = 0; i < rep.slots.size();) {
      if (g == rep.groups.size() || rep.groups[g].first != static_cast<int>(i)) {
        sliced.slots.push_back(rep.slots[i++]);
        continue;
      }
      const int count = rep.groups[g].second;
      if (static_cast<int>(i) > last_ring && SliceGroup(rep, g, stages, cost, sliced)) {
        changed = true;
      } else {
        sliced.groups.emplace_back(static_cast<int>(sliced.slots.size()), count);
        sliced.group_sequence.push_back(rep.group_sequence[g]);
        sliced.slots.insert(sliced.slots.end(), rep.slots.begin() + static_cast<std::ptrdiff_t>(i),
                            rep.slots.begin() + static_cast<std::ptrdiff_t>(i) + count);
      }
      i += static_cast<size_t>(count);
      ++g;
    }
  }
  if (!changed) return std::nullopt;
  return out;
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
  const int last_ring = LastRingSlot(rep);
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
        if (!s.used) continue;  // an empty slot only held its place
        const int stage = op.chunk * layout.p + k;
        Action a;
        a.micro_batch = slot;
        a.stage = stage;
        a.tokens = s.tokens;
        a.context = s.context;
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
          a.keep_activations = s.keep_activations;
          actions.push_back(std::move(a));
        } else if (op.kind == PipeOp::Kind::kB) {
          if (!s.keep_activations) {
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

  // auto: the shortest simulated step among the candidates within 1F1B's memory, each candidate
  // with the chunks as planned and, where the replicas have dependent chunks, with them sliced by
  // cost for the pipeline (token_slicing.h).
  std::vector<PipelineScheduleKind> kinds;
  if (options.vpp > 1) {
    kinds = {PipelineScheduleKind::kInterleaved};
  } else {
    kinds = {PipelineScheduleKind::k1f1b, PipelineScheduleKind::kZbh1,
             PipelineScheduleKind::kGpipe};
  }
  const std::optional<std::vector<Replica>> sliced = SliceChains(*reps, layout.p, cost);
  std::vector<const std::vector<Replica>*> slicings = {&*reps};
  if (sliced.has_value()) slicings.push_back(&*sliced);
  // The memory limit is what the first candidate, 1F1B (or interleaved) in planned order, needs.
  int64_t budget = replicas.activation_budget_bytes;
  std::optional<StepPlan> best;
  double best_s = std::numeric_limits<double>::infinity();
  PipelineScheduleKind best_kind = kinds.front();
  Order best_order = Order::kPlanned;
  const std::vector<Replica>* best_slicing = slicings.front();
  bool first = true;
  auto consider = [&](const std::vector<Replica>& slicing, PipelineScheduleKind kind, Order order,
                      int extra) -> absl::Status {
    absl::StatusOr<StepPlan> plan = Build(replicas, slicing, *stages, layout, kind, order, extra);
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
      best_slicing = &slicing;
      plan->activation_budget_bytes = budget;
      best = *std::move(plan);
    }
    return absl::OkStatus();
  };
  for (const std::vector<Replica>* slicing : slicings) {
    for (const PipelineScheduleKind kind : kinds) {
      for (const Order order : {Order::kPlanned, Order::kCostliestFirst, Order::kCheapestFirst,
                                Order::kCheapEnds, Order::kGroupsFirst}) {
        if (absl::Status s = consider(*slicing, kind, order, 0); !s.ok()) return s;
      }
    }
  }
  // Then more forwards in flight for the best 1F1B-like candidate, while memory allows.
  if (best_kind == PipelineScheduleKind::k1f1b || best_kind == PipelineScheduleKind::kZbh1) {
    for (const int extra : {std::max(1, options.pp / 2), options.pp, 2 * options.pp}) {
      if (absl::Status s = consider(*best_slicing, best_kind, best_order, extra); !s.ok()) {
        return s;
      }
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
