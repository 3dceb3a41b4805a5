// The CUDA flash attention (src/cuda/flash_attention.h) against the CPU kernel
// (src/kernels/attention.h) on the same inputs: packed documents with 1-token documents, causal and
// full masks, MHA, GQA and MQA, head dims of every padded size, a key set at an offset from the
// queries, tokens in arbitrary order, long sets, merging of key sets and the ring backward,
// accumulation into pre-filled gradients, rows without visible keys, and rejected shapes. The bf16
// runs give the CPU kernel the bf16-rounded inputs the GPU stores, so they measure the kernel and
// its bf16 output, not the rounding of the inputs.
#include <gtest/gtest.h>

#include <algorithm>
#include <climits>
#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "src/kernels/attention.h"
#include "tests/src/cuda_test_util.h"
#include "tests/src/test_util.h"

#ifdef LOOM_HAVE_CUDA
#include <cuda_bf16.h>
#include <cuda_runtime_api.h>

#include "src/cuda/device_buffer.h"
#include "src/cuda/device_context.h"
#include "src/cuda/flash_attention.h"
#include "src/status_macros.h"
#endif

namespace loom {
namespace {

#ifdef LOOM_HAVE_CUDA

using gpu::DeviceBuffer;
using gpu::DType;
using test::kGpuBf16Tolerance;
using test::kGpuFp32Tolerance;
using test::RandomVector;
using test::RelativeError;
using test::ToDouble;

constexpr float kInf = std::numeric_limits<float>::infinity();

#define LOOM_ASSERT_OK_AND_ASSIGN(lhs, expr) \
  LOOM_ASSERT_OK_AND_ASSIGN_IMPL(LOOM_CONCAT(loom_test_statusor_, __LINE__), lhs, expr)
#define LOOM_ASSERT_OK_AND_ASSIGN_IMPL(tmp, lhs, expr) \
  auto tmp = (expr);                                   \
  ASSERT_TRUE(tmp.ok()) << tmp.status();               \
  lhs = std::move(tmp).value()
#define LOOM_ASSERT_CUDA_OK(expr)                                                        \
  do {                                                                                   \
    const cudaError_t loom_err_ = (expr);                                                \
    ASSERT_EQ(loom_err_, cudaSuccess) << #expr << ": " << cudaGetErrorString(loom_err_); \
  } while (0)

template <typename T>
constexpr DType kDType = std::is_same_v<T, float> ? DType::kF32 : DType::kBF16;

template <typename T>
constexpr double kTolerance = std::is_same_v<T, float> ? kGpuFp32Tolerance : kGpuBf16Tolerance;

template <typename T>
const char* TypeName() {
  return std::is_same_v<T, float> ? "fp32" : "bf16";
}

// The values a T buffer holds for x (bf16: rounded to nearest even).
template <typename T>
std::vector<float> Stored(std::vector<float> x) {
  if constexpr (!std::is_same_v<T, float>) {
    for (float& f : x) f = __bfloat162float(__float2bfloat16(f));
  }
  return x;
}

struct Problem {
  AttentionShape shape;
  PackedDocs qt, kt;
  bool causal = true;
  std::vector<float> q, k, v, dout;
  int Tq() const { return static_cast<int>(qt.doc.size()); }
  int Tk() const { return static_cast<int>(kt.doc.size()); }
  size_t rows() const { return static_cast<size_t>(Tq()) * shape.n_heads; }
};

Problem MakeProblem(const AttentionShape& shape, PackedDocs qt, PackedDocs kt, bool causal,
                    uint64_t seed) {
  const size_t q_size = qt.doc.size() * shape.n_heads * shape.head_dim;
  const size_t kv_size = kt.doc.size() * shape.n_kv_heads * shape.head_dim;
  return Problem{shape,
                 std::move(qt),
                 std::move(kt),
                 causal,
                 RandomVector(q_size, seed, 1.5f),
                 RandomVector(kv_size, seed + 1),
                 RandomVector(kv_size, seed + 2),
                 RandomVector(q_size, seed + 3)};
}

// What the gradients hold before the backward (it accumulates).
struct Grads {
  std::vector<float> dq, dk, dv;
};

Grads ZeroGrads(const Problem& p) {
  return Grads{std::vector<float>(p.q.size()), std::vector<float>(p.k.size()),
               std::vector<float>(p.v.size())};
}

Grads RandomGrads(const Problem& p, uint64_t seed) {
  return Grads{RandomVector(p.q.size(), seed), RandomVector(p.k.size(), seed + 1),
               RandomVector(p.v.size(), seed + 2)};
}

struct Result {
  std::vector<float> out, lse, delta, dq, dk, dv;
};

// The CPU kernels on the values the GPU stores; delta from the output as the GPU stores it.
template <typename T>
Result CpuAttention(const Problem& p, const Grads& start) {
  const std::vector<float> q = Stored<T>(p.q), k = Stored<T>(p.k), v = Stored<T>(p.v);
  Result r;
  r.out.resize(q.size());
  r.lse.resize(p.rows());
  r.delta.resize(p.rows());
  AttentionForward(r.out.data(), r.lse.data(), q.data(), k.data(), v.data(), p.qt.spans(),
                   p.kt.spans(), p.shape, p.causal);
  const std::vector<float> stored_out = Stored<T>(r.out);
  AttentionBackwardDelta(r.delta.data(), p.dout.data(), stored_out.data(), p.Tq(), p.shape);
  r.dq = start.dq;
  r.dk = start.dk;
  r.dv = start.dv;
  AttentionBackward(r.dq.data(), r.dk.data(), r.dv.data(), p.dout.data(), q.data(), k.data(),
                    v.data(), r.lse.data(), r.delta.data(), p.qt.spans(), p.kt.spans(), p.shape,
                    p.causal);
  return r;
}

struct DeviceTokens {
  DeviceBuffer doc, pos;
  int n = 0;
  gpu::DeviceSpans spans() const {
    return gpu::DeviceSpans{doc.as<int32_t>(), pos.as<int32_t>(), n};
  }
};

void Upload(gpu::DeviceContext& ctx, const PackedDocs& docs, DeviceTokens* tokens) {
  LOOM_ASSERT_OK_AND_ASSIGN(tokens->doc,
                            gpu::ToDeviceI32(ctx.allocator(), docs.doc, ctx.compute()));
  LOOM_ASSERT_OK_AND_ASSIGN(tokens->pos,
                            gpu::ToDeviceI32(ctx.allocator(), docs.pos, ctx.compute()));
  tokens->n = static_cast<int>(docs.doc.size());
}

// The problem's inputs on the device: q, k, v as T, dout fp32, the token spans.
struct DeviceProblem {
  DeviceBuffer q, k, v, dout;
  DeviceTokens qt, kt;
};

template <typename T>
void UploadProblem(gpu::DeviceContext& ctx, const Problem& p, DeviceProblem* d) {
  gpu::DeviceAllocator* a = ctx.allocator();
  cudaStream_t s = ctx.compute();
  LOOM_ASSERT_OK_AND_ASSIGN(d->q, gpu::ToDevice(a, p.q, kDType<T>, s));
  LOOM_ASSERT_OK_AND_ASSIGN(d->k, gpu::ToDevice(a, p.k, kDType<T>, s));
  LOOM_ASSERT_OK_AND_ASSIGN(d->v, gpu::ToDevice(a, p.v, kDType<T>, s));
  LOOM_ASSERT_OK_AND_ASSIGN(d->dout, gpu::ToDevice(a, p.dout, DType::kF32, s));
  ASSERT_NO_FATAL_FAILURE(Upload(ctx, p.qt, &d->qt));
  ASSERT_NO_FATAL_FAILURE(Upload(ctx, p.kt, &d->kt));
}

// Forward, delta and backward on the GPU, the gradients starting from `start`.
template <typename T>
void GpuAttention(gpu::DeviceContext& ctx, const Problem& p, const Grads& start, Result* r) {
  gpu::DeviceAllocator* a = ctx.allocator();
  cudaStream_t s = ctx.compute();
  DeviceProblem d;
  ASSERT_NO_FATAL_FAILURE(UploadProblem<T>(ctx, p, &d));
  // The outputs start as garbage, so an unwritten element cannot pass for a zero.
  LOOM_ASSERT_OK_AND_ASSIGN(DeviceBuffer out,
                            gpu::ToDevice(a, std::vector<float>(p.q.size(), 7.0f), kDType<T>, s));
  LOOM_ASSERT_OK_AND_ASSIGN(DeviceBuffer lse,
                            gpu::ToDevice(a, std::vector<float>(p.rows(), 7.0f), DType::kF32, s));
  LOOM_ASSERT_OK_AND_ASSIGN(DeviceBuffer delta,
                            gpu::ToDevice(a, std::vector<float>(p.rows(), 7.0f), DType::kF32, s));
  LOOM_ASSERT_OK_AND_ASSIGN(DeviceBuffer dq, gpu::ToDevice(a, start.dq, DType::kF32, s));
  LOOM_ASSERT_OK_AND_ASSIGN(DeviceBuffer dk, gpu::ToDevice(a, start.dk, DType::kF32, s));
  LOOM_ASSERT_OK_AND_ASSIGN(DeviceBuffer dv, gpu::ToDevice(a, start.dv, DType::kF32, s));
  LOOM_ASSERT_CUDA_OK(gpu::FlashAttentionForward<T>(out.as<T>(), lse.as<float>(), d.q.as<T>(),
                                                    d.k.as<T>(), d.v.as<T>(), d.qt.spans(),
                                                    d.kt.spans(), p.shape, p.causal, s));
  LOOM_ASSERT_CUDA_OK(gpu::FlashAttentionDelta<T>(delta.as<float>(), d.dout.as<float>(),
                                                  out.as<T>(), p.Tq(), p.shape, s));
  LOOM_ASSERT_CUDA_OK(gpu::FlashAttentionBackward<T>(
      dq.as<float>(), dk.as<float>(), dv.as<float>(), d.dout.as<float>(), d.q.as<T>(), d.k.as<T>(),
      d.v.as<T>(), lse.as<float>(), delta.as<float>(), d.qt.spans(), d.kt.spans(), p.shape,
      p.causal, s));
  const absl::Status sync = ctx.Synchronize();
  ASSERT_TRUE(sync.ok()) << sync;
  LOOM_ASSERT_OK_AND_ASSIGN(r->out, gpu::ToHost(out, s));
  LOOM_ASSERT_OK_AND_ASSIGN(r->lse, gpu::ToHost(lse, s));
  LOOM_ASSERT_OK_AND_ASSIGN(r->delta, gpu::ToHost(delta, s));
  LOOM_ASSERT_OK_AND_ASSIGN(r->dq, gpu::ToHost(dq, s));
  LOOM_ASSERT_OK_AND_ASSIGN(r->dk, gpu::ToHost(dk, s));
  LOOM_ASSERT_OK_AND_ASSIGN(r->dv, gpu::ToHost(dv, s));
}

// -inf exactly where the reference has it, relative error over the finite rest. Both sides
// compute the LSE in fp32 from the same (stored) inputs, so fp32 tolerance holds for bf16 too.
void ExpectLseMatches(const std::vector<float>& got, const std::vector<float>& want) {
  ASSERT_EQ(got.size(), want.size());
  std::vector<float> finite_got;
  std::vector<double> finite_want;
  for (size_t i = 0; i < got.size(); ++i) {
    if (want[i] == -kInf) {
      EXPECT_EQ(got[i], -kInf) << "lse row " << i;
    } else {
      finite_got.push_back(got[i]);
      finite_want.push_back(want[i]);
    }
  }
  EXPECT_LE(RelativeError(finite_got, finite_want), kGpuFp32Tolerance) << "lse";
}

template <typename T>
void ExpectResultsMatch(const Result& got, const Result& want) {
  EXPECT_LE(RelativeError(got.out, ToDouble(want.out)), kTolerance<T>) << "out";
  ExpectLseMatches(got.lse, want.lse);
  EXPECT_LE(RelativeError(got.delta, ToDouble(want.delta)), kTolerance<T>) << "delta";
  EXPECT_LE(RelativeError(got.dq, ToDouble(want.dq)), kTolerance<T>) << "dq";
  EXPECT_LE(RelativeError(got.dk, ToDouble(want.dk)), kTolerance<T>) << "dk";
  EXPECT_LE(RelativeError(got.dv, ToDouble(want.dv)), kTolerance<T>) << "dv";
}

template <typename T>
void ExpectMatchesCpu(gpu::DeviceContext& ctx, const Problem& p, const Grads& start) {
  SCOPED_TRACE(TypeName<T>());
  Result got;
  ASSERT_NO_FATAL_FAILURE(GpuAttention<T>(ctx, p, start, &got));
  ExpectResultsMatch<T>(got, CpuAttention<T>(p, start));
}

void ExpectMatchesCpuBothTypes(gpu::DeviceContext& ctx, const Problem& p) {
  ExpectMatchesCpu<float>(ctx, p, ZeroGrads(p));
  ExpectMatchesCpu<__nv_bfloat16>(ctx, p, ZeroGrads(p));
}

// Tokens of document `doc` at positions [begin, end), appended to `docs`.
void AppendSpan(PackedDocs* docs, int32_t doc, int32_t begin, int32_t end) {
  for (int32_t t = begin; t < end; ++t) {
    docs->doc.push_back(doc);
    docs->pos.push_back(t);
  }
}

struct Case {
  std::string name;
  AttentionShape shape;
  std::vector<int32_t> cu_seqlens;
  bool causal;
};

#endif  // LOOM_HAVE_CUDA

TEST(CudaAttention, MatchesCpuOnPackedDocuments) {
#ifndef LOOM_HAVE_CUDA
  LOOM_GPU_SKIP_WITHOUT_CUDA();
#else
  LOOM_GPU_CONTEXT_OR_SKIP(ctx);
  // Query tiles are 16-64 rows and key tiles 32-64: documents of 1 token, documents straddling
  // tile edges, totals that are no multiple of any tile.
  const std::vector<Case> cases = {
      {"7 tokens, 1-token documents, full, D 40", {3, 3, 40}, {0, 1, 2, 3, 4, 7}, false},
      {"130 tokens, causal MHA, D 128", {2, 2, 128}, {0, 65, 66, 130}, true},
      {"130 tokens, full GQA, D 40", {6, 2, 40}, {0, 1, 2, 3, 64, 130}, false},
      {"1000 tokens, causal GQA, D 64", {4, 2, 64}, {0, 1, 130, 200, 457, 460, 1000}, true},
      {"1000 tokens, full MQA, D 128", {4, 1, 128}, {0, 300, 301, 1000}, false},
      {"1000 tokens, causal MQA, D 128", {4, 1, 128}, {0, 1, 2, 999, 1000}, true},
      {"1000 tokens, causal GQA, D 40", {4, 2, 40}, {0, 500, 501, 1000}, true},
  };
  uint64_t seed = 100;
  for (const Case& c : cases) {
    SCOPED_TRACE(c.name);
    const PackedDocs docs = PackedDocsFromCuSeqlens(c.cu_seqlens);
    ExpectMatchesCpuBothTypes(*ctx, MakeProblem(c.shape, docs, docs, c.causal, seed += 10));
  }
#endif
}

#ifdef LOOM_HAVE_CUDA

// One token and a key set of itself (T = 1): out is its value row, lse its scaled score, dv the
// sum of dout over the query heads, and dq = dk = 0 up to rounding, since P = 1 makes
// dS = P * (dP - delta) = dout . v - dout . out vanish (so they are bounded absolutely: a relative
// error against rounding noise means nothing).
template <typename T>
void ExpectOneTokenSeesItself(gpu::DeviceContext& ctx, bool causal) {
  SCOPED_TRACE(TypeName<T>());
  const PackedDocs one = PackedDocsFromCuSeqlens({0, 1});
  const Problem p = MakeProblem({4, 2, 64}, one, one, causal, 150);
  Result got;
  ASSERT_NO_FATAL_FAILURE(GpuAttention<T>(ctx, p, ZeroGrads(p), &got));
  const Result want = CpuAttention<T>(p, ZeroGrads(p));
  const std::vector<float> v = Stored<T>(p.v);
  const int D = p.shape.head_dim, group = p.shape.n_heads / p.shape.n_kv_heads;
  std::vector<double> v_per_head, dout_sum(v.size(), 0.0);
  for (int h = 0; h < p.shape.n_heads; ++h) {
    for (int d = 0; d < D; ++d) {
      v_per_head.push_back(v[(h / group) * D + d]);
      dout_sum[(h / group) * D + d] += p.dout[h * D + d];
    }
  }
  EXPECT_LE(RelativeError(got.out, v_per_head), kTolerance<T>) << "out";
  ExpectLseMatches(got.lse, want.lse);
  EXPECT_LE(RelativeError(got.delta, ToDouble(want.delta)), kTolerance<T>) << "delta";
  EXPECT_LE(RelativeError(got.dv, dout_sum), kGpuFp32Tolerance) << "dv";
  for (const std::vector<float>* g : {&got.dq, &got.dk}) {
    for (float x : *g) ASSERT_LE(std::fabs(x), 1e-5f);
  }
}

#endif  // LOOM_HAVE_CUDA

TEST(CudaAttention, OneTokenSeesOnlyItself) {
#ifndef LOOM_HAVE_CUDA
  LOOM_GPU_SKIP_WITHOUT_CUDA();
#else
  LOOM_GPU_CONTEXT_OR_SKIP(ctx);
  for (bool causal : {true, false}) {
    ExpectOneTokenSeesItself<float>(*ctx, causal);
    ExpectOneTokenSeesItself<__nv_bfloat16>(*ctx, causal);
  }
#endif
}

TEST(CudaAttention, EveryPaddedHeadDim) {
#ifndef LOOM_HAVE_CUDA
  LOOM_GPU_SKIP_WITHOUT_CUDA();
#else
  LOOM_GPU_CONTEXT_OR_SKIP(ctx);
  // Head dims pad to 32, 64, 96, 128, 192 or 256, each with its own tile shapes; sizes on and off
  // those steps.
  const PackedDocs docs = PackedDocsFromCuSeqlens({0, 1, 33, 70, 75});
  uint64_t seed = 200;
  for (int D : {8, 32, 48, 96, 136, 192, 200, 256}) {
    SCOPED_TRACE("D " + std::to_string(D));
    ExpectMatchesCpuBothTypes(*ctx, MakeProblem({4, 2, D}, docs, docs, true, seed += 10));
  }
#endif
}

TEST(CudaAttention, KeysAtAnOffsetFromQueries) {
#ifndef LOOM_HAVE_CUDA
  LOOM_GPU_SKIP_WITHOUT_CUDA();
#else
  LOOM_GPU_CONTEXT_OR_SKIP(ctx);
  // One ring step: the queries are positions 100..229 of document 0 and the start of document 1,
  // the keys the first 180 positions of document 0 and a document the queries lack (Tq != Tk).
  // Swapped, the key set comes later than its queries, so some rows see no key at all.
  PackedDocs queries, keys;
  AppendSpan(&queries, 0, 100, 230);
  AppendSpan(&queries, 1, 0, 7);
  AppendSpan(&keys, 0, 0, 180);
  AppendSpan(&keys, 2, 0, 10);
  AppendSpan(&keys, 1, 0, 3);
  uint64_t seed = 300;
  for (bool causal : {true, false}) {
    SCOPED_TRACE(causal ? "causal" : "full");
    ExpectMatchesCpuBothTypes(*ctx, MakeProblem({4, 2, 64}, queries, keys, causal, seed += 10));
    ExpectMatchesCpuBothTypes(*ctx, MakeProblem({4, 2, 64}, keys, queries, causal, seed += 10));
    ExpectMatchesCpuBothTypes(*ctx, MakeProblem({2, 1, 128}, queries, keys, causal, seed += 10));
  }
  // Keys from the last query position on, that position twice (positions need not be unique):
  // whatever the tile sizes, the last query tile and the first key tile meet where key pos_min ==
  // query pos_max, at the only visible pairs, which skipping must keep. (Two keys, so the
  // gradients are not the rounding noise of a one-key softmax.)
  PackedDocs before, from_last;
  AppendSpan(&before, 0, 0, 100);
  AppendSpan(&from_last, 0, 99, 100);
  AppendSpan(&from_last, 0, 99, 199);
  ExpectMatchesCpuBothTypes(*ctx, MakeProblem({2, 1, 64}, before, from_last, true, seed += 10));
  ExpectMatchesCpuBothTypes(*ctx, MakeProblem({2, 2, 128}, before, from_last, true, seed += 10));
#endif
}

TEST(CudaAttention, TokensInArbitraryOrder) {
#ifndef LOOM_HAVE_CUDA
  LOOM_GPU_SKIP_WITHOUT_CUDA();
#else
  LOOM_GPU_CONTEXT_OR_SKIP(ctx);
  // Tile skipping reasons from per-tile ranges of document and position only: with the tokens
  // shuffled (and document ids at the ends of the int32 range) those ranges overlap everywhere,
  // and the answer must not change.
  const PackedDocs packed = PackedDocsFromCuSeqlens({0, 1, 40, 41, 300, 500});
  const int32_t doc_ids[] = {INT_MIN, 7, INT_MAX, -3, 0};
  auto shuffled = [&](uint64_t seed) {
    std::vector<int> order(packed.doc.size());
    for (size_t i = 0; i < order.size(); ++i) order[i] = static_cast<int>(i);
    std::mt19937_64 rng(seed);
    std::shuffle(order.begin(), order.end(), rng);
    PackedDocs docs;
    for (int i : order) {
      docs.doc.push_back(doc_ids[packed.doc[i]]);
      docs.pos.push_back(packed.pos[i]);
    }
    return docs;
  };
  const PackedDocs queries = shuffled(1), keys = shuffled(2);
  uint64_t seed = 400;
  for (bool causal : {true, false}) {
    SCOPED_TRACE(causal ? "causal" : "full");
    ExpectMatchesCpuBothTypes(*ctx, MakeProblem({4, 1, 64}, queries, keys, causal, seed += 10));
  }
  // Sorted queries against shuffled keys: most query tiles lie in one document.
  const PackedDocs sorted = [&] {
    PackedDocs docs = packed;
    for (int32_t& d : docs.doc) d = doc_ids[d];
    return docs;
  }();
  ExpectMatchesCpuBothTypes(*ctx, MakeProblem({4, 2, 32}, sorted, keys, true, seed += 10));
#endif
}

TEST(CudaAttention, LongSetsSpanSeveralClassificationChunks) {
#ifndef LOOM_HAVE_CUDA
  LOOM_GPU_SKIP_WITHOUT_CUDA();
#else
  LOOM_GPU_CONTEXT_OR_SKIP(ctx);
  // Tiles are classified 64 at a time (2048-4096 tokens): these sets need several rounds, in the
  // forward and in both backward passes, with documents that cross round boundaries.
  const PackedDocs docs = PackedDocsFromCuSeqlens({0, 1, 700, 2700, 2701, 4500});
  ExpectMatchesCpuBothTypes(*ctx, MakeProblem({2, 1, 64}, docs, docs, true, 500));
  const Problem full = MakeProblem({2, 2, 128}, docs, docs, false, 510);
  ExpectMatchesCpu<float>(*ctx, full, ZeroGrads(full));
#endif
}

TEST(CudaAttention, BackwardAccumulatesIntoPrefilledGradients) {
#ifndef LOOM_HAVE_CUDA
  LOOM_GPU_SKIP_WITHOUT_CUDA();
#else
  LOOM_GPU_CONTEXT_OR_SKIP(ctx);
  // The pre-filled values are as large as the gradients: overwriting them, or adding twice,
  // moves the result far outside the tolerance.
  const PackedDocs docs = PackedDocsFromCuSeqlens({0, 40, 41, 200});
  const Problem p = MakeProblem({4, 2, 64}, docs, docs, true, 600);
  ExpectMatchesCpu<float>(*ctx, p, RandomGrads(p, 610));
  ExpectMatchesCpu<__nv_bfloat16>(*ctx, p, RandomGrads(p, 620));
  const Problem odd = MakeProblem({3, 1, 40}, docs, docs, false, 630);
  ExpectMatchesCpu<float>(*ctx, odd, RandomGrads(odd, 640));
#endif
}

#ifdef LOOM_HAVE_CUDA

// Ring attention over two key sets: forward over each, merged on the GPU, then the backward of
// each set from the merged LSE, against the CPU kernel over the union of the sets.
template <typename T>
void ExpectRingMatchesUnion(gpu::DeviceContext& ctx, const Problem& whole, int tk_first) {
  SCOPED_TRACE(TypeName<T>());
  gpu::DeviceAllocator* a = ctx.allocator();
  cudaStream_t s = ctx.compute();
  const AttentionShape& shape = whole.shape;
  const size_t kv_row = static_cast<size_t>(shape.n_kv_heads) * shape.head_dim;
  auto part = [&](int begin, int end) {
    Problem p = whole;
    p.kt.doc.assign(whole.kt.doc.begin() + begin, whole.kt.doc.begin() + end);
    p.kt.pos.assign(whole.kt.pos.begin() + begin, whole.kt.pos.begin() + end);
    p.k.assign(whole.k.begin() + begin * kv_row, whole.k.begin() + end * kv_row);
    p.v.assign(whole.v.begin() + begin * kv_row, whole.v.begin() + end * kv_row);
    return p;
  };
  const Problem first = part(0, tk_first), second = part(tk_first, whole.Tk());
  DeviceProblem d1, d2;
  ASSERT_NO_FATAL_FAILURE(UploadProblem<T>(ctx, first, &d1));
  ASSERT_NO_FATAL_FAILURE(UploadProblem<T>(ctx, second, &d2));
  const size_t q_size = whole.q.size(), rows = whole.rows();
  LOOM_ASSERT_OK_AND_ASSIGN(DeviceBuffer out, DeviceBuffer::Create(a, kDType<T>, q_size, s));
  LOOM_ASSERT_OK_AND_ASSIGN(DeviceBuffer part_out, DeviceBuffer::Create(a, kDType<T>, q_size, s));
  LOOM_ASSERT_OK_AND_ASSIGN(DeviceBuffer lse, DeviceBuffer::Create(a, DType::kF32, rows, s));
  LOOM_ASSERT_OK_AND_ASSIGN(DeviceBuffer part_lse, DeviceBuffer::Create(a, DType::kF32, rows, s));
  LOOM_ASSERT_OK_AND_ASSIGN(DeviceBuffer delta, DeviceBuffer::Create(a, DType::kF32, rows, s));
  LOOM_ASSERT_OK_AND_ASSIGN(DeviceBuffer dq, DeviceBuffer::Create(a, DType::kF32, q_size, s));
  LOOM_ASSERT_OK_AND_ASSIGN(DeviceBuffer dk1,
                            DeviceBuffer::Create(a, DType::kF32, first.k.size(), s));
  LOOM_ASSERT_OK_AND_ASSIGN(DeviceBuffer dv1,
                            DeviceBuffer::Create(a, DType::kF32, first.v.size(), s));
  LOOM_ASSERT_OK_AND_ASSIGN(DeviceBuffer dk2,
                            DeviceBuffer::Create(a, DType::kF32, second.k.size(), s));
  LOOM_ASSERT_OK_AND_ASSIGN(DeviceBuffer dv2,
                            DeviceBuffer::Create(a, DType::kF32, second.v.size(), s));
  LOOM_ASSERT_CUDA_OK(gpu::FlashAttentionForward<T>(out.as<T>(), lse.as<float>(), d1.q.as<T>(),
                                                    d1.k.as<T>(), d1.v.as<T>(), d1.qt.spans(),
                                                    d1.kt.spans(), shape, whole.causal, s));
  LOOM_ASSERT_CUDA_OK(gpu::FlashAttentionForward<T>(
      part_out.as<T>(), part_lse.as<float>(), d2.q.as<T>(), d2.k.as<T>(), d2.v.as<T>(),
      d2.qt.spans(), d2.kt.spans(), shape, whole.causal, s));
  LOOM_ASSERT_CUDA_OK(gpu::FlashAttentionMerge<T>(out.as<T>(), lse.as<float>(), part_out.as<T>(),
                                                  part_lse.as<float>(), whole.Tq(), shape, s));
  LOOM_ASSERT_CUDA_OK(gpu::FlashAttentionDelta<T>(delta.as<float>(), d1.dout.as<float>(),
                                                  out.as<T>(), whole.Tq(), shape, s));
  struct KeySet {
    const DeviceProblem* inputs;
    float* dk;
    float* dv;
  };
  for (const KeySet& set : {KeySet{&d1, dk1.as<float>(), dv1.as<float>()},
                            KeySet{&d2, dk2.as<float>(), dv2.as<float>()}}) {
    const DeviceProblem& dp = *set.inputs;
    LOOM_ASSERT_CUDA_OK(gpu::FlashAttentionBackward<T>(
        dq.as<float>(), set.dk, set.dv, dp.dout.as<float>(), dp.q.as<T>(), dp.k.as<T>(),
        dp.v.as<T>(), lse.as<float>(), delta.as<float>(), dp.qt.spans(), dp.kt.spans(), shape,
        whole.causal, s));
  }
  const absl::Status sync = ctx.Synchronize();
  ASSERT_TRUE(sync.ok()) << sync;
  Result got;
  LOOM_ASSERT_OK_AND_ASSIGN(got.out, gpu::ToHost(out, s));
  LOOM_ASSERT_OK_AND_ASSIGN(got.lse, gpu::ToHost(lse, s));
  LOOM_ASSERT_OK_AND_ASSIGN(got.delta, gpu::ToHost(delta, s));
  LOOM_ASSERT_OK_AND_ASSIGN(got.dq, gpu::ToHost(dq, s));
  LOOM_ASSERT_OK_AND_ASSIGN(got.dk, gpu::ToHost(dk1, s));
  LOOM_ASSERT_OK_AND_ASSIGN(got.dv, gpu::ToHost(dv1, s));
  LOOM_ASSERT_OK_AND_ASSIGN(std::vector<float> dk_second, gpu::ToHost(dk2, s));
  LOOM_ASSERT_OK_AND_ASSIGN(std::vector<float> dv_second, gpu::ToHost(dv2, s));
  got.dk.insert(got.dk.end(), dk_second.begin(), dk_second.end());
  got.dv.insert(got.dv.end(), dv_second.begin(), dv_second.end());
  ExpectResultsMatch<T>(got, CpuAttention<T>(whole, ZeroGrads(whole)));

  // The GPU merge against the CPU merge of the CPU's two partial results.
  const Result cpu_first = CpuAttention<T>(first, ZeroGrads(first));
  const Result cpu_second = CpuAttention<T>(second, ZeroGrads(second));
  std::vector<float> merged_out = Stored<T>(cpu_first.out), merged_lse = cpu_first.lse;
  const std::vector<float> second_out = Stored<T>(cpu_second.out);
  AttentionMerge(merged_out.data(), merged_lse.data(), second_out.data(), cpu_second.lse.data(),
                 whole.Tq(), shape);
  EXPECT_LE(RelativeError(got.out, ToDouble(merged_out)), kTolerance<T>) << "merged out";
  ExpectLseMatches(got.lse, merged_lse);
}

#endif  // LOOM_HAVE_CUDA

TEST(CudaAttention, MergeOfTwoKeySetsEqualsOneCallOverTheirUnion) {
#ifndef LOOM_HAVE_CUDA
  LOOM_GPU_SKIP_WITHOUT_CUDA();
#else
  LOOM_GPU_CONTEXT_OR_SKIP(ctx);
  // Queries: positions 50..249 of document 0, 0..29 of document 1, 0..4 of document 2. Keys: the
  // first set holds the early positions of documents 0 and 1, the second the later ones and all
  // of document 2, so under the causal mask some rows see nothing in the second set (the merge
  // keeps the running result) and document 2 sees nothing in the first (the merge takes the part).
  PackedDocs queries, keys;
  AppendSpan(&queries, 0, 50, 250);
  AppendSpan(&queries, 1, 0, 30);
  AppendSpan(&queries, 2, 0, 5);
  AppendSpan(&keys, 0, 0, 120);
  AppendSpan(&keys, 1, 0, 10);
  const int tk_first = static_cast<int>(keys.doc.size());
  AppendSpan(&keys, 0, 120, 250);
  AppendSpan(&keys, 1, 10, 30);
  AppendSpan(&keys, 2, 0, 5);
  uint64_t seed = 700;
  for (bool causal : {true, false}) {
    SCOPED_TRACE(causal ? "causal" : "full");
    const Problem gqa = MakeProblem({4, 2, 64}, queries, keys, causal, seed += 10);
    ExpectRingMatchesUnion<float>(*ctx, gqa, tk_first);
    ExpectRingMatchesUnion<__nv_bfloat16>(*ctx, gqa, tk_first);
    const Problem mqa = MakeProblem({2, 1, 40}, queries, keys, causal, seed += 10);
    ExpectRingMatchesUnion<float>(*ctx, mqa, tk_first);
  }
#endif
}

#ifdef LOOM_HAVE_CUDA

template <typename T>
void ExpectMergeEdgeRowsMatchCpu(gpu::DeviceContext& ctx) {
  SCOPED_TRACE(TypeName<T>());
  const AttentionShape shape{2, 1, 8};
  const int Tq = 3, D = shape.head_dim;
  // Rows: both empty; running empty; part empty; both large (e^200 overflows fp32); ordinary.
  const std::vector<float> lse0 = {-kInf, -kInf, 1.5f, 200.0f, 0.3f, -2.0f};
  const std::vector<float> part_lse = {-kInf, 0.25f, -kInf, 201.0f, 0.1f, 3.0f};
  const std::vector<float> out0 = Stored<T>(RandomVector(lse0.size() * D, 801));
  const std::vector<float> part_out = Stored<T>(RandomVector(lse0.size() * D, 802));
  std::vector<float> want_out = out0, want_lse = lse0;
  AttentionMerge(want_out.data(), want_lse.data(), part_out.data(), part_lse.data(), Tq, shape);

  gpu::DeviceAllocator* a = ctx.allocator();
  cudaStream_t s = ctx.compute();
  LOOM_ASSERT_OK_AND_ASSIGN(DeviceBuffer out, gpu::ToDevice(a, out0, kDType<T>, s));
  LOOM_ASSERT_OK_AND_ASSIGN(DeviceBuffer lse, gpu::ToDevice(a, lse0, DType::kF32, s));
  LOOM_ASSERT_OK_AND_ASSIGN(DeviceBuffer pout, gpu::ToDevice(a, part_out, kDType<T>, s));
  LOOM_ASSERT_OK_AND_ASSIGN(DeviceBuffer plse, gpu::ToDevice(a, part_lse, DType::kF32, s));
  LOOM_ASSERT_CUDA_OK(gpu::FlashAttentionMerge<T>(out.as<T>(), lse.as<float>(), pout.as<T>(),
                                                  plse.as<float>(), Tq, shape, s));
  LOOM_ASSERT_OK_AND_ASSIGN(std::vector<float> got_out, gpu::ToHost(out, s));
  LOOM_ASSERT_OK_AND_ASSIGN(std::vector<float> got_lse, gpu::ToHost(lse, s));
  ASSERT_EQ(got_out.size(), want_out.size());
  EXPECT_EQ(got_lse[0], -kInf);
  EXPECT_EQ(got_lse[1], 0.25f);
  EXPECT_EQ(got_lse[2], 1.5f);
  for (int row = 3; row < 6; ++row) {
    // A few fp32 ulps of the larger LSE (expf and log1pf differ slightly between libraries).
    EXPECT_NEAR(got_lse[row], want_lse[row], 1e-6 * (1.0 + std::fabs(want_lse[row])))
        << "row " << row;
  }
  // Rows 0-2 keep or copy values exactly; rows 3-5 are recomputed.
  for (int i = 0; i < 3 * D; ++i) EXPECT_EQ(got_out[i], want_out[i]) << "element " << i;
  const std::vector<float> got_mixed(got_out.begin() + 3 * D, got_out.end());
  const std::vector<float> want_mixed(want_out.begin() + 3 * D, want_out.end());
  EXPECT_LE(RelativeError(got_mixed, ToDouble(want_mixed)), kTolerance<T>);
}

#endif  // LOOM_HAVE_CUDA

TEST(CudaAttention, MergeMatchesCpuOnEmptyAndLargeRows) {
#ifndef LOOM_HAVE_CUDA
  LOOM_GPU_SKIP_WITHOUT_CUDA();
#else
  LOOM_GPU_CONTEXT_OR_SKIP(ctx);
  ExpectMergeEdgeRowsMatchCpu<float>(*ctx);
  ExpectMergeEdgeRowsMatchCpu<__nv_bfloat16>(*ctx);
#endif
}

#ifdef LOOM_HAVE_CUDA

// Every row sees no key: out exactly 0 and lse -inf, and the backward adds exactly nothing.
template <typename T>
void ExpectNothingVisible(gpu::DeviceContext& ctx, const Problem& p) {
  SCOPED_TRACE(TypeName<T>());
  Result got;
  const Grads start = RandomGrads(p, 900);
  ASSERT_NO_FATAL_FAILURE(GpuAttention<T>(ctx, p, start, &got));
  for (float x : got.lse) ASSERT_EQ(x, -kInf);
  for (float x : got.out) ASSERT_EQ(x, 0.0f);
  EXPECT_EQ(got.dq, start.dq);
  EXPECT_EQ(got.dk, start.dk);
  EXPECT_EQ(got.dv, start.dv);
}

// An empty key set: the forward still writes every row, the backward leaves dq alone.
template <typename T>
void ExpectEmptyKeySet(gpu::DeviceContext& ctx) {
  SCOPED_TRACE(TypeName<T>());
  const PackedDocs queries = PackedDocsFromCuSeqlens({0, 3, 70});
  const Problem p = MakeProblem({2, 1, 64}, queries, PackedDocs{}, true, 950);
  gpu::DeviceAllocator* a = ctx.allocator();
  cudaStream_t s = ctx.compute();
  DeviceTokens qt;
  ASSERT_NO_FATAL_FAILURE(Upload(ctx, p.qt, &qt));
  LOOM_ASSERT_OK_AND_ASSIGN(DeviceBuffer q, gpu::ToDevice(a, p.q, kDType<T>, s));
  LOOM_ASSERT_OK_AND_ASSIGN(DeviceBuffer dout, gpu::ToDevice(a, p.dout, DType::kF32, s));
  LOOM_ASSERT_OK_AND_ASSIGN(DeviceBuffer out,
                            gpu::ToDevice(a, std::vector<float>(p.q.size(), 7.0f), kDType<T>, s));
  LOOM_ASSERT_OK_AND_ASSIGN(DeviceBuffer lse,
                            gpu::ToDevice(a, std::vector<float>(p.rows(), 7.0f), DType::kF32, s));
  LOOM_ASSERT_OK_AND_ASSIGN(DeviceBuffer delta,
                            gpu::ToDevice(a, std::vector<float>(p.rows()), DType::kF32, s));
  const std::vector<float> dq0 = RandomVector(p.q.size(), 960);
  LOOM_ASSERT_OK_AND_ASSIGN(DeviceBuffer dq, gpu::ToDevice(a, dq0, DType::kF32, s));
  const gpu::DeviceSpans no_keys{nullptr, nullptr, 0};
  LOOM_ASSERT_CUDA_OK(gpu::FlashAttentionForward<T>(out.as<T>(), lse.as<float>(), q.as<T>(),
                                                    nullptr, nullptr, qt.spans(), no_keys, p.shape,
                                                    true, s));
  LOOM_ASSERT_CUDA_OK(gpu::FlashAttentionBackward<T>(
      dq.as<float>(), nullptr, nullptr, dout.as<float>(), q.as<T>(), nullptr, nullptr,
      lse.as<float>(), delta.as<float>(), qt.spans(), no_keys, p.shape, true, s));
  const absl::Status sync = ctx.Synchronize();
  ASSERT_TRUE(sync.ok()) << sync;
  LOOM_ASSERT_OK_AND_ASSIGN(std::vector<float> got_out, gpu::ToHost(out, s));
  LOOM_ASSERT_OK_AND_ASSIGN(std::vector<float> got_lse, gpu::ToHost(lse, s));
  LOOM_ASSERT_OK_AND_ASSIGN(std::vector<float> got_dq, gpu::ToHost(dq, s));
  for (float x : got_lse) ASSERT_EQ(x, -kInf);
  for (float x : got_out) ASSERT_EQ(x, 0.0f);
  EXPECT_EQ(got_dq, dq0);
}

#endif  // LOOM_HAVE_CUDA

TEST(CudaAttention, RowsWithoutVisibleKeysAreZeroWithInfiniteLse) {
#ifndef LOOM_HAVE_CUDA
  LOOM_GPU_SKIP_WITHOUT_CUDA();
#else
  LOOM_GPU_CONTEXT_OR_SKIP(ctx);
  // Queries of document 0 against keys of document 1, and causal queries before every key.
  PackedDocs doc0, doc1, early, late;
  AppendSpan(&doc0, 0, 0, 150);
  AppendSpan(&doc1, 1, 0, 150);
  AppendSpan(&early, 0, 0, 150);
  AppendSpan(&late, 0, 150, 230);
  const Problem other_doc = MakeProblem({2, 1, 64}, doc0, doc1, false, 910);
  const Problem before_keys = MakeProblem({4, 2, 40}, early, late, true, 920);
  for (const Problem* p : {&other_doc, &before_keys}) {
    ExpectNothingVisible<float>(*ctx, *p);
    ExpectNothingVisible<__nv_bfloat16>(*ctx, *p);
  }
  ExpectEmptyKeySet<float>(*ctx);
  ExpectEmptyKeySet<__nv_bfloat16>(*ctx);
#endif
}

TEST(CudaAttention, RejectsUnsupportedShapes) {
#ifndef LOOM_HAVE_CUDA
  LOOM_GPU_SKIP_WITHOUT_CUDA();
#else
  LOOM_GPU_CONTEXT_OR_SKIP(ctx);
  // Checked before anything is launched, so no memory is touched.
  const gpu::DeviceSpans spans{nullptr, nullptr, 4};
  for (const AttentionShape& shape :
       {AttentionShape{2, 1, 12}, AttentionShape{2, 1, 264}, AttentionShape{2, 1, 0},
        AttentionShape{3, 2, 64}, AttentionShape{2, 0, 64}}) {
    SCOPED_TRACE(std::to_string(shape.n_heads) + "/" + std::to_string(shape.n_kv_heads) + "/" +
                 std::to_string(shape.head_dim));
    EXPECT_EQ(gpu::FlashAttentionForward<float>(nullptr, nullptr, nullptr, nullptr, nullptr, spans,
                                                spans, shape, true, ctx->compute()),
              cudaErrorInvalidValue);
    EXPECT_EQ(gpu::FlashAttentionBackward<__nv_bfloat16>(
                  nullptr, nullptr, nullptr, nullptr, nullptr, nullptr, nullptr, nullptr, nullptr,
                  spans, spans, shape, false, ctx->compute()),
              cudaErrorInvalidValue);
  }
  EXPECT_EQ(cudaGetLastError(), cudaSuccess) << "a rejected call must not launch anything";
#endif
}

}  // namespace
}  // namespace loom
