// The StepPlan: the contract between planning and running one training step (DESIGN.md section 3).
//
// For one global batch it lists, for every rank, the ordered actions that rank performs. It is
// plain data (structs and vectors) so that three consumers can read the same thing: the validator
// proves it safe, the executor runs it with real tensors, the simulator times it with a cost model.
//
// Order on a rank, per micro-batch: the RingExchange actions of the rings the micro-batch joins
// (in ring id order), then Forward, then Backward; after the last micro-batch, one GradSync.
// Chunked sequences (ChunkFlow) relax this: the chunks of a sequence too long for one
// micro-batch run as micro-batches of their own on one rank, forward in order, each attending to
// the K/V of the earlier chunks (`context`, kept in the rank's K/V state store), and backward in
// reverse order; a chunk whose activations are not kept (`keep_activations`) is recomputed
// (Recompute) just before its Backward.
// A RingExchange is a meeting point: every member of the ring reaches its ring's action, and the
// compute actions of that micro-batch then run attention over the joined rings, at every layer, in
// the order the RingExchange actions are listed. The Backward of that micro-batch meets the same
// members again (the backward sends K/V and dK/dV around the ring). Ranks may run different
// numbers of micro-batches; the members of one ring run it in the same micro-batch slot
// (`micro_batch`), which is what makes the meeting explicit.
//
// Pipelines: with `stages` set, the model's layers are split into stages and every compute action
// names the stage it runs. A micro-batch runs through the stages on different ranks, one Forward
// per stage, passing its activations forward (a Forward receives its input from `prev_rank` and
// sends its output to `next_rank`) and their gradients back (a Backward receives from `next_rank`
// and sends to `prev_rank`). Sends never wait; a receive waits for its send. Each stage's
// RingExchange actions stand before that stage's Forward (every stage has rings, and ring ids, of
// its own). A Backward may leave the stage's weight gradients to a later WeightGrad action
// (zero-bubble schedules), keeping the activations until then. Micro-batch slots are per pipeline replica: the
// same slot on two replicas names different tokens, which prev_rank / next_rank tell apart.
#ifndef LOOM_PARALLEL_STEP_PLAN_H_
#define LOOM_PARALLEL_STEP_PLAN_H_

#include <cstdint>
#include <string>
#include <vector>

namespace loom {

// One sequence (document) of the global batch. Sequence ids are unique within a batch.
struct SequenceSpec {
  int64_t id = 0;
  int64_t length = 0;

  friend bool operator==(const SequenceSpec&, const SequenceSpec&) = default;
};

// Tokens [begin, end) of one sequence. Positions within the document are the token indices, so the
// range also gives RoPE positions and the causal extent of each token.
struct TokenRange {
  int64_t sequence_id = 0;
  int64_t begin = 0;
  int64_t end = 0;

  int64_t size() const { return end - begin; }
  friend bool operator==(const TokenRange&, const TokenRange&) = default;
};

enum class ActionKind {
  kForward,
  kBackward,
  kRingExchange,
  kGradSync,
  kRecompute,
  kWeightGrad,
};

// A pipeline stage: layers [first_layer, last_layer) of the model. The first stage also embeds the
// tokens; the last also runs the final norm, the output head and the loss.
struct StageSpec {
  int first_layer = 0;
  int last_layer = 0;

  friend bool operator==(const StageSpec&, const StageSpec&) = default;
};

// Fields beyond `kind` are used by the kinds named in their comments and left default otherwise.
struct Action {
  ActionKind kind = ActionKind::kForward;
  // Forward, Backward, Recompute, WeightGrad, RingExchange: the micro-batch slot. Members of a
  // ring use the same slot.
  int micro_batch = 0;
  // The same kinds: the pipeline stage (an index into StepPlan::stages; 0 without a pipeline).
  int stage = 0;
  // Forward and Backward in a pipeline: the ranks that run this micro-batch's previous and next
  // stage, -1 at the first and the last stage.
  int prev_rank = -1;
  int next_rank = -1;
  // Backward: the weight gradients of the stage's linear layers are left to a WeightGrad action
  // of the same micro-batch and stage later on this rank (ZB-H1).
  bool defer_weight_grads = false;
  // Forward, Backward: every token the rank computes in this micro-batch (whole documents and its
  // shares of ring sequences). RingExchange: this rank's shares of the ring's sequences, whose K/V
  // travel the ring.
  std::vector<TokenRange> tokens;
  // Forward, Recompute, Backward of a chunk: the earlier tokens of its sequence, {id, 0, begin},
  // whose K/V (computed by this rank's earlier chunks) its queries also attend to. Empty otherwise.
  std::vector<TokenRange> context;
  // Forward: false drops the activations after the forward; a Recompute before the Backward
  // makes them again (ChunkFlow keeps only K chunks' activations).
  bool keep_activations = true;
  // Forward: the fraction of the activations it keeps for the backward that wait in host memory
  // instead of on the GPU (ByteScale's selective offloading): copied out while the forward
  // computes, back in while the backward does. Only the rest counts against the GPU's memory.
  double offload_ratio = 0.0;

  // RingExchange: the ring's tag (unique in the plan), its members in ring order (a member sends to
  // the next and receives from the previous, wrapping around), and the bytes every member sends to
  // its successor at each ring step of one layer's forward (K and V of the largest share; all
  // members send the same size so that every receive is posted for the size that arrives).
  int ring_id = -1;
  std::vector<int> ring;
  int64_t bytes_per_step = 0;

  // GradSync: all-reduce of the flat gradient over all ranks. The loss is a mean over every target
  // token of the global batch, so each rank scales its summed gradient by 1 / total_targets.
  int64_t gradient_bytes = 0;
  int64_t total_targets = 0;

  friend bool operator==(const Action&, const Action&) = default;
};

struct RankPlan {
  std::vector<Action> actions;

  friend bool operator==(const RankPlan&, const RankPlan&) = default;
};

struct StepPlan {
  std::string planner;                  // which planner made it ("static", "hdp", "balanced")
  // Pipelines: the stages in model order (empty: one stage, the whole model), the ranks of one
  // pipeline replica, and the schedule that ordered the actions ("gpipe", "1f1b", "interleaved",
  // "zb-h1"; empty without a pipeline).
  std::vector<StageSpec> stages;
  int pipeline_size = 1;
  std::string schedule;
  int64_t capacity_tokens = 0;          // C: tokens per rank per micro-batch
  int64_t activation_budget_bytes = 0;  // every rank's activation memory budget
  std::vector<SequenceSpec> sequences;  // the global batch
  std::vector<RankPlan> ranks;          // one per world rank

  int world_size() const { return static_cast<int>(ranks.size()); }
  int num_stages() const { return stages.empty() ? 1 : static_cast<int>(stages.size()); }
  friend bool operator==(const StepPlan&, const StepPlan&) = default;
};

// "forward", "backward", "ring_exchange", "grad_sync", "recompute", "weight_grad".
const char* ActionKindName(ActionKind kind);

// Tokens in a list of ranges.
int64_t TokenCount(const std::vector<TokenRange>& ranges);

// Layers [first, last) of `stage` in a model of `n_layers` (all of them without stages).
StageSpec StageOf(const StepPlan& plan, int stage, int n_layers);

// Target tokens of a batch: every token but the last of each sequence has one.
int64_t TotalTargets(const std::vector<SequenceSpec>& sequences);

}  // namespace loom

#endif  // LOOM_PARALLEL_STEP_PLAN_H_
