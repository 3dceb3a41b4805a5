#include "parallel/sharded_adamw.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <optional>
#include <utility>

#include "absl/strings/str_format.h"
#include "parallel/context_parallel_attention.h"
#include "src/grad_clip.h"

namespace loom {
namespace {

ConstBufferView Floats(const float* data, size_t count) {
  return ConstBufferView(data, count, DataType::kFloat32);
}
BufferView Floats(float* data, size_t count) { return BufferView(data, count, DataType::kFloat32); }

}  // namespace

absl::StatusOr<std::unique_ptr<ShardedAdamW>> ShardedAdamW::Create(Communicator& comm,
                                                                   const Group& group,
                                                                   const ParamLayout& layout,
                                                                   const AdamWConfig& config,
                                                                   Allocator* allocator) {
  for (int r : group.ranks()) {
    if (r >= comm.size()) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "ZeRO group %s names rank %d outside the world of %d", group.ToString(), r, comm.size()));
    }
  }
  const std::optional<int> me = group.IndexOf(comm.rank());
  if (!me.has_value()) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "rank %d is not a member of ZeRO group %s", comm.rank(), group.ToString()));
  }
  const size_t p = layout.total_numel();
  if (p == 0) return absl::InvalidArgumentError("the parameter layout has no parameters");
  const size_t n = static_cast<size_t>(group.size());
  std::vector<Shard> shards;
  for (size_t j = 0; j < n; ++j) {
    const size_t begin = j * (p / n) + std::min(j, p % n);
    shards.push_back(Shard{begin, begin + p / n + (j < p % n ? 1 : 0)});
  }
  return std::unique_ptr<ShardedAdamW>(
      new ShardedAdamW(comm, group, *me, std::move(shards), layout, config, allocator));
}

ShardedAdamW::ShardedAdamW(Communicator& comm, const Group& group, int me,
                           std::vector<Shard> shards, const ParamLayout& layout,
                           const AdamWConfig& config, Allocator* allocator)
    : comm_(comm),
      group_(group),
      me_(me),
      num_params_(layout.total_numel()),
      block_(shards.front().end - shards.front().begin),
      shards_(std::move(shards)),
      adamw_(layout, config, shards_[static_cast<size_t>(me)].begin,
             shards_[static_cast<size_t>(me)].end, allocator) {
  for (const Shard& s : shards_) counts_.push_back(s.end - s.begin);
  const size_t n = shards_.size();
  if (n * block_ != num_params_) padded_ = Buffer(n * block_, allocator);
}

absl::StatusOr<double> ShardedAdamW::Step(float* params, float* grads, float lr,
                                          double max_norm) {
  if (params == nullptr || grads == nullptr) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "ShardedAdamW::Step on rank %d: null %s buffer", comm_.rank(),
        params == nullptr ? "parameter" : "gradient"));
  }
  if (!std::isfinite(lr) || std::isnan(max_norm)) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "ShardedAdamW::Step on rank %d: learning rate %g and max_norm %g must be numbers",
        comm_.rank(), lr, max_norm));
  }
  const size_t n = shards_.size();
  float* blocks = grads;
  if (padded_.numel() > 0) {
    // Shard j's contribution goes to block j, zero-padded to the common block size.
    blocks = padded_.data();
    for (size_t j = 0; j < n; ++j) {
      float* block = blocks + j * block_;
      std::copy_n(grads + shards_[j].begin, counts_[j], block);
      std::fill(block + counts_[j], block + block_, 0.0f);
    }
  }
  float* shard_grads = blocks + static_cast<size_t>(me_) * block_;
  if (absl::Status s = comm_.ReduceScatter(group_, Floats(blocks, n * block_),
                                           Floats(shard_grads, block_), ReduceOp::kSum);
      !s.ok()) {
    return WithContext(s, "reduce-scattering gradients");
  }

  // The global norm from the shards' sums of squares, which travel as their bits and are added in
  // group order: the runtime reduces no float64, and every member must clip by the same factor.
  // GradNorm's fixed partial sums make a shard's sum independent of the thread count; squaring
  // its square root costs one rounding (1e-16 relative), and for one member sqrt(x^2) == x gives
  // GradNorm's value exactly.
  const size_t count = counts_[static_cast<size_t>(me_)];
  const double shard_norm = GradNorm(shard_grads, count);
  const double shard_sum = shard_norm * shard_norm;
  int64_t bits = 0;
  std::memcpy(&bits, &shard_sum, sizeof(bits));
  std::vector<int64_t> all_bits(n);
  if (absl::Status s = comm_.AllGather(group_, std::span<const int64_t>(&bits, 1), all_bits);
      !s.ok()) {
    return WithContext(s, "gathering gradient sums of squares");
  }
  double sum = 0.0;
  for (int64_t b : all_bits) {
    double member_sum = 0.0;
    std::memcpy(&member_sum, &b, sizeof(b));
    sum += member_sum;
  }
  const double norm = std::sqrt(sum);
  // A NaN or infinite gradient would poison every moment and weight: no update, the same decision
  // on every member (the norm's bits are). The caller sees the norm and reports the step.
  if (!std::isfinite(norm)) return norm;
  // ClipGradNorm's rule (torch's clip_grad_norm_).
  if (max_norm > 0.0 && norm > max_norm) {
    const float scale = static_cast<float>(max_norm / (norm + 1e-6));
    const int64_t end = static_cast<int64_t>(count);
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < end; ++i) shard_grads[i] *= scale;
  }

  adamw_.Step(params + shard_begin(), shard_grads, lr);
  if (absl::Status s = GatherShards(params + shard_begin(), params); !s.ok()) {
    return WithContext(s, "all-gathering parameters");
  }
  return norm;
}

absl::Status ShardedAdamW::GatherShards(const float* shard_data, float* full) {
  return comm_.AllGatherV(group_, Floats(shard_data, counts_[static_cast<size_t>(me_)]),
                          Floats(full, num_params_), counts_);
}

absl::Status ShardedAdamW::CheckFull(const AdamW& full) const {
  if (full.begin() != 0 || full.end() != num_params_) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "AdamW state on rank %d covers parameters [%d, %d), not all %d", comm_.rank(),
        full.begin(), full.end(), num_params_));
  }
  return absl::OkStatus();
}

absl::Status ShardedAdamW::GatherState(AdamW& full) {
  if (absl::Status s = CheckFull(full); !s.ok()) return s;
  if (absl::Status s = GatherShards(adamw_.m().data(), full.m().data()); !s.ok()) {
    return WithContext(s, "all-gathering AdamW m");
  }
  if (absl::Status s = GatherShards(adamw_.v().data(), full.v().data()); !s.ok()) {
    return WithContext(s, "all-gathering AdamW v");
  }
  full.set_step(adamw_.step());
  return absl::OkStatus();
}

absl::Status ShardedAdamW::LoadState(const AdamW& full) {
  if (absl::Status s = CheckFull(full); !s.ok()) return s;
  const size_t count = counts_[static_cast<size_t>(me_)];
  std::copy_n(full.m().data() + shard_begin(), count, adamw_.m().data());
  std::copy_n(full.v().data() + shard_begin(), count, adamw_.v().data());
  adamw_.set_step(full.step());
  return absl::OkStatus();
}

}  // namespace loom
