// The executor: runs one rank's part of a StepPlan with real tensors over a Communicator, so that
// the gradient every rank ends with is that of single-rank training on the whole global batch
// (DESIGN.md section 4).
//
// Per micro-batch the rank builds one TokenBatch from its Forward action's tokens, ordered as its
// tokens kept whole first, then each ring's shares in the order the RingExchange actions are
// listed; documents are named by their sequence id and positions stay positions within the
// sequence. Attention then runs per part: the whole-kept tokens with the local kernel, each ring's
// tokens with RingAttention over that ring's members. Every member knows every other member's
// shares from the plan, so rings start without any collective (one global group, only
// point-to-point messages, DESIGN.md section 1). Ring `r` uses tags tag_base + 2r and + 2r + 1.
//
// GradSync: the loss of every micro-batch is scaled by 1 / (targets of the global batch), so the
// sum over ranks of their gradients is the gradient of the global token-mean loss; it is summed
// with one all-reduce over the world (or left to the caller, e.g. ZeRO's reduce-scatter).
#ifndef LOOM_PARALLEL_STEP_EXECUTOR_H_
#define LOOM_PARALLEL_STEP_EXECUTOR_H_

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"
#include "data/packed_batch.h"
#include "parallel/step_plan.h"
#include "runtime/communicator.h"
#include "src/model.h"

namespace loom {

struct ExecutorOptions {
  // false: leave this rank's unreduced, already scaled contribution in model.grads() (a sharded
  // optimizer reduce-scatters it).
  bool all_reduce_gradients = true;
  int tag_base = 100;
  // When set, receives the thread CPU seconds of each of this rank's actions, in plan order: the
  // compute of an action without the time it waited for peers (what a benchmark replays through
  // the simulator to see a schedule's bubble under measured costs).
  std::vector<double>* action_cpu_s = nullptr;
};

struct StepOutcome {
  double loss_sum = 0.0;    // sum of the token losses over the global batch, the same on every rank
  int64_t targets = 0;      // target tokens of the global batch
  int64_t rank_tokens = 0;  // tokens this rank computed
  int micro_batches = 0;    // micro-batches this rank ran
};

// Every rank of the plan's world calls it with the same plan and batch (sequence i of the plan is
// sequence i of the packed batch). Overwrites model.grads(). Errors name the rank, the
// micro-batch and the ring or peer that failed; a plan that does not match the batch or the world
// is rejected before any message is sent.
absl::StatusOr<StepOutcome> ExecuteStep(Communicator& comm, const StepPlan& plan,
                                        const PackedBatch& batch, Model& model,
                                        const ExecutorOptions& options = {});

}  // namespace loom

#endif  // LOOM_PARALLEL_STEP_EXECUTOR_H_
