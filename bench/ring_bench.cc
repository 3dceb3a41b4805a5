// ring: context-parallel attention balance and communication overlap.
//
// Balance: one causal document spread over c = 4 members, zigzag against a contiguous split.
// From the sharding itself, max/mean of each member's visible (query, key) pairs (attention
// FLOPs are proportional); measured, max/mean of each member's compute time for its forward and
// backward kernel calls over every key block, run one member at a time on one thread so members
// do not disturb each other.
//
// Overlap: one causal document, zigzag over c members, forward + backward of RingAttention,
// against the same kernel calls with no messages (compute-only, all members at once) and the same
// messages with no compute (comm-only). overlap_ratio = ring / compute-only;
// hidden_comm_fraction = 1 - (ring - compute-only) / comm-only, clamped to [0, 1]. Times are the
// slowest member's, medians over repeats; every member runs one OpenMP thread.
//
// Run as one process, it measures balance and the overlap of 2 members as threads (the local
// backend, 4K tokens per rank); run under mpirun (scripts/bench_ring.sh does both), only the
// overlap of the job's processes on the mpi backend (8K tokens per rank), where messages cross
// process boundaries and the wait for them is real. Under mpirun only rank 0 prints.
#include <omp.h>

#include <algorithm>
#include <cstdio>
#include <functional>
#include <memory>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "bench/bench.h"
#include "parallel/ring_attention.h"
#include "parallel/zigzag.h"
#include "runtime/local_world.h"
#include "runtime/mpi_communicator.h"
#include "runtime/world.h"

namespace loom::bench {
namespace {

constexpr AttentionShape kShape{4, 4, 64};

std::vector<float> Random(size_t n, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<float> dist(-1.0f, 1.0f);
  std::vector<float> v(n);
  for (float& x : v) x = dist(rng);
  return v;
}

// One member's inputs, in its local order.
struct MemberInputs {
  std::vector<float> q, k, v, dout;
};

std::vector<MemberInputs> ShardInputs(const Sharding& sharding) {
  const size_t T = static_cast<size_t>(sharding.total_tokens);
  const int qw = kShape.n_heads * kShape.head_dim, kw = kShape.n_kv_heads * kShape.head_dim;
  const std::vector<float> q = Random(T * qw, 1), k = Random(T * kw, 2), v = Random(T * kw, 3),
                           dout = Random(T * qw, 4);
  std::vector<MemberInputs> members;
  for (const MemberShard& m : sharding.members) {
    members.push_back({GatherRows(q.data(), qw, m), GatherRows(k.data(), kw, m),
                       GatherRows(v.data(), kw, m), GatherRows(dout.data(), qw, m)});
  }
  return members;
}

// Whether a query of `q` may see a key of `k` (one causal document).
bool Visible(const MemberShard& q, const MemberShard& k) {
  if (q.size() == 0 || k.size() == 0) return false;
  return *std::min_element(k.pos.begin(), k.pos.end()) <=
         *std::max_element(q.pos.begin(), q.pos.end());
}

// Member m's forward and backward kernel calls over every member's keys, in ring order, with
// nothing else: the compute a ring step overlaps with.
void ComputeMember(const Sharding& s, const std::vector<MemberInputs>& in, int m) {
  const int c = static_cast<int>(s.members.size());
  const MemberShard& me = s.members[static_cast<size_t>(m)];
  const MemberInputs& x = in[static_cast<size_t>(m)];
  const size_t n = static_cast<size_t>(me.size()), rows = n * kShape.n_heads;
  std::vector<float> out(x.q.size(), 0.0f), lse(rows, -INFINITY), part(x.q.size()),
      part_lse(rows), delta(rows), dq(x.q.size(), 0.0f);
  for (int step = 0; step < c; ++step) {
    const int o = (m - step + c) % c;
    if (!Visible(me, s.members[static_cast<size_t>(o)])) continue;
    const MemberInputs& y = in[static_cast<size_t>(o)];
    AttentionForward(part.data(), part_lse.data(), x.q.data(), y.k.data(), y.v.data(),
                     me.spans(), s.members[static_cast<size_t>(o)].spans(), kShape, true);
    AttentionMerge(out.data(), lse.data(), part.data(), part_lse.data(), static_cast<int>(n),
                   kShape);
  }
  AttentionBackwardDelta(delta.data(), x.dout.data(), out.data(), static_cast<int>(n), kShape);
  for (int step = 0; step < c; ++step) {
    const int o = (m - step + c) % c;
    if (!Visible(me, s.members[static_cast<size_t>(o)])) continue;
    const MemberInputs& y = in[static_cast<size_t>(o)];
    std::vector<float> dk(y.k.size(), 0.0f), dv(y.v.size(), 0.0f);
    AttentionBackward(dq.data(), dk.data(), dv.data(), x.dout.data(), x.q.data(), y.k.data(),
                      y.v.data(), lse.data(), delta.data(), me.spans(),
                      s.members[static_cast<size_t>(o)].spans(), kShape, true);
  }
}

double MaxOverMean(const std::vector<double>& v) {
  const double mean = std::accumulate(v.begin(), v.end(), 0.0) / static_cast<double>(v.size());
  return *std::max_element(v.begin(), v.end()) / mean;
}

struct Balance {
  double pairs;     // from the sharding
  double measured;  // from compute time
};

Balance MeasureBalance(SplitKind kind, int c, int length, int repeats) {
  const Sharding s = *ShardDocuments({length}, c, kind);
  const std::vector<MemberInputs> in = ShardInputs(s);
  std::vector<double> pairs, times;
  for (int m = 0; m < c; ++m) {
    pairs.push_back(static_cast<double>(VisiblePairs(s.members[static_cast<size_t>(m)])));
    std::vector<double> t;
    for (int r = 0; r < repeats; ++r) t.push_back(TimeSeconds([&] { ComputeMember(s, in, m); }));
    times.push_back(Median(t));
  }
  return {MaxOverMean(pairs), MaxOverMean(times)};
}

using RankBody = std::function<absl::Status(Communicator&)>;
// Runs a body on every rank of a world and returns the slowest rank's time, from a barrier to the
// end of the body.
using RankTimer = std::function<double(const RankBody&)>;

void AbortOnError(const absl::Status& status) {
  if (status.ok()) return;
  std::fprintf(stderr, "ring bench: %s\n", std::string(status.message()).c_str());
  std::abort();
}

absl::Status TimeBody(Communicator& comm, const RankBody& body, double& seconds) {
  if (absl::Status s = comm.Barrier(comm.world_group()); !s.ok()) return s;
  absl::Status result;
  seconds = TimeSeconds([&] { result = body(comm); });
  return result;
}

// Ranks as threads of this process (one OpenMP thread each).
RankTimer LocalTimer(LocalWorld& world) {
  return [&world](const RankBody& body) {
    std::vector<double> seconds(static_cast<size_t>(world.size()), 0.0);
    AbortOnError(world.Run([&](Communicator& comm) {
      omp_set_num_threads(1);
      return TimeBody(comm, body, seconds[static_cast<size_t>(comm.rank())]);
    }));
    return *std::max_element(seconds.begin(), seconds.end());
  };
}

// This process as one rank of an mpirun job: the slowest rank's time, agreed by an all-reduce.
RankTimer MpiTimer(Communicator& comm) {
  return [&comm](const RankBody& body) {
    double seconds = 0.0;
    AbortOnError(TimeBody(comm, body, seconds));
    std::vector<float> slowest = {static_cast<float>(seconds)};
    AbortOnError(comm.AllReduce(comm.world_group(), slowest, ReduceOp::kMax));
    return static_cast<double>(slowest[0]);
  };
}

struct Overlap {
  double ring_s, compute_s, comm_s;
  double ratio() const { return ring_s / compute_s; }
  double hidden() const { return std::clamp(1.0 - (ring_s - compute_s) / comm_s, 0.0, 1.0); }
};

// The overlap of a ring of c members (the world of `time_on_ranks`, in rank order).
Overlap MeasureOverlap(int c, int tokens_per_rank, int repeats, const RankTimer& time_on_ranks) {
  const Sharding s = *ShardDocuments({c * tokens_per_rank}, c, SplitKind::kZigzag);
  const std::vector<MemberInputs> in = ShardInputs(s);
  const Group group = Group::World(c);
  const size_t kv = static_cast<size_t>(tokens_per_rank) * kShape.n_kv_heads * kShape.head_dim;

  const auto ring = [&](Communicator& comm) -> absl::Status {
    const int m = comm.rank();
    const MemberShard& me = s.members[static_cast<size_t>(m)];
    const MemberInputs& x = in[static_cast<size_t>(m)];
    absl::StatusOr<std::unique_ptr<RingAttention>> attention =
        RingAttention::Create(comm, group, kShape, me.spans(), 0);
    if (!attention.ok()) return attention.status();
    const size_t rows = static_cast<size_t>(me.size()) * kShape.n_heads;
    std::vector<float> out(x.q.size()), lse(rows), delta(rows), dq(x.q.size(), 0.0f),
        dk(x.k.size(), 0.0f), dv(x.v.size(), 0.0f);
    if (absl::Status st = (*attention)->Forward(out.data(), lse.data(), x.q.data(), x.k.data(),
                                                x.v.data());
        !st.ok()) {
      return st;
    }
    AttentionBackwardDelta(delta.data(), x.dout.data(), out.data(), me.size(), kShape);
    return (*attention)->Backward(dq.data(), dk.data(), dv.data(), x.dout.data(), x.q.data(),
                                  x.k.data(), x.v.data(), lse.data(), delta.data());
  };
  const auto compute = [&](Communicator& comm) -> absl::Status {
    ComputeMember(s, in, comm.rank());
    return absl::OkStatus();
  };
  // The ring's messages alone: K|V forward, K|V and the dK|dV accumulators backward.
  const auto comm_only = [&](Communicator& comm) -> absl::Status {
    std::vector<float> send(2 * kv, 1.0f), recv(2 * kv);
    const int next = group.NextOf(comm.rank()), prev = group.PrevOf(comm.rank());
    const int hops[] = {c - 1, c - 1, c};  // forward K/V, backward K/V, backward dK/dV
    for (int h = 0; h < 3; ++h) {
      for (int i = 0; i < hops[h]; ++i) {
        const SendSpec sends[] = {{send, next, h}};
        const RecvSpec recvs[] = {{recv, prev, h}};
        if (absl::Status st = comm.Exchange(sends, recvs); !st.ok()) return st;
      }
    }
    return absl::OkStatus();
  };
  Overlap result{};
  std::vector<double> r, k, m;
  time_on_ranks(ring);  // warm-up: pages and OpenBLAS buffers
  for (int i = 0; i < repeats; ++i) {
    r.push_back(time_on_ranks(ring));
    k.push_back(time_on_ranks(compute));
    m.push_back(time_on_ranks(comm_only));
  }
  result.ring_s = Median(r);
  result.compute_s = Median(k);
  result.comm_s = Median(m);
  return result;
}

nlohmann::json OverlapJson(const Overlap& o, const char* backend, int ranks, int tokens_per_rank) {
  return {{"overlap_ratio", o.ratio()},
          {"hidden_comm_fraction", o.hidden()},
          {"overlap_backend", backend},
          {"overlap_ranks", ranks},
          {"overlap_tokens_per_rank", tokens_per_rank},
          {"ring_seconds", o.ring_s},
          {"compute_only_seconds", o.compute_s},
          {"comm_only_seconds", o.comm_s}};
}

void PrintOverlap(const Overlap& o, const char* how, int tokens_per_rank) {
  std::printf(
      "ring: overlap, %s, %d tokens per rank, heads %d/%d, D %d\n"
      "  ring fwd+bwd %.4f s, compute only %.4f s, comm only %.4f s: ratio %.3f, hidden %.3f\n",
      how, tokens_per_rank, kShape.n_heads, kShape.n_kv_heads, kShape.head_dim, o.ring_s,
      o.compute_s, o.comm_s, o.ratio(), o.hidden());
}

// Under mpirun: the overlap of the job's processes, one rank each.
nlohmann::json MpiOverlapBench(const BenchOptions& options) {
  const int tokens_per_rank = options.quick ? 512 : 8192;
  // Every process is one member with its own core, as the threads of the local run are.
  omp_set_num_threads(1);
  absl::StatusOr<std::unique_ptr<Communicator>> comm = MakeMpiCommunicator(absl::Minutes(5));
  AbortOnError(comm.status());
  const int ranks = (*comm)->size();
  const Overlap o = MeasureOverlap(ranks, tokens_per_rank, options.repeats, MpiTimer(**comm));
  if ((*comm)->rank() == 0) {
    const std::string how = absl::StrCat(ranks, " processes (mpi backend)");
    PrintOverlap(o, how.c_str(), tokens_per_rank);
  }
  return OverlapJson(o, "mpi", ranks, tokens_per_rank);
}

nlohmann::json RingBench(const BenchOptions& options) {
  absl::StatusOr<WorldInfo> launcher = DetectWorld(ProcessEnv());
  if (launcher.ok() && launcher->size > 1) return MpiOverlapBench(options);
  const int c = 4;
  const int balance_length = options.quick ? 1024 : 4096;
  const int tokens_per_rank = options.quick ? 512 : 4096;
  // One thread, as each member would have its own core: parallel efficiency and other load on
  // the second core would otherwise blur the per-member differences.
  const int threads = omp_get_max_threads();
  omp_set_num_threads(1);
  const Balance zigzag = MeasureBalance(SplitKind::kZigzag, c, balance_length, options.repeats);
  const Balance contiguous =
      MeasureBalance(SplitKind::kContiguous, c, balance_length, options.repeats);
  omp_set_num_threads(threads);
  std::printf("ring: balance, one causal document of %d tokens on %d members (max/mean)\n",
              balance_length, c);
  std::printf("  %-10s %10s %10s\n", "split", "FLOPs", "measured");
  std::printf("  %-10s %10.4f %10.4f\n", "zigzag", zigzag.pairs, zigzag.measured);
  std::printf("  %-10s %10.4f %10.4f\n", "contiguous", contiguous.pairs, contiguous.measured);

  const int ranks = 2;
  std::unique_ptr<LocalWorld> world = *LocalWorld::Create(ranks, absl::Minutes(5));
  const Overlap o = MeasureOverlap(ranks, tokens_per_rank, options.repeats, LocalTimer(*world));
  PrintOverlap(o, "2 ranks as threads (local backend)", tokens_per_rank);
  nlohmann::json result = OverlapJson(o, "local", ranks, tokens_per_rank);
  result.update({{"zigzag_balance", zigzag.pairs},
                 {"contiguous_balance", contiguous.pairs},
                 {"zigzag_balance_measured", zigzag.measured},
                 {"contiguous_balance_measured", contiguous.measured},
                 {"balance_members", c},
                 {"balance_tokens", balance_length}});
  return result;
}

Registrar reg("ring", RingBench);

}  // namespace
}  // namespace loom::bench
