#include "parallel/simulator.h"

#include <algorithm>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "parallel/plan_metrics.h"

namespace loom {
namespace {

enum Direction { kForwardPass = 0, kBackwardPass = 1 };

// A ring's meeting in one pass: who has arrived, and when the last of them did.
struct Meeting {
  size_t arrived = 0;
  double latest_s = 0.0;
  std::vector<int> waiting;  // ranks parked until everyone is there
};

class Simulation {
 public:
  Simulation(const StepPlan& plan, const CostModel& cost, const SimulatorOptions& options)
      : plan_(plan), cost_(cost), options_(options) {
    const size_t world = plan.ranks.size();
    ranks_.resize(world);
    result_.ranks.resize(world);
    int max_slot = 0;
    for (size_t r = 0; r < world; ++r) {
      result_.ranks[r].actions.resize(plan.ranks[r].actions.size());
      for (const Action& a : plan.ranks[r].actions) max_slot = std::max(max_slot, a.micro_batch);
    }
    slots_ = static_cast<uint64_t>(max_slot) + 1;
  }

  absl::StatusOr<SimResult> Run() {
    if (options_.track_memory) {
      memory_.resize(ranks_.size());
      for (size_t r = 0; r < ranks_.size(); ++r) {
        memory_[r] = RankMemoryTimeline(plan_, static_cast<int>(r), cost_);
      }
    }
    std::vector<int> work;
    for (int r = plan_.world_size() - 1; r >= 0; --r) work.push_back(r);
    while (!work.empty()) {
      const int r = work.back();
      work.pop_back();
      Advance(r, work);
    }
    std::vector<std::string> stuck;
    for (size_t r = 0; r < ranks_.size(); ++r) {
      if (ranks_[r].pc < plan_.ranks[r].actions.size() && stuck.size() < 6) {
        stuck.push_back(absl::StrFormat("rank %d at action %d (%s) %s", r, ranks_[r].pc,
                                        ActionKindName(plan_.ranks[r].actions[ranks_[r].pc].kind),
                                        ranks_[r].waiting_for));
      }
    }
    if (!stuck.empty()) {
      return absl::FailedPreconditionError(
          "the plan cannot finish: " + absl::StrJoin(stuck, "; "));
    }
    for (RankTimeline& t : result_.ranks) {
      result_.step_s = std::max(result_.step_s, t.end_s);
      result_.compute_end_s = std::max(result_.compute_end_s, t.compute_end_s);
    }
    if (options_.track_memory) {
      for (size_t r = 0; r < ranks_.size(); ++r) LayMemory(r);
    }
    return std::move(result_);
  }

 private:
  struct RankState {
    size_t pc = 0;
    double free_s = 0.0;
    bool arrived = false;  // at the meeting of the action at pc
    std::vector<const Action*> pending_rings;  // RingExchange actions of the next Forward
    // The rings of each (slot, stage) forwarded, which its Backward meets again.
    std::unordered_map<uint64_t, std::vector<const Action*>> rings_of;
    // Seconds to move each (slot, stage)'s offloaded activations over the host link, which its
    // Backward pays again to bring them back.
    std::unordered_map<uint64_t, double> offload_s;
    std::string waiting_for;
  };

  uint64_t SlotStage(const Action& a) const {
    return static_cast<uint64_t>(a.micro_batch) * static_cast<uint64_t>(plan_.num_stages()) +
           static_cast<uint64_t>(a.stage);
  }
  // A message to `to`'s action at (slot, stage) in `direction`, from `from`.
  uint64_t MessageKey(int from, int to, int slot, int stage, Direction direction) const {
    const uint64_t world = ranks_.size();
    const uint64_t key = ((static_cast<uint64_t>(from) * world + static_cast<uint64_t>(to)) *
                              slots_ +
                          static_cast<uint64_t>(slot)) *
                             static_cast<uint64_t>(plan_.num_stages()) +
                         static_cast<uint64_t>(stage);
    return key * 2 + direction;
  }

  void Post(uint64_t key, double arrival_s, std::vector<int>& work) {
    messages_[key] = arrival_s;
    auto it = message_waiters_.find(key);
    if (it == message_waiters_.end()) return;
    work.push_back(it->second);
    message_waiters_.erase(it);
  }

  // Seconds of the ring messages of `rings` that compute does not hide, for one compute action.
  double ExposedRingSeconds(const Action& a, const std::vector<const Action*>& rings,
                            Direction pass) const {
    const StageSpec stage = StageOf(plan_, a.stage, cost_.n_layers);
    const double layers = stage.last_layer - stage.first_layer;
    const double share = pass == kForwardPass ? 1.0 - cost_.backward_fraction
                                              : cost_.backward_fraction;
    double exposed = 0.0;
    for (const Action* ring : rings) {
      const int n = static_cast<int>(ring->ring.size());
      if (n < 2) continue;
      double slowest = 0.0;
      for (int i = 0; i < n; ++i) {
        slowest = std::max(slowest,
                           cost_.Link(ring->ring[static_cast<size_t>(i)],
                                      ring->ring[static_cast<size_t>((i + 1) % n)])
                               .Seconds(static_cast<double>(ring->bytes_per_step)));
      }
      // The backward sends K/V and then the dK/dV accumulators: two messages per step (three
      // when it first runs the layer's forward again).
      const double message_s =
          pass == kForwardPass ? slowest : (cost_.layer_recompute ? 3.0 : 2.0) * slowest;
      double squares = 0.0;
      for (const TokenRange& t : ring->tokens) {
        squares += static_cast<double>(t.end) * t.end - static_cast<double>(t.begin) * t.begin;
      }
      const double attention_step_s = cost_.attention_s * squares * share / n;
      const double per_step =
          options_.overlap_ring_messages ? std::max(0.0, message_s - attention_step_s) : message_s;
      exposed += layers * (n - 1) * per_step;
    }
    return exposed;
  }

  // Seconds of host-link traffic of an offloading micro-batch that its compute does not hide:
  // the Forward copies the offloaded activations out while it computes, the Backward copies them
  // back in (layer by layer, each copy overlapping the next layer's compute).
  double ExposedOffloadSeconds(RankState& s, const Action& a, double compute_s) const {
    double transfer_s = 0.0;
    if (a.kind == ActionKind::kForward && a.keep_activations && a.offload_ratio > 0) {
      const StageSpec stage = StageOf(plan_, a.stage, cost_.n_layers);
      const double bytes = a.offload_ratio * static_cast<double>(TokenCount(a.tokens)) *
                           static_cast<double>(cost_.activation_bytes_per_token) *
                           (stage.last_layer - stage.first_layer) / std::max(cost_.n_layers, 1);
      transfer_s = cost_.host_bytes_per_s > 0 ? bytes / cost_.host_bytes_per_s : 0.0;
      s.offload_s[SlotStage(a)] = transfer_s;
    } else if (a.kind == ActionKind::kBackward) {
      auto it = s.offload_s.find(SlotStage(a));
      if (it == s.offload_s.end()) return 0.0;
      transfer_s = it->second;
      s.offload_s.erase(it);
    }
    return std::max(0.0, transfer_s - compute_s);
  }

  double GradSyncSeconds(int64_t bytes) const {
    const int world = plan_.world_size();
    if (world < 2) return 0.0;
    const LinkCost& link = world > cost_.ranks_per_node ? cost_.inter_node : cost_.intra_node;
    return 2.0 * (world - 1) * link.Seconds(static_cast<double>(bytes) / world);
  }

  // Runs rank r's actions until one must wait.
  void Advance(int r, std::vector<int>& work) {
    RankState& s = ranks_[static_cast<size_t>(r)];
    RankTimeline& timeline = result_.ranks[static_cast<size_t>(r)];
    const std::vector<Action>& actions = plan_.ranks[static_cast<size_t>(r)].actions;
    while (s.pc < actions.size()) {
      const Action& a = actions[s.pc];
      ActionTime& t = timeline.actions[s.pc];
      if (a.kind == ActionKind::kRingExchange) {
        s.pending_rings.push_back(&a);
        t.start_s = t.end_s = s.free_s;
        ++s.pc;
        continue;
      }
      if (a.kind == ActionKind::kGradSync) {
        if (!s.arrived) {
          s.arrived = true;
          sync_.latest_s = std::max(sync_.latest_s, s.free_s);
          sync_.waiting.push_back(r);
          if (++sync_.arrived == ranks_.size()) {
            for (int w : sync_.waiting) work.push_back(w);
          }
        }
        if (sync_.arrived < ranks_.size()) {
          s.waiting_for = "waits for every rank at the gradient sync";
          return;
        }
        t.start_s = sync_.latest_s;
        t.end_s = t.start_s + GradSyncSeconds(a.gradient_bytes);
        Finish(s, timeline, t, /*computes=*/false);
        continue;
      }
      double ready = s.free_s;
      const bool forward = a.kind == ActionKind::kForward;
      const bool backward = a.kind == ActionKind::kBackward;
      const int from = forward ? a.prev_rank : backward ? a.next_rank : -1;
      if (from >= 0) {
        const uint64_t key =
            MessageKey(from, r, a.micro_batch, a.stage, forward ? kForwardPass : kBackwardPass);
        auto it = messages_.find(key);
        if (it == messages_.end()) {
          message_waiters_[key] = r;
          s.waiting_for = absl::StrFormat("waits for the %s of micro-batch %d stage %d from rank %d",
                                          forward ? "activations" : "gradient", a.micro_batch,
                                          a.stage, from);
          return;
        }
        ready = std::max(ready, it->second);
      }
      static const std::vector<const Action*> kNoRings;
      const std::vector<const Action*>* rings = &kNoRings;
      if (forward) {
        rings = &s.pending_rings;
      } else if (backward) {
        auto it = s.rings_of.find(SlotStage(a));
        if (it != s.rings_of.end()) rings = &it->second;
      }
      const Direction pass = backward ? kBackwardPass : kForwardPass;
      if (!rings->empty()) {
        if (!s.arrived) {
          s.arrived = true;
          for (const Action* ring : *rings) {
            Meeting& m = meetings_[static_cast<uint64_t>(ring->ring_id) * 2 + pass];
            m.latest_s = std::max(m.latest_s, ready);
            m.waiting.push_back(r);
            if (++m.arrived == ring->ring.size()) {
              for (int w : m.waiting) work.push_back(w);
            }
          }
        }
        for (const Action* ring : *rings) {
          const Meeting& m = meetings_[static_cast<uint64_t>(ring->ring_id) * 2 + pass];
          if (m.arrived < ring->ring.size()) {
            s.waiting_for = absl::StrFormat("waits for the members of ring %d", ring->ring_id);
            return;
          }
          ready = std::max(ready, m.latest_s);
        }
      }
      t.start_s = ready;
      t.compute_s = options_.measured_compute_s != nullptr
                        ? (*options_.measured_compute_s)[static_cast<size_t>(r)][s.pc]
                        : cost_.ComputeSeconds(plan_, a);
      t.end_s = ready + t.compute_s + ExposedRingSeconds(a, *rings, pass) +
                ExposedOffloadSeconds(s, a, t.compute_s);
      const int to = forward ? a.next_rank : backward ? a.prev_rank : -1;
      if (to >= 0) {
        const double bytes =
            static_cast<double>(TokenCount(a.tokens) * cost_.stage_message_bytes_per_token);
        Post(MessageKey(r, to, a.micro_batch, forward ? a.stage + 1 : a.stage - 1, pass),
             t.end_s + cost_.Link(r, to).Seconds(bytes), work);
      }
      if (forward) {
        if (!s.pending_rings.empty()) s.rings_of[SlotStage(a)] = std::move(s.pending_rings);
        s.pending_rings.clear();
      }
      Finish(s, timeline, t, /*computes=*/true);
    }
  }

  // Rank r's memory on the simulated clock: a compute action's figure from its start until the
  // next compute action starts (waiting in between, the rank holds at most that).
  void LayMemory(size_t r) {
    RankTimeline& timeline = result_.ranks[r];
    const std::vector<Action>& actions = plan_.ranks[r].actions;
    for (size_t i = 0; i < actions.size(); ++i) {
      const ActionKind kind = actions[i].kind;
      if (kind == ActionKind::kRingExchange || kind == ActionKind::kGradSync) continue;
      const RankMemory& m = memory_[r][i];
      const ActionTime& t = timeline.actions[i];
      timeline.memory.push_back({t.start_s, m.bytes()});
      timeline.peak_memory_bytes = std::max(timeline.peak_memory_bytes, m.bytes());
    }
  }

  static void Finish(RankState& s, RankTimeline& timeline, const ActionTime& t, bool computes) {
    s.free_s = t.end_s;
    s.arrived = false;
    s.waiting_for.clear();
    ++s.pc;
    timeline.end_s = t.end_s;
    if (computes) {
      timeline.busy_s += t.compute_s;
      timeline.compute_end_s = t.end_s;
    }
  }

  const StepPlan& plan_;
  const CostModel& cost_;
  const SimulatorOptions& options_;
  uint64_t slots_ = 1;
  std::vector<RankState> ranks_;
  std::unordered_map<uint64_t, double> messages_;       // key -> arrival time
  std::unordered_map<uint64_t, int> message_waiters_;   // key -> the rank waiting for it
  std::unordered_map<uint64_t, Meeting> meetings_;      // ring id * 2 + pass
  Meeting sync_;
  SimResult result_;
  std::vector<std::vector<RankMemory>> memory_;  // per rank, per action (track_memory)
};

}  // namespace

double SimResult::busy_s() const {
  double busy = 0.0;
  for (const RankTimeline& r : ranks) busy += r.busy_s;
  return busy;
}

int64_t SimResult::peak_memory_bytes() const {
  int64_t peak = 0;
  for (const RankTimeline& r : ranks) peak = std::max(peak, r.peak_memory_bytes);
  return peak;
}

double SimResult::bubble_fraction() const {
  const double busy = busy_s();
  if (busy <= 0.0) return 0.0;
  return (static_cast<double>(ranks.size()) * compute_end_s - busy) / busy;
}

absl::StatusOr<SimResult> SimulateStep(const StepPlan& plan, const CostModel& cost,
                                       const SimulatorOptions& options) {
  if (plan.ranks.empty()) return absl::InvalidArgumentError("the plan has no ranks");
  if (const auto* measured = options.measured_compute_s; measured != nullptr) {
    bool fits = measured->size() == plan.ranks.size();
    for (size_t r = 0; fits && r < plan.ranks.size(); ++r) {
      fits = (*measured)[r].size() == plan.ranks[r].actions.size();
    }
    if (!fits) {
      return absl::InvalidArgumentError(
          "measured compute times need one entry per action of every rank of the plan");
    }
  }
  return Simulation(plan, cost, options).Run();
}

}  // namespace loom
