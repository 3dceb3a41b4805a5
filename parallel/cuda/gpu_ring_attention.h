// Ring self-attention on GPUs: the algorithm and message pattern of RingAttention
// (parallel/ring_attention.h) on device memory, with the flash kernels of
// src/cuda/flash_attention.h and K/V carried by a communicator that takes device pointers (the
// nccl backend). Each member keeps its queries; at step s it holds the K/V block of member
// (i - s) mod c, folds its partial (out, lse) in with FlashAttentionMerge, and in the backward
// each block's fp32 dK/dV accumulator follows it one hop behind and arrives home after a full
// turn. Fully masked steps are not computed. Messages use tags `tag` (K/V) and `tag + 1` (dK/dV).
//
// Overlap: at every step the exchange of the next block (and, in the backward, of the previous
// step's finished accumulator) runs on a host thread through Communicator::Exchange, which
// returns once the data is in place, while the calling thread queues the flash kernels of the
// block already here on the compute stream. The exchange thread first waits for an event recorded
// on the compute stream, so a buffer is sent only once it is complete and overwritten only once
// the kernels reading it are done. Every wait is bounded by the communicator's timeout; a failure
// names the ring step and the peers.
//
// Precision (src/cuda/elementwise.h): q, k, v and out are the operand type of `precision` (fp32
// or bf16), lse, delta, dout and every gradient fp32. K/V blocks travel in the operand type,
// dK/dV accumulators in fp32.
//
// Inputs must be ready in the order of ctx.compute() (queued there or synchronised before the
// call); results are queued on ctx.compute() when a call returns.
#ifndef LOOM_PARALLEL_CUDA_GPU_RING_ATTENTION_H_
#define LOOM_PARALLEL_CUDA_GPU_RING_ATTENTION_H_

#include <cuda_runtime_api.h>

#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "parallel/context_parallel_attention.h"
#include "runtime/communicator.h"
#include "runtime/group.h"
#include "src/cuda/device_buffer.h"
#include "src/cuda/device_context.h"
#include "src/cuda/flash_attention.h"
#include "src/cuda/gemm.h"
#include "src/kernels/attention.h"

namespace loom {

class GpuRingAttention {
 public:
  // `comm` must carry GPU memory (the nccl backend) on ctx's device. Every member's tokens are
  // given (GroupTokens::FromMembers), so no collective runs: GroupTokens::Gather exchanges host
  // buffers, which the nccl backend refuses. The (doc, pos) arrays of all members go to the
  // device here, once. `comm` and `ctx` must outlive the object.
  static absl::StatusOr<std::unique_ptr<GpuRingAttention>> Create(
      Communicator& comm, gpu::DeviceContext& ctx, const Group& group,
      const AttentionShape& shape, gpu::Precision precision, GroupTokens tokens, int tag);
  ~GpuRingAttention();
  GpuRingAttention(const GpuRingAttention&) = delete;
  GpuRingAttention& operator=(const GpuRingAttention&) = delete;

  // Device pointers. q: [n, n_heads, D], k, v: [n, n_kv_heads, D] (operand type) of this
  // member's n tokens. Writes out [n, n_heads, D] (operand type) and lse [n, n_heads] (fp32).
  absl::Status Forward(void* out, float* lse, const void* q, const void* k, const void* v);
  // Accumulates (+=, fp32) dq, dk, dv of this member's tokens from dout (fp32), the final lse
  // and delta (FlashAttentionDelta of the final output).
  absl::Status Backward(float* dq, float* dk, float* dv, const float* dout, const void* q,
                        const void* k, const void* v, const float* lse, const float* delta);

  // Ring steps whose kernels were skipped because the block was fully masked, over all Forward
  // and Backward calls so far.
  int skipped_steps() const { return skipped_steps_; }
  gpu::Precision precision() const { return precision_; }

 private:
  GpuRingAttention(Communicator& comm, gpu::DeviceContext& ctx, Group group,
                   const AttentionShape& shape, gpu::Precision precision, GroupTokens tokens,
                   int tag);
  absl::Status Allocate();
  absl::Status AllocateGradients();
  template <typename T>
  absl::Status ForwardImpl(T* out, float* lse, const T* q, const T* k, const T* v);
  template <typename T>
  absl::Status BackwardImpl(float* dq, float* dk, float* dv, const float* dout, const T* q,
                            const T* k, const T* v, const float* lse, const float* delta);
  // Member whose block this member holds at ring step s.
  int OriginAt(int step) const;
  // Elements of one member's K (or V, dK, dV).
  size_t KvElements(int member) const;
  // Member's tokens in the device copy of every member's (doc, pos).
  gpu::DeviceSpans Spans(int member) const;
  // Waits (at most the communicator's timeout) until the compute stream has passed ready_, then
  // runs the exchange; `what` prefixes any error.
  absl::Status ExchangeWhenReady(const std::vector<SendSpec>& sends,
                                 const std::vector<RecvSpec>& recvs, const std::string& what);

  Communicator& comm_;
  gpu::DeviceContext& ctx_;
  Group group_;
  AttentionShape shape_;
  gpu::Precision precision_;
  GroupTokens tokens_;
  int tag_;
  int next_;  // world ranks of the ring neighbours
  int prev_;
  int skipped_steps_ = 0;

  gpu::DeviceBuffer doc_;  // int32, every member's tokens in group order
  gpu::DeviceBuffer pos_;
  gpu::DeviceBuffer blocks_[2];  // K|V of the largest member, operand type
  gpu::DeviceBuffer part_out_;   // this member's partial out (operand type) and lse (fp32)
  gpu::DeviceBuffer part_lse_;
  gpu::DeviceBuffer grads_[2];  // dK|dV accumulators of the largest member, fp32; backward only
  gpu::DeviceBuffer scratch_;   // one step's dK|dV contribution, fp32
  cudaEvent_t ready_ = nullptr;  // recorded on the compute stream before each exchange
};

}  // namespace loom

#endif  // LOOM_PARALLEL_CUDA_GPU_RING_ATTENTION_H_
