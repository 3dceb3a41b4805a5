// Shared by the context-parallel attention tests: a random attention problem over packed
// documents, its single-rank kernel result, and a runner that shards it over a group, runs one
// strategy on each member (ranks as threads) and writes each member's rows back in global order.
#ifndef LOOM_TESTS_PARALLEL_CP_ATTENTION_HARNESS_H_
#define LOOM_TESTS_PARALLEL_CP_ATTENTION_HARNESS_H_

#include <omp.h>

#include <memory>
#include <numeric>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "parallel/allgather_attention.h"
#include "parallel/ring_attention.h"
#include "parallel/zigzag.h"
#include "runtime/communicator.h"
#include "tests/src/test_util.h"

namespace loom::test {

enum class Strategy { kRing, kAllGather };

inline const char* StrategyName(Strategy s) { return s == Strategy::kRing ? "ring" : "allgather"; }

struct AttentionProblem {
  AttentionShape shape{4, 2, 8};
  std::vector<int32_t> lengths;
  std::vector<int> owner;  // empty: every document spread over the group
  SplitKind split = SplitKind::kZigzag;
  uint64_t seed = 1;

  int64_t tokens() const { return std::accumulate(lengths.begin(), lengths.end(), int64_t{0}); }
  int q_width() const { return shape.n_heads * shape.head_dim; }
  int kv_width() const { return shape.n_kv_heads * shape.head_dim; }
};

// Inputs and outputs, all in global packed order.
struct AttentionData {
  std::vector<float> q, k, v, dout;
  std::vector<float> out, lse, dq, dk, dv;
};

inline PackedDocs DocsOf(const std::vector<int32_t>& lengths) {
  std::vector<int32_t> cu{0};
  for (int32_t l : lengths) cu.push_back(cu.back() + l);
  return PackedDocsFromCuSeqlens(cu);
}

// Random inputs and the single-rank kernel's outputs and gradients.
inline AttentionData Reference(const AttentionProblem& p) {
  const size_t T = static_cast<size_t>(p.tokens());
  AttentionData d;
  d.q = RandomVector(T * p.q_width(), p.seed * 4 + 0);
  d.k = RandomVector(T * p.kv_width(), p.seed * 4 + 1);
  d.v = RandomVector(T * p.kv_width(), p.seed * 4 + 2);
  d.dout = RandomVector(T * p.q_width(), p.seed * 4 + 3);
  d.out.resize(d.q.size());
  d.lse.resize(T * p.shape.n_heads);
  d.dq.assign(d.q.size(), 0.0f);
  d.dk.assign(d.k.size(), 0.0f);
  d.dv.assign(d.v.size(), 0.0f);
  const PackedDocs docs = DocsOf(p.lengths);
  AttentionForward(d.out.data(), d.lse.data(), d.q.data(), d.k.data(), d.v.data(), docs.spans(),
                   docs.spans(), p.shape, /*causal=*/true);
  std::vector<float> delta(d.lse.size());
  AttentionBackwardDelta(delta.data(), d.dout.data(), d.out.data(), static_cast<int>(T), p.shape);
  AttentionBackward(d.dq.data(), d.dk.data(), d.dv.data(), d.dout.data(), d.q.data(), d.k.data(),
                    d.v.data(), d.lse.data(), delta.data(), docs.spans(), docs.spans(), p.shape,
                    /*causal=*/true);
  return d;
}

// Outputs of a distributed run, filled row by row by the members (disjoint rows, so the rank
// threads never write the same element).
inline AttentionData EmptyOutputs(const AttentionProblem& p) {
  const size_t T = static_cast<size_t>(p.tokens());
  AttentionData d;
  d.out.assign(T * p.q_width(), 0.0f);
  d.lse.assign(T * p.shape.n_heads, 0.0f);
  d.dq.assign(T * p.q_width(), 0.0f);
  d.dk.assign(T * p.kv_width(), 0.0f);
  d.dv.assign(T * p.kv_width(), 0.0f);
  return d;
}

// One member's part: shard, forward, backward, rows written back into `got`. `skipped`, when
// set, receives the ring's skipped step count.
inline absl::Status RunMember(Communicator& comm, const Group& group, Strategy strategy,
                              const AttentionProblem& p, const AttentionData& in, int tag,
                              AttentionData& got, int* skipped = nullptr) {
  omp_set_num_threads(1);  // one core's worth per rank thread: the ranks share the machine
  absl::StatusOr<Sharding> sharding = ShardDocuments(p.lengths, group.size(), p.split, p.owner);
  if (!sharding.ok()) return sharding.status();
  const MemberShard& shard = sharding->members[static_cast<size_t>(*group.IndexOf(comm.rank()))];
  const int n = shard.size();
  std::vector<float> q = GatherRows(in.q.data(), p.q_width(), shard);
  std::vector<float> k = GatherRows(in.k.data(), p.kv_width(), shard);
  std::vector<float> v = GatherRows(in.v.data(), p.kv_width(), shard);
  std::vector<float> dout = GatherRows(in.dout.data(), p.q_width(), shard);
  std::unique_ptr<ContextParallelAttention> attention;
  RingAttention* ring = nullptr;
  if (strategy == Strategy::kRing) {
    absl::StatusOr<std::unique_ptr<RingAttention>> made =
        RingAttention::Create(comm, group, p.shape, shard.spans(), tag);
    if (!made.ok()) return made.status();
    ring = made->get();
    attention = *std::move(made);
  } else {
    absl::StatusOr<std::unique_ptr<AllGatherAttention>> made =
        AllGatherAttention::Create(comm, group, p.shape, shard.spans());
    if (!made.ok()) return made.status();
    attention = *std::move(made);
  }
  std::vector<float> out(q.size()), lse(static_cast<size_t>(n) * p.shape.n_heads);
  if (absl::Status s = attention->Forward(out.data(), lse.data(), q.data(), k.data(), v.data());
      !s.ok()) {
    return s;
  }
  std::vector<float> delta(lse.size());
  AttentionBackwardDelta(delta.data(), dout.data(), out.data(), n, p.shape);
  std::vector<float> dq(q.size(), 0.0f), dk(k.size(), 0.0f), dv(v.size(), 0.0f);
  if (absl::Status s = attention->Backward(dq.data(), dk.data(), dv.data(), dout.data(), q.data(),
                                           k.data(), v.data(), lse.data(), delta.data());
      !s.ok()) {
    return s;
  }
  ScatterRows(out.data(), p.q_width(), shard, got.out.data());
  ScatterRows(lse.data(), p.shape.n_heads, shard, got.lse.data());
  ScatterRows(dq.data(), p.q_width(), shard, got.dq.data());
  ScatterRows(dk.data(), p.kv_width(), shard, got.dk.data());
  ScatterRows(dv.data(), p.kv_width(), shard, got.dv.data());
  if (skipped != nullptr && ring != nullptr) *skipped = ring->skipped_steps();
  return absl::OkStatus();
}

// Every output and gradient within the fp32 equivalence bound of the reference.
inline void ExpectMatches(const AttentionData& got, const AttentionData& want) {
  EXPECT_LE(RelativeError(got.out, ToDouble(want.out)), kFp32Tolerance) << "out";
  EXPECT_LE(RelativeError(got.lse, ToDouble(want.lse)), kFp32Tolerance) << "lse";
  EXPECT_LE(RelativeError(got.dq, ToDouble(want.dq)), kFp32Tolerance) << "dq";
  EXPECT_LE(RelativeError(got.dk, ToDouble(want.dk)), kFp32Tolerance) << "dk";
  EXPECT_LE(RelativeError(got.dv, ToDouble(want.dv)), kFp32Tolerance) << "dv";
}

}  // namespace loom::test

#endif  // LOOM_TESTS_PARALLEL_CP_ATTENTION_HARNESS_H_
