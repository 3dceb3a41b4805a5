// Pipeline parallelism over a dynamic mesh: world = pp x D ranks, D pipeline replicas of pp ranks.
// A data-parallel plan over the D replicas (any planner: balanced HDP with its rings, chunks,
// the static mesh) says which micro-batches each replica runs; every micro-batch then runs
// through the pipeline's stages (stage_partition.h) in the order a schedule gives
// (pipeline_schedule.h). Rank k * D + d is replica d's pipeline rank k, so the ranks of one stage
// are D consecutive ranks, and a ring of replicas becomes, at every stage, a ring of that
// stage's ranks (with a ring id of its own).
//
// Variable-cost micro-batches (a packed micro-batch of short documents costs less than one long
// document's share, a late chunk of a long sequence more than an early one) leave bubbles that the
// textbook schedules do not plan for. `auto` chooses for each step the schedule and the order of
// each replica's micro-batches that give the shortest simulated step (simulator.h) within the
// memory that 1F1B needs: candidates are every schedule that fits the chunk count, each with the
// micro-batches in planned order, costliest first, cheapest first, with the two cheapest at the
// ends (they set the pipeline's fill and drain) and the others costliest first, and with the
// dependent chunks first. Where a replica has a long sequence's dependent chunks, every candidate
// is also tried with those chunks cut anew by cost for the pipeline (token_slicing.h: more,
// shorter slices toward the sequence's end, none longer than the planned chunks, none keeping
// activations the planned chunks dropped).
//
// What may move and what may not: a ring's micro-batch keeps its slot position on every member
// replica (members meet it at the same point of their schedules, so ranks of different replicas
// never wait on each other in a cycle: each replica's ring positions, and the counting rule of
// the schedules, are the same), and a long sequence's dependent chunks keep their order (forward
// in order, backward in reverse). Empty slots of a replica (HDP slots it has no work in) hold
// their place while the schedule is made and are then dropped.
#ifndef LOOM_PARALLEL_PIPELINE_PLANNER_H_
#define LOOM_PARALLEL_PIPELINE_PLANNER_H_

#include <optional>

#include "absl/status/statusor.h"
#include "parallel/cost_model.h"
#include "parallel/pipeline_schedule.h"
#include "parallel/step_plan.h"

namespace loom {

struct PipelineOptions {
  int pp = 1;   // ranks per pipeline replica
  int vpp = 1;  // model chunks per rank (interleaved)
  std::optional<PipelineScheduleKind> schedule;  // empty: auto
};

// `replicas` is a plan over the D replicas, as if each were one rank running the whole model.
absl::StatusOr<StepPlan> PlanPipeline(const StepPlan& replicas, const PipelineOptions& options,
                                      const CostModel& cost);

}  // namespace loom

#endif  // LOOM_PARALLEL_PIPELINE_PLANNER_H_
