#include "parallel/cuda/gpu_ring_attention.h"

#include <cuda_bf16.h>

#include <algorithm>
#include <future>
#include <optional>
#include <type_traits>
#include <utility>

#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "src/cuda/cuda_check.h"
#include "src/cuda/elementwise.h"
#include "src/status_macros.h"

namespace loom {
namespace {

constexpr int kKvTagOffset = 0;
constexpr int kGradTagOffset = 1;

template <typename T>
constexpr DataType kWireType = std::is_same_v<T, float> ? DataType::kFloat32 : DataType::kBFloat16;

// The first failure of a step, in the order the step's parts ran.
absl::Status FirstError(const absl::Status& a, const absl::Status& b) { return a.ok() ? b : a; }

// An exchange running on its own host thread. Joined before anything it touches is reused, and on
// every return path (the future's destructor blocks).
class PendingExchange {
 public:
  void Start(std::future<absl::Status> future) { future_ = std::move(future); }
  absl::Status Join() { return future_.valid() ? future_.get() : absl::OkStatus(); }

 private:
  std::future<absl::Status> future_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<GpuRingAttention>> GpuRingAttention::Create(
    Communicator& comm, gpu::DeviceContext& ctx, const Group& group, const AttentionShape& shape,
    gpu::Precision precision, GroupTokens tokens, int tag) {
  // Written so that max_tag() = INT_MAX (nccl) does not overflow.
  if (tag < 0 || tag > comm.max_tag() - kGradTagOffset) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "GPU ring attention tag %d: tags %d and %d must be in [0, %d]", tag, tag,
        static_cast<int64_t>(tag) + kGradTagOffset, comm.max_tag()));
  }
  // The host backends would read device pointers as host memory.
  if (comm.backend() != Backend::kNccl) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "GPU ring attention needs a communicator that carries GPU memory (nccl), got %s",
        BackendName(comm.backend())));
  }
  if (shape.n_heads <= 0 || shape.n_kv_heads <= 0 || shape.n_heads % shape.n_kv_heads != 0 ||
      shape.head_dim <= 0 || shape.head_dim % 8 != 0 || shape.head_dim > 256) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "GPU ring attention: shape %d/%d heads, head_dim %d: heads must divide evenly and "
        "head_dim be a multiple of 8 up to 256",
        shape.n_heads, shape.n_kv_heads, shape.head_dim));
  }
  const std::optional<int> me = group.IndexOf(comm.rank());
  if (!me.has_value() || *me != tokens.me() || tokens.group_size() != group.size()) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "GPU ring attention over group %s: rank %d's token layout is for member %d of %d",
        group.ToString(), comm.rank(), tokens.me(), tokens.group_size()));
  }
  std::unique_ptr<GpuRingAttention> ring(
      new GpuRingAttention(comm, ctx, group, shape, precision, std::move(tokens), tag));
  if (absl::Status s = ring->Allocate(); !s.ok()) {
    return WithContext(s, absl::StrFormat("GPU ring attention over group %s on rank %d",
                                          group.ToString(), comm.rank()));
  }
  return ring;
}

GpuRingAttention::GpuRingAttention(Communicator& comm, gpu::DeviceContext& ctx, Group group,
                                   const AttentionShape& shape, gpu::Precision precision,
                                   GroupTokens tokens, int tag)
    : comm_(comm),
      ctx_(ctx),
      group_(std::move(group)),
      shape_(shape),
      precision_(precision),
      tokens_(std::move(tokens)),
      tag_(tag),
      next_(group_.NextOf(tokens_.me())),
      prev_(group_.PrevOf(tokens_.me())) {}

GpuRingAttention::~GpuRingAttention() {
  // The allocator reuses freed blocks without tracking streams: let the kernels still reading
  // this object's buffers finish first.
  if (ctx_.MakeCurrent().ok()) (void)cudaStreamSynchronize(ctx_.compute());
  if (ready_ != nullptr) (void)cudaEventDestroy(ready_);
}

absl::Status GpuRingAttention::Allocate() {
  LOOM_RETURN_IF_ERROR(ctx_.MakeCurrent());
  cudaStream_t stream = ctx_.compute();
  gpu::DeviceAllocator* allocator = ctx_.allocator();
  const TokenSpans all = tokens_.all_spans();
  const size_t total = static_cast<size_t>(all.n);
  LOOM_ASSIGN_OR_RETURN(doc_,
                        gpu::DeviceBuffer::Create(allocator, gpu::DType::kI32, total, stream));
  LOOM_ASSIGN_OR_RETURN(pos_,
                        gpu::DeviceBuffer::Create(allocator, gpu::DType::kI32, total, stream));
  if (total > 0) {
    LOOM_RETURN_IF_ERROR(doc_.CopyFromHostI32(all.doc, total, stream));
    LOOM_RETURN_IF_ERROR(pos_.CopyFromHostI32(all.pos, total, stream));
  }
  const gpu::DType operand = gpu::OperandType(precision_);
  const size_t block = 2 * static_cast<size_t>(tokens_.max_count()) * shape_.n_kv_heads *
                       shape_.head_dim;
  for (gpu::DeviceBuffer& b : blocks_) {
    LOOM_ASSIGN_OR_RETURN(b, gpu::DeviceBuffer::Create(allocator, operand, block, stream));
  }
  const size_t rows = static_cast<size_t>(tokens_.count(tokens_.me())) * shape_.n_heads;
  LOOM_ASSIGN_OR_RETURN(part_out_, gpu::DeviceBuffer::Create(allocator, operand,
                                                             rows * shape_.head_dim, stream));
  LOOM_ASSIGN_OR_RETURN(part_lse_,
                        gpu::DeviceBuffer::Create(allocator, gpu::DType::kF32, rows, stream));
  LOOM_CUDA_RETURN_IF_ERROR(cudaEventCreateWithFlags(&ready_, cudaEventDisableTiming));
  return absl::OkStatus();
}

absl::Status GpuRingAttention::AllocateGradients() {
  if (scratch_.data() != nullptr || tokens_.max_count() == 0) return absl::OkStatus();
  cudaStream_t stream = ctx_.compute();
  const size_t block = 2 * static_cast<size_t>(tokens_.max_count()) * shape_.n_kv_heads *
                       shape_.head_dim;
  for (gpu::DeviceBuffer& b : grads_) {
    LOOM_ASSIGN_OR_RETURN(
        b, gpu::DeviceBuffer::Create(ctx_.allocator(), gpu::DType::kF32, block, stream));
  }
  LOOM_ASSIGN_OR_RETURN(
      scratch_, gpu::DeviceBuffer::Create(ctx_.allocator(), gpu::DType::kF32, block, stream));
  return absl::OkStatus();
}

int GpuRingAttention::OriginAt(int step) const {
  const int c = group_.size();
  return ((tokens_.me() - step) % c + c) % c;
}

size_t GpuRingAttention::KvElements(int member) const {
  return static_cast<size_t>(tokens_.count(member)) * shape_.n_kv_heads * shape_.head_dim;
}

gpu::DeviceSpans GpuRingAttention::Spans(int member) const {
  const int64_t offset = tokens_.offset(member);
  return gpu::DeviceSpans{doc_.as<const int32_t>() + offset, pos_.as<const int32_t>() + offset,
                          tokens_.count(member)};
}

absl::Status GpuRingAttention::ExchangeWhenReady(const std::vector<SendSpec>& sends,
                                                 const std::vector<RecvSpec>& recvs,
                                                 const std::string& what) {
  if (absl::Status s = ctx_.MakeCurrent(); !s.ok()) return WithContext(s, what);
  // The nccl backend's stream does not wait for ours: the send buffers must be complete, and the
  // kernels reading the receive buffers done, before the messages launch.
  const absl::Time deadline = absl::Now() + comm_.timeout();
  absl::Duration nap = absl::Microseconds(2);
  for (;;) {
    const cudaError_t e = cudaEventQuery(ready_);
    if (e == cudaSuccess) break;
    if (e != cudaErrorNotReady) {
      return WithContext(gpu::CudaStatus(e, "waiting for the compute stream"), what);
    }
    if (absl::Now() >= deadline) {
      return absl::DeadlineExceededError(absl::StrFormat(
          "%s: timed out (timeout %s) waiting for the compute stream to finish the buffers",
          what, absl::FormatDuration(comm_.timeout())));
    }
    absl::SleepFor(nap);
    nap = std::min(2 * nap, absl::Microseconds(100));
  }
  return WithContext(comm_.Exchange(sends, recvs), what);
}

absl::Status GpuRingAttention::Forward(void* out, float* lse, const void* q, const void* k,
                                       const void* v) {
  if (precision_ == gpu::Precision::kFp32) {
    return ForwardImpl<float>(static_cast<float*>(out), lse, static_cast<const float*>(q),
                              static_cast<const float*>(k), static_cast<const float*>(v));
  }
  return ForwardImpl<__nv_bfloat16>(
      static_cast<__nv_bfloat16*>(out), lse, static_cast<const __nv_bfloat16*>(q),
      static_cast<const __nv_bfloat16*>(k), static_cast<const __nv_bfloat16*>(v));
}

absl::Status GpuRingAttention::Backward(float* dq, float* dk, float* dv, const float* dout,
                                        const void* q, const void* k, const void* v,
                                        const float* lse, const float* delta) {
  if (precision_ == gpu::Precision::kFp32) {
    return BackwardImpl<float>(dq, dk, dv, dout, static_cast<const float*>(q),
                               static_cast<const float*>(k), static_cast<const float*>(v), lse,
                               delta);
  }
  return BackwardImpl<__nv_bfloat16>(dq, dk, dv, dout, static_cast<const __nv_bfloat16*>(q),
                                     static_cast<const __nv_bfloat16*>(k),
                                     static_cast<const __nv_bfloat16*>(v), lse, delta);
}

template <typename T>
absl::Status GpuRingAttention::ForwardImpl(T* out, float* lse, const T* q, const T* k,
                                           const T* v) {
  LOOM_RETURN_IF_ERROR(ctx_.MakeCurrent());
  const int c = group_.size(), me = tokens_.me(), n = tokens_.count(me);
  cudaStream_t stream = ctx_.compute();
  T* blocks[2] = {blocks_[0].as<T>(), blocks_[1].as<T>()};
  const size_t own = KvElements(me);
  // The caller's k and v are never sent themselves: the copy orders them on the compute stream,
  // which the exchange thread waits for.
  if (own > 0) {
    LOOM_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(blocks[0], k, own * sizeof(T),
                                              cudaMemcpyDeviceToDevice, stream));
    LOOM_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(blocks[0] + own, v, own * sizeof(T),
                                              cudaMemcpyDeviceToDevice, stream));
  }
  for (int s = 0; s < c; ++s) {
    const int origin = OriginAt(s);
    const size_t el = KvElements(origin);
    const T* cur = blocks[s % 2];
    const std::string step = absl::StrFormat("ring attention forward step %d/%d", s + 1, c);
    PendingExchange exchange;
    if (s + 1 < c) {
      const int incoming = OriginAt(s + 1);
      std::vector<SendSpec> sends = {
          {ConstBufferView(cur, 2 * el, kWireType<T>), next_, tag_ + kKvTagOffset}};
      std::vector<RecvSpec> recvs = {{BufferView(blocks[(s + 1) % 2], 2 * KvElements(incoming),
                                                 kWireType<T>),
                                      prev_, tag_ + kKvTagOffset}};
      std::string what = absl::StrFormat(
          "%s: sending K/V of rank %d to rank %d, receiving K/V of rank %d from rank %d", step,
          group_.world_rank(origin), next_, group_.world_rank(incoming), prev_);
      LOOM_CUDA_RETURN_IF_ERROR(cudaEventRecord(ready_, stream));
      exchange.Start(std::async(std::launch::async,
                                [this, sends = std::move(sends), recvs = std::move(recvs),
                                 what = std::move(what)] {
                                  return ExchangeWhenReady(sends, recvs, what);
                                }));
    }
    absl::Status computed;
    if (tokens_.Visible(origin)) {
      // Step 0 holds this member's own block, visible whenever it has tokens (each query sees
      // itself), so it writes the running result directly and no fill of -infinity is needed.
      const bool first = s == 0;
      T* o = first ? out : part_out_.as<T>();
      float* l = first ? lse : part_lse_.as<float>();
      computed = gpu::CudaStatus(
          gpu::FlashAttentionForward<T>(o, l, q, cur, cur + el, Spans(me), Spans(origin), shape_,
                                        /*causal=*/true, stream),
          absl::StrFormat("%s: attention on the block of rank %d", step,
                          group_.world_rank(origin)));
      if (computed.ok() && !first) {
        computed = gpu::CudaStatus(
            gpu::FlashAttentionMerge<T>(out, lse, part_out_.as<T>(), part_lse_.as<float>(), n,
                                        shape_, stream),
            absl::StrFormat("%s: merging the block of rank %d", step, group_.world_rank(origin)));
      }
    } else {
      ++skipped_steps_;
    }
    LOOM_RETURN_IF_ERROR(FirstError(computed, exchange.Join()));
  }
  return absl::OkStatus();
}

template <typename T>
absl::Status GpuRingAttention::BackwardImpl(float* dq, float* dk, float* dv, const float* dout,
                                            const T* q, const T* k, const T* v, const float* lse,
                                            const float* delta) {
  LOOM_RETURN_IF_ERROR(ctx_.MakeCurrent());
  LOOM_RETURN_IF_ERROR(AllocateGradients());
  const int c = group_.size(), me = tokens_.me();
  cudaStream_t stream = ctx_.compute();
  T* blocks[2] = {blocks_[0].as<T>(), blocks_[1].as<T>()};
  // grads[s % 2] receives, at step s, the accumulator of the block held then (from the previous
  // member, which added its share at step s - 1); grads[(s - 1) % 2] sends the one finished at
  // step s - 1. The step's own share goes to scratch meanwhile and is added after the exchange.
  float* grads[2] = {grads_[0].as<float>(), grads_[1].as<float>()};
  float* scratch = scratch_.as<float>();
  const size_t own = KvElements(me);
  if (own > 0) {
    LOOM_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(blocks[0], k, own * sizeof(T),
                                              cudaMemcpyDeviceToDevice, stream));
    LOOM_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(blocks[0] + own, v, own * sizeof(T),
                                              cudaMemcpyDeviceToDevice, stream));
  }
  for (int s = 0; s < c; ++s) {
    const int origin = OriginAt(s);
    const size_t el = KvElements(origin);
    const T* cur = blocks[s % 2];
    float* acc = grads[s % 2];
    const std::string step = absl::StrFormat("ring attention backward step %d/%d", s + 1, c);
    std::vector<SendSpec> sends;
    std::vector<RecvSpec> recvs;
    std::string what = step + ":";
    // Every member lists its messages in the same order, so that between two ranks (both
    // neighbours when c = 2) the receives match the sends in the order NCCL delivers them.
    if (s + 1 < c) {
      const int incoming = OriginAt(s + 1);
      sends.push_back({ConstBufferView(cur, 2 * el, kWireType<T>), next_, tag_ + kKvTagOffset});
      recvs.push_back({BufferView(blocks[(s + 1) % 2], 2 * KvElements(incoming), kWireType<T>),
                       prev_, tag_ + kKvTagOffset});
      absl::StrAppendFormat(&what, " sending K/V of rank %d to rank %d, receiving K/V of rank %d "
                            "from rank %d;", group_.world_rank(origin), next_,
                            group_.world_rank(incoming), prev_);
    }
    if (s > 0) {
      const int finished = OriginAt(s - 1);
      sends.push_back({ConstBufferView(grads[(s - 1) % 2], 2 * KvElements(finished),
                                       DataType::kFloat32),
                       next_, tag_ + kGradTagOffset});
      recvs.push_back({BufferView(acc, 2 * el, DataType::kFloat32), prev_, tag_ + kGradTagOffset});
      absl::StrAppendFormat(&what, " sending dK/dV of rank %d to rank %d, receiving dK/dV of "
                            "rank %d from rank %d;", group_.world_rank(finished), next_,
                            group_.world_rank(origin), prev_);
    }
    what.pop_back();
    PendingExchange exchange;
    if (!sends.empty()) {
      LOOM_CUDA_RETURN_IF_ERROR(cudaEventRecord(ready_, stream));
      exchange.Start(std::async(std::launch::async,
                                [this, sends = std::move(sends), recvs = std::move(recvs),
                                 what = std::move(what)] {
                                  return ExchangeWhenReady(sends, recvs, what);
                                }));
    }
    absl::Status computed;
    const bool visible = tokens_.Visible(origin);
    // At step 0 the accumulator of this member's own block starts here, so its share goes there
    // directly; it travels on even when empty.
    float* contribution = s == 0 ? acc : scratch;
    if ((s == 0 || visible) && el > 0) {
      computed = gpu::CudaStatus(
          cudaMemsetAsync(contribution, 0, 2 * el * sizeof(float), stream),
          absl::StrFormat("%s: clearing the dK/dV share of rank %d", step,
                          group_.world_rank(origin)));
    }
    if (visible && computed.ok()) {
      computed = gpu::CudaStatus(
          gpu::FlashAttentionBackward<T>(dq, contribution, contribution + el, dout, q, cur,
                                         cur + el, lse, delta, Spans(me), Spans(origin), shape_,
                                         /*causal=*/true, stream),
          absl::StrFormat("%s: attention backward on the block of rank %d", step,
                          group_.world_rank(origin)));
    }
    if (!visible) ++skipped_steps_;
    LOOM_RETURN_IF_ERROR(FirstError(computed, exchange.Join()));
    // The accumulator arrived (the exchange returned with it in place); fold this step's share.
    if (s > 0 && visible) {
      LOOM_RETURN_IF_ERROR(gpu::CudaStatus(
          gpu::Add<float>(acc, acc, scratch, static_cast<int64_t>(2 * el), stream),
          absl::StrFormat("%s: adding the dK/dV share of rank %d", step,
                          group_.world_rank(origin))));
    }
  }
  const float* home = grads[0];
  if (c > 1) {
    // The last hop: the accumulator finished at the last step goes on to its owner, and this
    // member's own comes back after a full turn.
    const int finished = OriginAt(c - 1);
    const std::vector<SendSpec> sends = {
        {ConstBufferView(grads[(c - 1) % 2], 2 * KvElements(finished), DataType::kFloat32), next_,
         tag_ + kGradTagOffset}};
    const std::vector<RecvSpec> recvs = {
        {BufferView(grads[c % 2], 2 * own, DataType::kFloat32), prev_, tag_ + kGradTagOffset}};
    LOOM_CUDA_RETURN_IF_ERROR(cudaEventRecord(ready_, stream));
    LOOM_RETURN_IF_ERROR(ExchangeWhenReady(
        sends, recvs,
        absl::StrFormat("ring attention backward, last hop: sending dK/dV of rank %d to rank %d, "
                        "receiving dK/dV of rank %d from rank %d",
                        group_.world_rank(finished), next_, group_.world_rank(me), prev_)));
    home = grads[c % 2];
  }
  const int64_t count = static_cast<int64_t>(own);
  LOOM_CUDA_RETURN_IF_ERROR(gpu::Add<float>(dk, dk, home, count, stream));
  LOOM_CUDA_RETURN_IF_ERROR(gpu::Add<float>(dv, dv, home + own, count, stream));
  return absl::OkStatus();
}

}  // namespace loom
