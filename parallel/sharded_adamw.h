// ZeRO stage 1: AdamW whose moments are sharded over the members of a group. Each of the n
// members keeps m and v for one contiguous shard of the flat parameters; the shards are balanced
// (the first P mod n members hold one element more than the others), so any parameter count works,
// also fewer parameters than members (the last members then hold empty shards).
//
// A step: reduce-scatter the members' gradient contributions (each member receives the summed
// gradient of its shard), clip by the global norm, update the shard of the parameters, and
// all-gather the parameters so every member holds the whole updated model. ReduceScatter needs
// equal blocks, so the contributions are laid out in blocks of ceil(P/n) elements, one per shard
// and padded with zeros, in a buffer the optimizer owns; when n divides P the blocks are the
// shards themselves and the gradient buffer is reduced in place (no extra P floats per rank). The
// parameters come back with AllGatherV.
//
// Every element is updated by the same arithmetic as the unsharded AdamW (src/adamw.h), so a
// sharded run and a single-rank run agree bit for bit given the same gradient bits; the global
// norm differs from GradNorm's only by the order of its double additions.
//
// Buffers are host memory, for the `local` and `mpi` backends (`nccl` refuses them with an
// error). A failed step leaves the members' parameters and moments unusable: they may differ.
#ifndef LOOM_PARALLEL_SHARDED_ADAMW_H_
#define LOOM_PARALLEL_SHARDED_ADAMW_H_

#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "runtime/communicator.h"
#include "runtime/group.h"
#include "src/adamw.h"
#include "src/param_layout.h"
#include "src/tensor.h"

namespace loom {

class ShardedAdamW {
 public:
  // Fails if this rank is not a member of `group` or the group names a rank outside the world.
  // Local: no communication.
  static absl::StatusOr<std::unique_ptr<ShardedAdamW>> Create(
      Communicator& comm, const Group& group, const ParamLayout& layout, const AdamWConfig& config,
      Allocator* allocator = &Allocator::Global());

  // One step, collective over the group. params: the whole flat parameters, the same on every
  // member; on return the updated model, again the same on every member. grads: this member's
  // unreduced contribution to the flat gradient (the sum over members is the gradient), P floats,
  // overwritten as scratch. max_norm <= 0 disables clipping. Returns the global gradient norm
  // before clipping, the same bits on every member. A non-finite norm (a NaN or infinite
  // gradient) updates nothing: parameters, moments and the step count stay as they were.
  absl::StatusOr<double> Step(float* params, float* grads, float lr, double max_norm);

  // This member's shard of the flat parameters: [shard_begin, shard_end).
  size_t shard_begin() const { return shards_[static_cast<size_t>(me_)].begin; }
  size_t shard_end() const { return shards_[static_cast<size_t>(me_)].end; }
  int64_t step() const { return adamw_.step(); }

  // Checkpoints keep the unsharded format. GatherState fills `full` (an AdamW over the whole
  // layout) with every member's moments and the step count; collective over the group, so every
  // member ends with the full state. LoadState takes this member's shard and the step count from
  // a full state; local, and the group may differ from the one that saved it.
  absl::Status GatherState(AdamW& full);
  absl::Status LoadState(const AdamW& full);

 private:
  struct Shard {
    size_t begin, end;
  };
  ShardedAdamW(Communicator& comm, const Group& group, int me, std::vector<Shard> shards,
               const ParamLayout& layout, const AdamWConfig& config, Allocator* allocator);
  // The state must cover exactly the flat parameters.
  absl::Status CheckFull(const AdamW& full) const;
  // All-gathers every member's shard of `shard_data` (this member's elements) into `full`.
  absl::Status GatherShards(const float* shard_data, float* full);

  Communicator& comm_;
  Group group_;
  int me_;  // position in group_
  size_t num_params_;
  size_t block_;  // ceil(P / n): the reduce-scatter block
  std::vector<Shard> shards_;
  std::vector<size_t> counts_;  // shard sizes, for AllGatherV
  AdamW adamw_;
  // n * block_ floats when n does not divide P; empty otherwise.
  Buffer padded_;
};

}  // namespace loom

#endif  // LOOM_PARALLEL_SHARDED_ADAMW_H_
