// The simulator: replays a StepPlan as a discrete-event simulation under the cost model, so that
// a plan can be timed without running it (DESIGN.md section 3, the third consumer of a plan).
//
// Every rank runs its actions in order; an action starts when the rank is free and its inputs are
// there:
//  - a pipeline Forward waits for its input activations from `prev_rank`, a Backward for the
//    output gradient from `next_rank`; a message leaves when the action that produces it ends and
//    takes the link's latency + bytes / bandwidth (the cost model's intra- or inter-node tier);
//    sends never hold up the sender;
//  - a Forward or Backward whose micro-batch joins rings starts when every member of those rings
//    has reached its own Forward (Backward) of them: ring attention runs layer by layer in step
//    with the other members. Members are aligned at the start only; each then takes its own time;
//  - GradSync is an all-reduce over the world: it starts when the last rank reaches it.
// A compute action lasts CostModel::ComputeSeconds plus the part of its ring messages that
// compute does not hide: per layer and ring step, a member sends K/V (the forward) or K/V and
// dK/dV (the backward, twice the bytes; three times under per-layer recompute, which sends K/V
// again for the second forward) while it computes attention against the block it holds. With
// overlap a step costs the larger of the two, without it their sum. An offloading Forward
// (Action::offload_ratio) copies that share of its activations to host memory while it computes
// and its Backward copies them back; a copy longer than the action's compute adds the rest.
//
// Memory: each rank's bytes over time are RankMemoryTimeline's (the validator's figures, with
// offloaded activations off the GPU) placed at the simulated start of each action.
//
// Not modelled: link contention (messages of different pairs travel independently), and kernels
// of one rank running concurrently.
#ifndef LOOM_PARALLEL_SIMULATOR_H_
#define LOOM_PARALLEL_SIMULATOR_H_

#include <vector>

#include "absl/status/statusor.h"
#include "parallel/cost_model.h"
#include "parallel/step_plan.h"

namespace loom {

struct SimulatorOptions {
  bool overlap_ring_messages = true;
  // Compute seconds of every rank's actions measured on a real run (ExecutorOptions::
  // action_cpu_s), used instead of the cost model's; null: the cost model.
  const std::vector<std::vector<double>>* measured_compute_s = nullptr;
  // Memory per rank over time: what RankMemoryTimeline says each action holds, from the
  // action's start (the validator's prediction, laid on the simulated clock). Off by default:
  // the pipeline planner's `auto` simulates a dozen candidates per step and needs only times.
  bool track_memory = false;
};

// From `t_s` on (until the next point), a rank holds `bytes` on its GPU beyond the model states.
struct MemoryPoint {
  double t_s = 0.0;
  int64_t bytes = 0;

  friend bool operator==(const MemoryPoint&, const MemoryPoint&) = default;
};

struct ActionTime {
  double start_s = 0.0;  // when it could start: the rank free and its inputs there
  double end_s = 0.0;
  double compute_s = 0.0;  // of end - start, the compute (the rest: exposed ring messages)
};

struct RankTimeline {
  std::vector<ActionTime> actions;  // one per action of the rank's plan
  double busy_s = 0.0;              // compute actions' compute time
  double compute_end_s = 0.0;       // end of the rank's last compute action
  double end_s = 0.0;               // end of its last action
  // With track_memory: at each compute action's start, what the rank holds while it runs (until
  // the next one starts); the largest of them.
  std::vector<MemoryPoint> memory;
  int64_t peak_memory_bytes = 0;
};

struct SimResult {
  double step_s = 0.0;          // when the last rank ends (gradient sync included)
  double compute_end_s = 0.0;   // when the last compute action ends
  std::vector<RankTimeline> ranks;

  double busy_s() const;
  int64_t peak_memory_bytes() const;  // over all ranks (track_memory)
  // Idle over busy compute time until the last compute action ends, over all ranks:
  // (ranks * compute_end - busy) / busy. For a pipeline of p stages with m equal micro-batches
  // under 1F1B this is the textbook (p - 1) / m; without a pipeline it is the imbalance.
  double bubble_fraction() const;
};

// Fails with FAILED_PRECONDITION, naming the ranks and what they wait for, when the plan cannot
// finish (a receive without its send, a ring member that never arrives); other plan faults are
// the validator's to find.
absl::StatusOr<SimResult> SimulateStep(const StepPlan& plan, const CostModel& cost,
                                       const SimulatorOptions& options = {});

}  // namespace loom

#endif  // LOOM_PARALLEL_SIMULATOR_H_
