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
// the order the RingExchange actions are listed. Ranks may run different numbers of micro-batches;
// the members of one ring run it in the same micro-batch slot (`micro_batch`), which is what makes
// the meeting explicit.
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

enum class ActionKind { kForward, kBackward, kRingExchange, kGradSync, kRecompute };

// Fields beyond `kind` are used by the kinds named in their comments and left default otherwise.
struct Action {
  ActionKind kind = ActionKind::kForward;
  // Forward, Backward, RingExchange: the micro-batch slot. Members of a ring use the same slot.
  int micro_batch = 0;
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
  int64_t capacity_tokens = 0;          // C: tokens per rank per micro-batch
  int64_t activation_budget_bytes = 0;  // every rank's activation memory budget
  std::vector<SequenceSpec> sequences;  // the global batch
  std::vector<RankPlan> ranks;          // one per world rank

  int world_size() const { return static_cast<int>(ranks.size()); }
  friend bool operator==(const StepPlan&, const StepPlan&) = default;
};

// "forward", "backward", "ring_exchange", "grad_sync", "recompute".
const char* ActionKindName(ActionKind kind);

// Tokens in a list of ranges.
int64_t TokenCount(const std::vector<TokenRange>& ranges);

// Target tokens of a batch: every token but the last of each sequence has one.
int64_t TotalTargets(const std::vector<SequenceSpec>& sequences);

}  // namespace loom

#endif  // LOOM_PARALLEL_STEP_PLAN_H_
