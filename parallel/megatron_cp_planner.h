// The open baseline for dynamic context parallelism: Megatron-LM's hybrid context parallel
// scheduler (megatron/core/pipeline_parallel/hybrid_cp_schedule.py, BalancedCPScheduler), as its
// documentation and comments describe it, re-expressed as a loom planner so that the simulator
// can time it on the same batches as loom's planners.
//
// What it does, and where it differs from HDP:
//  - a sequence of L tokens runs on cp(L) = the next power of two >= L / C ranks (C: tokens per
//    rank, `max_seq_len_per_rank`), since Megatron keeps a process group for every power-of-two
//    size only;
//  - its estimated workload is L^2 / cp(L) per member: attention only, the linear layers left out;
//  - sequences go longest first into "groups": each group is a set of consecutive ranks of one CP
//    size running a list of sequences, one per micro-batch. A sequence opens a new group while
//    enough ranks are free, else joins the least-loaded group of its size; a sequence with no
//    place is left for the next round. A round ends once it has moved on to a smaller CP size
//    than its first and the loads are within 5% of each other, or when nothing more fits; then
//    the most-loaded group gives back its last sequence while that narrows the spread, and free
//    ranks are filled by doubling the CP size of a smallest group. Rounds repeat until every
//    sequence has run.
// Megatron puts a barrier between rounds; a StepPlan has no barrier, so the plan runs rounds back
// to back with only the rings' own meetings, which can only make the baseline faster.
#ifndef LOOM_PARALLEL_MEGATRON_CP_PLANNER_H_
#define LOOM_PARALLEL_MEGATRON_CP_PLANNER_H_

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"
#include "parallel/cost_model.h"
#include "parallel/step_plan.h"

namespace loom {

struct MegatronCpOptions {
  int world_size = 1;
  int64_t capacity_tokens = 0;  // C: tokens per rank (max_seq_len_per_rank)
  double balance_slack = 0.05;  // a round may end once max - min load <= slack * max
};

// Megatron's CP size of a sequence: the next power of two >= length / C, at least 1.
int MegatronCpSize(int64_t length, int64_t capacity_tokens);

// Fails on bad options, or naming the first sequence whose CP size exceeds the world.
absl::StatusOr<StepPlan> PlanMegatronHybridCp(const std::vector<SequenceSpec>& sequences,
                                              const MegatronCpOptions& options,
                                              const CostModel& cost);

}  // namespace loom

#endif  // LOOM_PARALLEL_MEGATRON_CP_PLANNER_H_
