#include "parallel/ring_attention.h"

#include <algorithm>
#include <cstring>
#include <limits>
#include <string>
#include <utility>

#include "absl/strings/str_format.h"

namespace loom {
namespace {

constexpr int kKvTagOffset = 0;
constexpr int kGradTagOffset = 1;

// A posted message and what to say about it if it fails.
struct Pending {
  std::unique_ptr<Request> request;
  std::string what;
};

absl::Status Post(absl::StatusOr<std::unique_ptr<Request>> posted, std::string what,
                  Pending& pending) {
  if (!posted.ok()) return WithContext(posted.status(), what);
  pending.request = *std::move(posted);
  pending.what = std::move(what);
  return absl::OkStatus();
}

// The ring neighbours of this member and the tag of one kind of message (K/V or dK/dV).
struct RingLink {
  Communicator& comm;
  const Group& group;
  int prev;  // world ranks
  int next;
  int tag;
};

// One hop of a pass around the ring: posts the receive of member `incoming`'s block (`into`, of
// `into_count` floats) from the previous rank, then the send of member `origin`'s block (`from`)
// to the next rank. `what` names the payload ("K/V", "dK/dV") in error messages.
absl::Status PassAlong(const RingLink& link, const std::string& step, const char* what,
                       int incoming, float* into, size_t into_count, int origin,
                       const float* from, size_t from_count, Pending& recv, Pending& send) {
  absl::Status st =
      Post(link.comm.IRecv(BufferView(into, into_count, DataType::kFloat32), link.prev, link.tag),
           absl::StrFormat("%s: receiving %s of rank %d from rank %d", step, what,
                           link.group.world_rank(incoming), link.prev),
           recv);
  if (!st.ok()) return st;
  return Post(
      link.comm.ISend(ConstBufferView(from, from_count, DataType::kFloat32), link.next, link.tag),
      absl::StrFormat("%s: sending %s of rank %d to rank %d", step, what,
                      link.group.world_rank(origin), link.next),
      send);
}

absl::Status Finish(Pending& pending) {
  if (pending.request == nullptr) return absl::OkStatus();
  absl::Status s = pending.request->Wait();
  pending.request.reset();
  return WithContext(s, pending.what);
}

}  // namespace

absl::StatusOr<std::unique_ptr<RingAttention>> RingAttention::Create(Communicator& comm,
                                                                     const Group& group,
                                                                     const AttentionShape& shape,
                                                                     const TokenSpans& spans,
                                                                     int tag) {
  if (tag < 0 || tag + kGradTagOffset > comm.max_tag()) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "ring attention tag %d: tags %d and %d must be in [0, %d]", tag, tag,
        tag + kGradTagOffset, comm.max_tag()));
  }
  absl::StatusOr<GroupTokens> tokens = GroupTokens::Gather(comm, group, spans);
  if (!tokens.ok()) {
    return WithContext(tokens.status(),
                       absl::StrFormat("ring attention over group %s", group.ToString()));
  }
  return Create(comm, group, shape, *std::move(tokens), tag);
}

absl::StatusOr<std::unique_ptr<RingAttention>> RingAttention::Create(Communicator& comm,
                                                                     const Group& group,
                                                                     const AttentionShape& shape,
                                                                     GroupTokens tokens, int tag) {
  if (tag < 0 || tag + kGradTagOffset > comm.max_tag()) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "ring attention tag %d: tags %d and %d must be in [0, %d]", tag, tag,
        tag + kGradTagOffset, comm.max_tag()));
  }
  const std::optional<int> me = group.IndexOf(comm.rank());
  if (!me.has_value() || *me != tokens.me() || tokens.group_size() != group.size()) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "ring attention over group %s: rank %d's token layout is for member %d of %d",
        group.ToString(), comm.rank(), tokens.me(), tokens.group_size()));
  }
  return std::unique_ptr<RingAttention>(
      new RingAttention(comm, group, shape, std::move(tokens), tag));
}

RingAttention::RingAttention(Communicator& comm, Group group, const AttentionShape& shape,
                             GroupTokens tokens, int tag)
    : comm_(comm),
      group_(std::move(group)),
      shape_(shape),
      tokens_(std::move(tokens)),
      tag_(tag),
      next_(group_.NextOf(tokens_.me())),
      prev_(group_.PrevOf(tokens_.me())) {}

int RingAttention::OriginAt(int step) const {
  const int c = group_.size();
  return ((tokens_.me() - step) % c + c) % c;
}

size_t RingAttention::KvElements(int member) const {
  return static_cast<size_t>(tokens_.count(member)) * shape_.n_kv_heads * shape_.head_dim;
}

absl::Status RingAttention::Forward(float* out, float* lse, const float* q, const float* k,
                                    const float* v) {
  const int c = group_.size(), me = tokens_.me(), n = tokens_.count(me);
  const size_t rows = static_cast<size_t>(n) * shape_.n_heads;
  std::fill(out, out + rows * shape_.head_dim, 0.0f);
  std::fill(lse, lse + rows, -std::numeric_limits<float>::infinity());
  std::vector<float> part_out(rows * shape_.head_dim), part_lse(rows);
  // Two K|V blocks: the one computed on and the one arriving for the next step.
  const size_t capacity = 2 * static_cast<size_t>(tokens_.max_count()) * shape_.n_kv_heads *
                          shape_.head_dim;
  std::vector<float> blocks[2] = {std::vector<float>(capacity), std::vector<float>(capacity)};
  const size_t own = KvElements(me);
  std::copy(k, k + own, blocks[0].data());
  std::copy(v, v + own, blocks[0].data() + own);

  for (int s = 0; s < c; ++s) {
    const int origin = OriginAt(s);
    const size_t el = KvElements(origin);
    const float* cur = blocks[s % 2].data();
    Pending recv, send;
    if (s + 1 < c) {
      const int incoming = OriginAt(s + 1);
      const std::string step = absl::StrFormat("ring attention forward step %d/%d", s + 1, c);
      const RingLink link{comm_, group_, prev_, next_, tag_ + kKvTagOffset};
      if (absl::Status st = PassAlong(link, step, "K/V", incoming, blocks[(s + 1) % 2].data(),
                                      2 * KvElements(incoming), origin, cur, 2 * el, recv, send);
          !st.ok()) {
        return st;
      }
    }
    if (tokens_.Visible(origin)) {
      AttentionForward(part_out.data(), part_lse.data(), q, cur, cur + el, tokens_.spans(me),
                       tokens_.spans(origin), shape_, /*causal=*/true);
      AttentionMerge(out, lse, part_out.data(), part_lse.data(), n, shape_);
    } else {
      ++skipped_steps_;
    }
    if (absl::Status st = Finish(recv); !st.ok()) return st;
    if (absl::Status st = Finish(send); !st.ok()) return st;
  }
  return absl::OkStatus();
}

absl::Status RingAttention::Backward(float* dq, float* dk, float* dv, const float* dout,
                                     const float* q, const float* k, const float* v,
                                     const float* lse, const float* delta) {
  const int c = group_.size(), me = tokens_.me();
  const size_t capacity = 2 * static_cast<size_t>(tokens_.max_count()) * shape_.n_kv_heads *
                          shape_.head_dim;
  std::vector<float> blocks[2] = {std::vector<float>(capacity), std::vector<float>(capacity)};
  // dK|dV accumulators: the one being completed here and the one arriving from the previous
  // member; the step's own contribution is computed into scratch meanwhile.
  std::vector<float> grads[2] = {std::vector<float>(capacity), std::vector<float>(capacity)};
  std::vector<float> scratch(capacity);
  const size_t own = KvElements(me);
  std::copy(k, k + own, blocks[0].data());
  std::copy(v, v + own, blocks[0].data() + own);

  Pending grad_recv, grad_send;
  for (int s = 0; s < c; ++s) {
    const int origin = OriginAt(s);
    const size_t el = KvElements(origin);
    const float* cur = blocks[s % 2].data();
    const std::string step = absl::StrFormat("ring attention backward step %d/%d", s + 1, c);
    Pending kv_recv, kv_send;
    if (s + 1 < c) {
      const int incoming = OriginAt(s + 1);
      const RingLink link{comm_, group_, prev_, next_, tag_ + kKvTagOffset};
      if (absl::Status st = PassAlong(link, step, "K/V", incoming, blocks[(s + 1) % 2].data(),
                                      2 * KvElements(incoming), origin, cur, 2 * el, kv_recv,
                                      kv_send);
          !st.ok()) {
        return st;
      }
    }
    float* acc = grads[s % 2].data();
    float* contribution = s == 0 ? acc : scratch.data();
    std::fill(contribution, contribution + 2 * el, 0.0f);
    if (tokens_.Visible(origin)) {
      AttentionBackward(dq, contribution, contribution + el, dout, q, cur, cur + el, lse, delta,
                        tokens_.spans(me), tokens_.spans(origin), shape_, /*causal=*/true);
    } else {
      ++skipped_steps_;
    }
    if (s > 0) {
      if (absl::Status st = Finish(grad_recv); !st.ok()) return st;
      for (size_t i = 0; i < 2 * el; ++i) acc[i] += contribution[i];
      // The other accumulator is about to receive: its previous send must be done.
      if (absl::Status st = Finish(grad_send); !st.ok()) return st;
    }
    if (c > 1) {
      const int incoming = OriginAt(s + 1);  // at the last step: this member, home again
      const RingLink link{comm_, group_, prev_, next_, tag_ + kGradTagOffset};
      if (absl::Status st = PassAlong(link, step, "dK/dV", incoming, grads[(s + 1) % 2].data(),
                                      2 * KvElements(incoming), origin, acc, 2 * el, grad_recv,
                                      grad_send);
          !st.ok()) {
        return st;
      }
    }
    if (absl::Status st = Finish(kv_recv); !st.ok()) return st;
    if (absl::Status st = Finish(kv_send); !st.ok()) return st;
  }
  if (absl::Status st = Finish(grad_recv); !st.ok()) return st;
  if (absl::Status st = Finish(grad_send); !st.ok()) return st;
  const float* home = grads[c > 1 ? c % 2 : 0].data();
  for (size_t i = 0; i < own; ++i) dk[i] += home[i];
  for (size_t i = 0; i < own; ++i) dv[i] += home[own + i];
  return absl::OkStatus();
}

}  // namespace loom
