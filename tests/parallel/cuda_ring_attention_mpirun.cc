// GpuRingAttention (parallel/cuda/gpu_ring_attention.h) under `mpirun -np 2` (see tests.cmake),
// one GPU per rank with K/V carried by the nccl backend, against the single-process CPU kernel
// (src/kernels/attention.h) over all tokens on the host: out, lse, dq, dk and dv of every rank's
// rows, fp32 at kGpuFp32Tolerance and bf16 at kGpuBf16Tolerance (norm-wise relative error). The
// bf16 runs give the CPU kernel the bf16-rounded q, k, v the GPU stores, so they measure the ring
// and its bf16 storage of out, not the rounding of the inputs.
//
// Cases: zigzag-split packed documents (lengths 1, primes, multiples of 2c and shorter than 2c)
// in a shuffled ring order with MHA, GQA and MQA; short documents kept whole on one member beside
// a long spread one (members of different sizes, so blocks smaller than the buffers); a
// contiguous split whose fully masked steps are skipped; two layers through one object with
// gradients that accumulate onto prefilled values; rejected arguments.
//
// Every rank builds the same problem from fixed seeds and computes the whole reference itself,
// then checks the rows it holds. Every test skips, visibly (the program exits 77), where fewer
// GPUs than ranks are visible: NCCL refuses two ranks on one GPU.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <iterator>
#include <memory>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "parallel/context_parallel_attention.h"
#include "parallel/zigzag.h"
#include "runtime/dtype.h"
#include "src/kernels/attention.h"
#include "tests/parallel/cp_attention_harness.h"
#include "tests/src/cuda_test_util.h"
#include "tests/src/test_util.h"

#if defined(LOOM_HAVE_CUDA) && defined(LOOM_HAVE_NCCL)
#include <cuda_bf16.h>
#include <cuda_runtime_api.h>

#include "parallel/cuda/gpu_ring_attention.h"
#include "runtime/nccl_communicator.h"
#include "src/cuda/cuda_check.h"
#include "src/cuda/device_buffer.h"
#include "src/cuda/device_context.h"
#include "src/cuda/flash_attention.h"
#include "src/cuda/gemm.h"
#include "src/status_macros.h"
#include "tests/runtime/gpu_per_rank.h"
#endif

namespace loom {
namespace {

#if defined(LOOM_HAVE_CUDA) && defined(LOOM_HAVE_NCCL)

using gpu::DeviceBuffer;
using gpu::Precision;
using test::AttentionData;
using test::AttentionProblem;

constexpr absl::Duration kTimeout = absl::Seconds(60);

class GpuRingEnvironment : public ::testing::Environment {
 public:
  void SetUp() override {
    skip_reason = test::GpuPerRankSkipReason();
    if (!skip_reason.empty()) return;
    skip_reason = "setting up the nccl communicator or the device context failed";
    absl::StatusOr<std::unique_ptr<Communicator>> made = MakeNcclCommunicator(kTimeout);
    ASSERT_TRUE(made.ok()) << made.status();
    absl::StatusOr<std::unique_ptr<gpu::DeviceContext>> context =
        gpu::DeviceContext::Create((*made)->world().local_rank);
    ASSERT_TRUE(context.ok()) << context.status();
    comm = *std::move(made);
    ctx = *std::move(context);
  }
  // Before MPI_Finalize in main().
  void TearDown() override {
    ctx.reset();
    comm.reset();
  }

  static inline std::string skip_reason;
  static inline std::unique_ptr<Communicator> comm;
  static inline std::unique_ptr<gpu::DeviceContext> ctx;
};

[[maybe_unused]] ::testing::Environment* const kEnvironment =
    ::testing::AddGlobalTestEnvironment(new GpuRingEnvironment);

#define LOOM_REQUIRE_GPUS()                                                                  \
  if (GpuRingEnvironment::ctx == nullptr) GTEST_SKIP() << GpuRingEnvironment::skip_reason; \
  Communicator& comm = *GpuRingEnvironment::comm;                                            \
  gpu::DeviceContext& ctx = *GpuRingEnvironment::ctx

const char* PrecisionName(Precision p) { return p == Precision::kFp32 ? "fp32" : "bf16"; }
double Tolerance(Precision p) {
  return p == Precision::kFp32 ? test::kGpuFp32Tolerance : test::kGpuBf16Tolerance;
}

// The values a bf16 buffer holds for x (round to nearest even, as the upload does).
std::vector<float> RoundedToBf16(std::vector<float> x) {
  for (float& f : x) f = BFloat16ToFloat(FloatToBFloat16(f));
  return x;
}

// Random inputs of `p` and the single-process CPU kernel's outputs and gradients over all tokens;
// in bf16 the kernel sees the inputs as the GPU stores them.
AttentionData Expected(const AttentionProblem& p, Precision precision) {
  AttentionData d = test::Reference(p);
  if (precision == Precision::kFp32) return d;
  d.q = RoundedToBf16(d.q);
  d.k = RoundedToBf16(d.k);
  d.v = RoundedToBf16(d.v);
  const int T = static_cast<int>(p.tokens());
  std::fill(d.dq.begin(), d.dq.end(), 0.0f);
  std::fill(d.dk.begin(), d.dk.end(), 0.0f);
  std::fill(d.dv.begin(), d.dv.end(), 0.0f);
  const PackedDocs docs = test::DocsOf(p.lengths);
  AttentionForward(d.out.data(), d.lse.data(), d.q.data(), d.k.data(), d.v.data(), docs.spans(),
                   docs.spans(), p.shape, /*causal=*/true);
  std::vector<float> delta(d.lse.size());
  AttentionBackwardDelta(delta.data(), d.dout.data(), d.out.data(), T, p.shape);
  AttentionBackward(d.dq.data(), d.dk.data(), d.dv.data(), d.dout.data(), d.q.data(), d.k.data(),
                    d.v.data(), d.lse.data(), delta.data(), docs.spans(), docs.spans(), p.shape,
                    /*causal=*/true);
  return d;
}

// This member's rows of one layer's results, copied back from the device.
struct MemberResult {
  std::vector<float> out, lse, dq, dk, dv;
};

cudaError_t Delta(Precision precision, float* delta, const float* dout, const void* out, int n,
                  const AttentionShape& shape, cudaStream_t stream) {
  if (precision == Precision::kFp32) {
    return gpu::FlashAttentionDelta<float>(delta, dout, static_cast<const float*>(out), n, shape,
                                           stream);
  }
  return gpu::FlashAttentionDelta<__nv_bfloat16>(
      delta, dout, static_cast<const __nv_bfloat16*>(out), n, shape, stream);
}

// One layer on this member: its rows of `in` to the device, Forward, the delta of the GPU's own
// output, Backward onto gradients that start at `prefill` (this member's rows; zeros if empty),
// and everything back to the host.
absl::Status RunLayer(GpuRingAttention& ring, gpu::DeviceContext& ctx, Precision precision,
                      const AttentionProblem& p, const MemberShard& shard,
                      const AttentionData& in, const AttentionData& prefill,
                      MemberResult& got) {
  gpu::DeviceAllocator* alloc = ctx.allocator();
  cudaStream_t stream = ctx.compute();
  const gpu::DType operand = gpu::OperandType(precision);
  const int n = shard.size();
  const size_t rows = static_cast<size_t>(n) * p.shape.n_heads;
  const auto rows_of = [&](const std::vector<float>& global, int width) {
    return GatherRows(global.data(), width, shard);
  };
  const auto start = [&](const std::vector<float>& global, int width) {
    return global.empty() ? std::vector<float>(static_cast<size_t>(n) * width, 0.0f)
                          : rows_of(global, width);
  };
  LOOM_ASSIGN_OR_RETURN(DeviceBuffer q,
                        gpu::ToDevice(alloc, rows_of(in.q, p.q_width()), operand, stream));
  LOOM_ASSIGN_OR_RETURN(DeviceBuffer k,
                        gpu::ToDevice(alloc, rows_of(in.k, p.kv_width()), operand, stream));
  LOOM_ASSIGN_OR_RETURN(DeviceBuffer v,
                        gpu::ToDevice(alloc, rows_of(in.v, p.kv_width()), operand, stream));
  LOOM_ASSIGN_OR_RETURN(DeviceBuffer dout, gpu::ToDevice(alloc, rows_of(in.dout, p.q_width()),
                                                         gpu::DType::kF32, stream));
  LOOM_ASSIGN_OR_RETURN(DeviceBuffer dq, gpu::ToDevice(alloc, start(prefill.dq, p.q_width()),
                                                       gpu::DType::kF32, stream));
  LOOM_ASSIGN_OR_RETURN(DeviceBuffer dk, gpu::ToDevice(alloc, start(prefill.dk, p.kv_width()),
                                                       gpu::DType::kF32, stream));
  LOOM_ASSIGN_OR_RETURN(DeviceBuffer dv, gpu::ToDevice(alloc, start(prefill.dv, p.kv_width()),
                                                       gpu::DType::kF32, stream));
  LOOM_ASSIGN_OR_RETURN(DeviceBuffer out,
                        DeviceBuffer::Create(alloc, operand, rows * p.shape.head_dim, stream));
  LOOM_ASSIGN_OR_RETURN(DeviceBuffer lse,
                        DeviceBuffer::Create(alloc, gpu::DType::kF32, rows, stream));
  LOOM_ASSIGN_OR_RETURN(DeviceBuffer delta,
                        DeviceBuffer::Create(alloc, gpu::DType::kF32, rows, stream));

  LOOM_RETURN_IF_ERROR(ring.Forward(out.data(), lse.as<float>(), q.data(), k.data(), v.data()));
  LOOM_CUDA_RETURN_IF_ERROR(Delta(precision, delta.as<float>(), dout.as<float>(), out.data(), n,
                                  p.shape, stream));
  LOOM_RETURN_IF_ERROR(ring.Backward(dq.as<float>(), dk.as<float>(), dv.as<float>(),
                                     dout.as<float>(), q.data(), k.data(), v.data(),
                                     lse.as<float>(), delta.as<float>()));
  LOOM_RETURN_IF_ERROR(ctx.Synchronize());
  LOOM_ASSIGN_OR_RETURN(got.out, gpu::ToHost(out, stream));
  LOOM_ASSIGN_OR_RETURN(got.lse, gpu::ToHost(lse, stream));
  LOOM_ASSIGN_OR_RETURN(got.dq, gpu::ToHost(dq, stream));
  LOOM_ASSIGN_OR_RETURN(got.dk, gpu::ToHost(dk, stream));
  LOOM_ASSIGN_OR_RETURN(got.dv, gpu::ToHost(dv, stream));
  return absl::OkStatus();
}

std::vector<float> Plus(std::vector<float> a, const std::vector<float>& b) {
  if (b.empty()) return a;
  for (size_t i = 0; i < a.size(); ++i) a[i] += b[i];
  return a;
}

// This member's rows of `got` against the reference `want` (plus `prefill` for the gradients).
void ExpectMemberMatches(const AttentionProblem& p, const MemberShard& shard, Precision precision,
                         const MemberResult& got, const AttentionData& want,
                         const AttentionData& prefill) {
  const double tolerance = Tolerance(precision);
  const auto expect = [&](const std::vector<float>& g, const std::vector<float>& w, int width,
                          const char* name) {
    EXPECT_LE(test::RelativeError(g, test::ToDouble(GatherRows(w.data(), width, shard))),
              tolerance)
        << name << " (" << shard.size() << " rows)";
  };
  expect(got.out, want.out, p.q_width(), "out");
  expect(got.lse, want.lse, p.shape.n_heads, "lse");
  expect(got.dq, Plus(want.dq, prefill.dq), p.q_width(), "dq");
  expect(got.dk, Plus(want.dk, prefill.dk), p.kv_width(), "dk");
  expect(got.dv, Plus(want.dv, prefill.dv), p.kv_width(), "dv");
}

// The world's ranks in an order drawn from `seed` (the same on every rank).
std::vector<int> ShuffledWorld(int size, uint64_t seed) {
  std::vector<int> ranks(static_cast<size_t>(size));
  std::iota(ranks.begin(), ranks.end(), 0);
  std::mt19937_64 rng(seed);
  std::shuffle(ranks.begin(), ranks.end(), rng);
  return ranks;
}

std::string Describe(const AttentionProblem& p, const Group& group, Precision precision,
                     int rank) {
  return absl::StrCat(PrecisionName(precision), " group ", group.ToString(), " lengths [",
                      absl::StrJoin(p.lengths, " "), "] heads ", p.shape.n_heads, "/",
                      p.shape.n_kv_heads, " D ", p.shape.head_dim, " seed ", p.seed, " on rank ",
                      rank);
}

// Every member's spans from the sharding that every rank computes alike.
GroupTokens TokensOf(const Sharding& sharding, int me) {
  std::vector<TokenSpans> members;
  for (const MemberShard& m : sharding.members) members.push_back(m.spans());
  return GroupTokens::FromMembers(me, members);
}

// `layers` problems (same documents and shape, different seeds) through one GpuRingAttention on
// `group`, each layer's gradients starting from random values when `accumulate`. `skipped`, when
// set, receives the ring's skipped step count.
void RunAndCheck(Communicator& comm, gpu::DeviceContext& ctx, const Group& group,
                 Precision precision, const AttentionProblem& problem, int layers = 1,
                 bool accumulate = false, int* skipped = nullptr) {
  SCOPED_TRACE(Describe(problem, group, precision, comm.rank()));
  absl::StatusOr<Sharding> sharding =
      ShardDocuments(problem.lengths, group.size(), problem.split, problem.owner);
  ASSERT_TRUE(sharding.ok()) << sharding.status();
  const int me = *group.IndexOf(comm.rank());
  const MemberShard& shard = sharding->members[static_cast<size_t>(me)];
  absl::StatusOr<std::unique_ptr<GpuRingAttention>> ring = GpuRingAttention::Create(
      comm, ctx, group, problem.shape, precision, TokensOf(*sharding, me), /*tag=*/4);
  ASSERT_TRUE(ring.ok()) << ring.status();
  for (int layer = 0; layer < layers; ++layer) {
    SCOPED_TRACE(absl::StrCat("layer ", layer));
    AttentionProblem p = problem;
    p.seed = problem.seed + 1000 * static_cast<uint64_t>(layer);
    const AttentionData want = Expected(p, precision);
    AttentionData prefill;
    if (accumulate) {
      prefill.dq = test::RandomVector(want.dq.size(), p.seed * 7 + 1);
      prefill.dk = test::RandomVector(want.dk.size(), p.seed * 7 + 2);
      prefill.dv = test::RandomVector(want.dv.size(), p.seed * 7 + 3);
    }
    MemberResult got;
    const absl::Status status = RunLayer(**ring, ctx, precision, p, shard, want, prefill, got);
    ASSERT_TRUE(status.ok()) << status;
    ExpectMemberMatches(p, shard, precision, got, want, prefill);
  }
  if (skipped != nullptr) *skipped = (*ring)->skipped_steps();
}

class GpuRingAttentionTest : public ::testing::TestWithParam<Precision> {};

// Lengths of 1, a prime, a multiple of 2c, one shorter than 2c and a random one, zigzag-split over
// the whole world in a shuffled ring order, with MHA, GQA and MQA shapes.
TEST_P(GpuRingAttentionTest, ZigzagEdgeLengths) {
  LOOM_REQUIRE_GPUS();
  constexpr AttentionShape kShapes[] = {{4, 2, 8}, {4, 4, 16}, {8, 1, 32}, {6, 3, 64}};
  const int c = comm.size();
  constexpr uint64_t kSeeds[] = {11, 23, 37, 51};
  for (size_t i = 0; i < std::size(kSeeds); ++i) {
    const uint64_t seed = kSeeds[i];
    std::mt19937_64 rng(seed * 1000 + static_cast<uint64_t>(c));
    AttentionProblem p;
    p.shape = kShapes[i % std::size(kShapes)];
    p.lengths = {1, 37, 2 * c * static_cast<int32_t>(1 + rng() % 6),
                 static_cast<int32_t>(1 + rng() % (2 * c)), static_cast<int32_t>(1 + rng() % 150)};
    std::shuffle(p.lengths.begin(), p.lengths.end(), rng);
    p.seed = seed + static_cast<uint64_t>(c);
    RunAndCheck(comm, ctx, *Group::Make(ShuffledWorld(c, seed)), GetParam(), p);
  }
}

// Short documents, each whole on one member or spread, beside a long spread document of 389
// tokens (not a multiple of 2c, longer than a flash tile): members hold different numbers of
// tokens, so most blocks are smaller than the receive buffers.
TEST_P(GpuRingAttentionTest, ShortDocumentsWholeOnOneMemberBesideOneLong) {
  LOOM_REQUIRE_GPUS();
  const int c = comm.size();
  std::mt19937_64 rng(31);
  AttentionProblem p;
  p.shape = {8, 2, 64};
  p.seed = 31;
  for (int d = 0; d < 30; ++d) {
    p.lengths.push_back(static_cast<int32_t>(1 + rng() % 24));
    // Most short documents stay on member 0, so the members' sizes differ.
    p.owner.push_back(d % 7 == 0 ? kSpreadOverGroup : (d % 3 == 0 ? static_cast<int>(rng() % c)
                                                                  : 0));
  }
  const size_t long_at = rng() % p.lengths.size();
  p.lengths.insert(p.lengths.begin() + static_cast<ptrdiff_t>(long_at), 389);
  p.owner.insert(p.owner.begin() + static_cast<ptrdiff_t>(long_at), kSpreadOverGroup);
  RunAndCheck(comm, ctx, *Group::Make(ShuffledWorld(c, 32)), GetParam(), p);
}

// A contiguous split of one causal document: member m skips the c-1-m blocks after its own, in
// the forward and again in the backward, and the result stays exact.
TEST_P(GpuRingAttentionTest, SkipsFullyMaskedSteps) {
  LOOM_REQUIRE_GPUS();
  const int c = comm.size();
  AttentionProblem p;
  p.shape = {4, 2, 16};
  p.lengths = {203};
  p.split = SplitKind::kContiguous;
  p.seed = 3;
  int skipped = -1;
  RunAndCheck(comm, ctx, Group::World(c), GetParam(), p, /*layers=*/1, /*accumulate=*/false,
              &skipped);
  EXPECT_EQ(skipped, 2 * (c - 1 - comm.rank()));
}

// One object serves several layers (its buffers are reused from call to call), and dq, dk, dv
// accumulate onto what the caller's buffers already hold.
TEST_P(GpuRingAttentionTest, SeveralLayersAccumulateGradients) {
  LOOM_REQUIRE_GPUS();
  const int c = comm.size();
  AttentionProblem p;
  p.shape = {4, 1, 32};
  p.lengths = {67, 5, 120, 1};
  p.seed = 5;
  std::vector<int> reversed = ShuffledWorld(c, 5);
  std::reverse(reversed.begin(), reversed.end());
  RunAndCheck(comm, ctx, *Group::Make(reversed), GetParam(), p, /*layers=*/3,
              /*accumulate=*/true);
}

INSTANTIATE_TEST_SUITE_P(Precisions, GpuRingAttentionTest,
                         ::testing::Values(Precision::kFp32, Precision::kBf16),
                         [](const auto& info) { return std::string(PrecisionName(info.param)); });

TEST(GpuRingAttentionCreate, RejectsBadArguments) {
  LOOM_REQUIRE_GPUS();
  const Group world = Group::World(comm.size());
  absl::StatusOr<Sharding> sharding = ShardDocuments({16}, comm.size(), SplitKind::kZigzag);
  ASSERT_TRUE(sharding.ok()) << sharding.status();
  const GroupTokens tokens = TokensOf(*sharding, comm.rank());
  // Tag tag + 1 must be valid too.
  absl::StatusOr<std::unique_ptr<GpuRingAttention>> ring = GpuRingAttention::Create(
      comm, ctx, world, {4, 2, 8}, Precision::kFp32, tokens, comm.max_tag());
  EXPECT_EQ(ring.status().code(), absl::StatusCode::kInvalidArgument) << ring.status();
  // The flash kernels need head_dim a multiple of 8.
  ring = GpuRingAttention::Create(comm, ctx, world, {4, 2, 12}, Precision::kFp32, tokens, 0);
  EXPECT_EQ(ring.status().code(), absl::StatusCode::kInvalidArgument) << ring.status();
  // A layout made for another member.
  if (comm.size() > 1) {
    ring = GpuRingAttention::Create(comm, ctx, world, {4, 2, 8}, Precision::kFp32,
                                    TokensOf(*sharding, (comm.rank() + 1) % comm.size()), 0);
    EXPECT_EQ(ring.status().code(), absl::StatusCode::kInvalidArgument) << ring.status();
  }
}

#else  // !(LOOM_HAVE_CUDA && LOOM_HAVE_NCCL)

TEST(GpuRingAttentionTest, NeedsCudaAndNccl) {
  GTEST_SKIP() << "built without CUDA or NCCL: no GPU ring attention to check";
}

#endif

}  // namespace
}  // namespace loom
