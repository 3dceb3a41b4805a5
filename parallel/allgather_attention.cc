#include "parallel/allgather_attention.h"

#include <algorithm>
#include <cstring>
#include <utility>

#include "absl/strings/str_format.h"

namespace loom {

absl::StatusOr<std::unique_ptr<AllGatherAttention>> AllGatherAttention::Create(
    Communicator& comm, const Group& group, const AttentionShape& shape, const TokenSpans& spans) {
  absl::StatusOr<GroupTokens> tokens = GroupTokens::Gather(comm, group, spans);
  if (!tokens.ok()) {
    return WithContext(tokens.status(),
                       absl::StrFormat("all-gather attention over group %s", group.ToString()));
  }
  return std::unique_ptr<AllGatherAttention>(
      new AllGatherAttention(comm, group, shape, *std::move(tokens)));
}

AllGatherAttention::AllGatherAttention(Communicator& comm, Group group,
                                       const AttentionShape& shape, GroupTokens tokens)
    : comm_(comm), group_(std::move(group)), shape_(shape), tokens_(std::move(tokens)) {
  for (size_t n : tokens_.counts()) kv_counts_.push_back(n * RowElements());
}

absl::Status AllGatherAttention::GatherKv(const float* k, const float* v,
                                          std::vector<float>& all_k, std::vector<float>& all_v) {
  const size_t total = static_cast<size_t>(tokens_.total()) * RowElements();
  const size_t own = kv_counts_[static_cast<size_t>(tokens_.me())];
  all_k.resize(total);
  all_v.resize(total);
  const std::string where = absl::StrFormat("all-gather attention over group %s", group_.ToString());
  if (absl::Status s = comm_.AllGatherV(group_, ConstBufferView(k, own, DataType::kFloat32),
                                        all_k, kv_counts_);
      !s.ok()) {
    return WithContext(s, where + ": gathering K");
  }
  return WithContext(comm_.AllGatherV(group_, ConstBufferView(v, own, DataType::kFloat32), all_v,
                                      kv_counts_),
                     where + ": gathering V");
}

absl::Status AllGatherAttention::Forward(float* out, float* lse, const float* q, const float* k,
                                         const float* v) {
  std::vector<float> all_k, all_v;
  if (absl::Status s = GatherKv(k, v, all_k, all_v); !s.ok()) return s;
  AttentionForward(out, lse, q, all_k.data(), all_v.data(), tokens_.spans(tokens_.me()),
                   tokens_.all_spans(), shape_, /*causal=*/true);
  return absl::OkStatus();
}

absl::Status AllGatherAttention::Backward(float* dq, float* dk, float* dv, const float* dout,
                                          const float* q, const float* k, const float* v,
                                          const float* lse, const float* delta) {
  // K/V are gathered again rather than kept from the forward, so that between the two only this
  // member's share is held (as with the ring).
  std::vector<float> all_k, all_v;
  if (absl::Status s = GatherKv(k, v, all_k, all_v); !s.ok()) return s;
  std::vector<float> all_dk(all_k.size(), 0.0f), all_dv(all_v.size(), 0.0f);
  AttentionBackward(dq, all_dk.data(), all_dv.data(), dout, q, all_k.data(), all_v.data(), lse,
                    delta, tokens_.spans(tokens_.me()), tokens_.all_spans(), shape_,
                    /*causal=*/true);
  // Member m's block of the reduce-scatter input: its dK then its dV, zero-padded to `block`.
  const int c = group_.size();
  const size_t block = 2 * static_cast<size_t>(tokens_.max_count()) * RowElements();
  std::vector<float> send(block * static_cast<size_t>(c), 0.0f);
  for (int m = 0; m < c; ++m) {
    const size_t first = static_cast<size_t>(tokens_.offset(m)) * RowElements();
    const size_t n = kv_counts_[static_cast<size_t>(m)];
    float* dst = send.data() + block * static_cast<size_t>(m);
    std::memcpy(dst, all_dk.data() + first, n * sizeof(float));
    std::memcpy(dst + n, all_dv.data() + first, n * sizeof(float));
  }
  std::vector<float> mine(block);
  if (absl::Status s = comm_.ReduceScatter(group_, send, mine, ReduceOp::kSum); !s.ok()) {
    return WithContext(s, absl::StrFormat("all-gather attention over group %s: reducing dK/dV",
                                          group_.ToString()));
  }
  const size_t own = kv_counts_[static_cast<size_t>(tokens_.me())];
  for (size_t i = 0; i < own; ++i) dk[i] += mine[i];
  for (size_t i = 0; i < own; ++i) dv[i] += mine[own + i];
  return absl::OkStatus();
}

}  // namespace loom
