// The attention kernel against a dense float64 reference (masked softmax attention written
// directly from the definition), the reference against central finite differences, and the edge
// cases of the contract: 1-token documents, rows that see no key, merging, accumulation.
#include "src/kernels/attention.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <string>
#include <utility>
#include <vector>

#include "tests/src/test_util.h"

namespace loom {
namespace {

using test::kFp32Tolerance;
using test::RandomVector;
using test::RelativeError;
using test::ToDouble;

constexpr double kInf = std::numeric_limits<double>::infinity();

bool Visible(const PackedDocs& qt, int i, const PackedDocs& kt, int j, bool causal) {
  return qt.doc[i] == kt.doc[j] && (!causal || kt.pos[j] <= qt.pos[i]);
}

struct Reference {
  std::vector<double> out, lse, dq, dk, dv;
};

// Dense masked softmax attention in double; gradients of sum(out * dout) when dout is given.
Reference ReferenceAttention(const std::vector<double>& q, const std::vector<double>& k,
                             const std::vector<double>& v, const std::vector<double>& dout,
                             const PackedDocs& qt, const PackedDocs& kt, const AttentionShape& s,
                             bool causal) {
  const int Tq = static_cast<int>(qt.doc.size()), Tk = static_cast<int>(kt.doc.size());
  const int H = s.n_heads, Hkv = s.n_kv_heads, D = s.head_dim;
  const double scale = 1.0 / std::sqrt(static_cast<double>(D));
  Reference r{std::vector<double>(q.size()), std::vector<double>(static_cast<size_t>(Tq) * H),
              std::vector<double>(q.size()), std::vector<double>(k.size()),
              std::vector<double>(v.size())};
  for (int i = 0; i < Tq; ++i) {
    for (int h = 0; h < H; ++h) {
      const int g = h / (H / Hkv);
      const double* qi = &q[(static_cast<size_t>(i) * H + h) * D];
      auto krow = [&](const std::vector<double>& x, int j) { return &x[(j * Hkv + g) * D]; };
      std::vector<double> p(Tk, 0.0);
      double max = -kInf;
      for (int j = 0; j < Tk; ++j) {
        if (!Visible(qt, i, kt, j, causal)) continue;
        for (int d = 0; d < D; ++d) p[j] += scale * qi[d] * krow(k, j)[d];
        max = std::max(max, p[j]);
      }
      double& lse = r.lse[i * H + h];
      if (max == -kInf) {
        lse = -kInf;
        continue;
      }
      double sum = 0.0;
      for (int j = 0; j < Tk; ++j) sum += Visible(qt, i, kt, j, causal) ? std::exp(p[j] - max) : 0;
      lse = max + std::log(sum);
      for (int j = 0; j < Tk; ++j) p[j] = Visible(qt, i, kt, j, causal) ? std::exp(p[j] - lse) : 0;
      double* oi = &r.out[(static_cast<size_t>(i) * H + h) * D];
      for (int j = 0; j < Tk; ++j) {
        for (int d = 0; d < D; ++d) oi[d] += p[j] * krow(v, j)[d];
      }
      if (dout.empty()) continue;
      const double* doi = &dout[(static_cast<size_t>(i) * H + h) * D];
      double delta = 0.0;
      for (int d = 0; d < D; ++d) delta += doi[d] * oi[d];
      for (int j = 0; j < Tk; ++j) {
        if (p[j] == 0.0) continue;
        double dp = 0.0;
        for (int d = 0; d < D; ++d) dp += doi[d] * krow(v, j)[d];
        const double ds = p[j] * (dp - delta) * scale;
        for (int d = 0; d < D; ++d) {
          r.dq[(static_cast<size_t>(i) * H + h) * D + d] += ds * krow(k, j)[d];
          r.dk[(j * Hkv + g) * D + d] += ds * qi[d];
          r.dv[(j * Hkv + g) * D + d] += p[j] * doi[d];
        }
      }
    }
  }
  return r;
}

struct Problem {
  AttentionShape shape;
  PackedDocs qt, kt;
  bool causal = true;
  std::vector<float> q, k, v, dout;
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

struct KernelResult {
  std::vector<float> out, lse, dq, dk, dv;
};

KernelResult RunKernel(const Problem& p) {
  const int Tq = static_cast<int>(p.qt.doc.size());
  KernelResult r{std::vector<float>(p.q.size()), std::vector<float>(Tq * p.shape.n_heads),
                 std::vector<float>(p.q.size()), std::vector<float>(p.k.size()),
                 std::vector<float>(p.v.size())};
  AttentionForward(r.out.data(), r.lse.data(), p.q.data(), p.k.data(), p.v.data(), p.qt.spans(),
                   p.kt.spans(), p.shape, p.causal);
  std::vector<float> delta(r.lse.size());
  AttentionBackwardDelta(delta.data(), p.dout.data(), r.out.data(), Tq, p.shape);
  AttentionBackward(r.dq.data(), r.dk.data(), r.dv.data(), p.dout.data(), p.q.data(), p.k.data(),
                    p.v.data(), r.lse.data(), delta.data(), p.qt.spans(), p.kt.spans(), p.shape,
                    p.causal);
  return r;
}

// -inf exactly where the reference has it, relative error elsewhere.
void ExpectLseMatches(const std::vector<float>& got, const std::vector<double>& want) {
  ASSERT_EQ(got.size(), want.size());
  std::vector<double> finite_got, finite_want;
  for (size_t i = 0; i < got.size(); ++i) {
    if (want[i] == -kInf) {
      EXPECT_EQ(got[i], -std::numeric_limits<float>::infinity()) << "row " << i;
    } else {
      finite_got.push_back(got[i]);
      finite_want.push_back(want[i]);
    }
  }
  EXPECT_LE(RelativeError(finite_got, finite_want), kFp32Tolerance);
}

void ExpectMatchesReference(const Problem& p) {
  const KernelResult got = RunKernel(p);
  const Reference want = ReferenceAttention(ToDouble(p.q), ToDouble(p.k), ToDouble(p.v),
                                            ToDouble(p.dout), p.qt, p.kt, p.shape, p.causal);
  EXPECT_LE(RelativeError(got.out, want.out), kFp32Tolerance) << "out";
  ExpectLseMatches(got.lse, want.lse);
  EXPECT_LE(RelativeError(got.dq, want.dq), kFp32Tolerance) << "dq";
  EXPECT_LE(RelativeError(got.dk, want.dk), kFp32Tolerance) << "dk";
  EXPECT_LE(RelativeError(got.dv, want.dv), kFp32Tolerance) << "dv";
}

struct Case {
  std::string name;
  AttentionShape shape;
  std::vector<int32_t> cu_seqlens;
  bool causal;
};

TEST(Attention, MatchesFloat64Reference) {
  // Blocks are 128 tokens: documents of 1 token, longer than a block, straddling block edges,
  // and totals that are not multiples of the block size.
  const std::vector<Case> cases = {
      {"packed causal GQA", {4, 2, 16}, {0, 1, 130, 200, 457, 460}, true},
      {"packed causal MQA", {4, 1, 32}, {0, 300, 301, 512}, true},
      {"packed non-causal", {2, 2, 8}, {0, 5, 205, 206, 296}, false},
      {"one long document", {2, 2, 64}, {0, 333}, true},
      {"a single 1-token document", {3, 1, 8}, {0, 1}, true},
  };
  uint64_t seed = 10;
  for (const Case& c : cases) {
    SCOPED_TRACE(c.name);
    const PackedDocs docs = PackedDocsFromCuSeqlens(c.cu_seqlens);
    ExpectMatchesReference(MakeProblem(c.shape, docs, docs, c.causal, seed += 10));
  }
}

TEST(Attention, KeysOffsetFromQueries) {
  // One ring step: queries are the second half of a document (positions 100..229), keys the
  // first 180 tokens, so some key blocks are fully visible, some partly, some not at all.
  PackedDocs qt, kt;
  for (int t = 100; t < 230; ++t) qt.doc.push_back(0), qt.pos.push_back(t);
  for (int t = 0; t < 180; ++t) kt.doc.push_back(0), kt.pos.push_back(t);
  ExpectMatchesReference(MakeProblem({4, 2, 16}, qt, kt, true, 77));
  ExpectMatchesReference(MakeProblem({4, 2, 16}, kt, qt, true, 78));  // some rows see no key
}

TEST(Attention, ReferenceAndKernelMatchFiniteDifferences) {
  // loss = sum(out * w): the reference forward, differentiated by central differences, checks
  // both the reference backward (double, so kFiniteDifferenceTolerance) and the fp32 kernel
  // (kFp32Tolerance: fp32 rounding of these short sums is ~1e-7, the differences' error ~1e-10).
  for (bool causal : {true, false}) {
    SCOPED_TRACE(causal ? "causal" : "non-causal");
    const PackedDocs docs = PackedDocsFromCuSeqlens({0, 3, 4, 7});
    const Problem p = MakeProblem({2, 1, 3}, docs, docs, causal, 5);
    const size_t nq = p.q.size(), nk = p.k.size();
    std::vector<double> x = ToDouble(p.q);
    for (float f : p.k) x.push_back(f);
    for (float f : p.v) x.push_back(f);
    const std::vector<double> w = ToDouble(p.dout);
    auto loss = [&](const std::vector<double>& xs) {
      const std::vector<double> q(xs.begin(), xs.begin() + nq);
      const std::vector<double> k(xs.begin() + nq, xs.begin() + nq + nk);
      const std::vector<double> v(xs.begin() + nq + nk, xs.end());
      return test::Dot(ReferenceAttention(q, k, v, {}, p.qt, p.kt, p.shape, causal).out, w);
    };
    const std::vector<double> numeric = test::FiniteDifferenceGradient(loss, x);
    const Reference ref = ReferenceAttention(ToDouble(p.q), ToDouble(p.k), ToDouble(p.v), w, p.qt,
                                             p.kt, p.shape, causal);
    const KernelResult got = RunKernel(p);
    std::vector<double> analytic = ref.dq, kernel = ToDouble(got.dq);
    analytic.insert(analytic.end(), ref.dk.begin(), ref.dk.end());
    analytic.insert(analytic.end(), ref.dv.begin(), ref.dv.end());
    kernel.insert(kernel.end(), got.dk.begin(), got.dk.end());
    kernel.insert(kernel.end(), got.dv.begin(), got.dv.end());
    EXPECT_LE(RelativeError(analytic, numeric), test::kFiniteDifferenceTolerance);
    EXPECT_LE(RelativeError(kernel, numeric), kFp32Tolerance);
  }
}

TEST(Attention, RowsWithoutVisibleKeysAreZeroWithInfiniteLse) {
  // Queries of document 0 against keys of document 1, and causal queries before every key.
  PackedDocs q0, k1, early, late;
  for (int t = 0; t < 150; ++t) {
    q0.doc.push_back(0), q0.pos.push_back(t);
    k1.doc.push_back(1), k1.pos.push_back(t);
    early.doc.push_back(0), early.pos.push_back(t);
    late.doc.push_back(0), late.pos.push_back(t + 150);
  }
  for (const auto& [qt, kt] : {std::pair{q0, k1}, std::pair{early, late}}) {
    const Problem p = MakeProblem({2, 1, 8}, qt, kt, true, 3);
    const KernelResult r = RunKernel(p);
    for (float x : r.lse) EXPECT_EQ(x, -std::numeric_limits<float>::infinity());
    for (const std::vector<float>* g : {&r.out, &r.dq, &r.dk, &r.dv}) {
      for (float x : *g) ASSERT_EQ(x, 0.0f);
    }
  }
}

TEST(AttentionMerge, FoldsPartsStablyAndKeepsEmptyRowsEmpty) {
  const AttentionShape shape{2, 1, 2};
  const float inf = std::numeric_limits<float>::infinity();
  // Rows: both empty; running empty; part empty; both large (e^200 would overflow fp32).
  std::vector<float> out = {0, 0, 0, 0, 1, 2, 3, 4};
  std::vector<float> lse = {-inf, -inf, 1.5f, 200.0f};
  const std::vector<float> part_out = {0, 0, 5, 6, 0, 0, 7, 8};
  const std::vector<float> part_lse = {-inf, 0.25f, -inf, 201.0f};
  AttentionMerge(out.data(), lse.data(), part_out.data(), part_lse.data(), 2, shape);
  const double merged = 201.0 + std::log1p(std::exp(-1.0));
  const double wa = std::exp(200.0 - merged), wb = std::exp(201.0 - merged);
  EXPECT_EQ(lse[0], -inf);
  EXPECT_EQ(out[0], 0.0f);
  EXPECT_EQ(out[1], 0.0f);
  EXPECT_EQ(lse[1], 0.25f);
  EXPECT_EQ(out[2], 5.0f);
  EXPECT_EQ(out[3], 6.0f);
  EXPECT_EQ(lse[2], 1.5f);
  EXPECT_EQ(out[4], 1.0f);
  EXPECT_EQ(out[5], 2.0f);
  EXPECT_NEAR(lse[3], merged, 3e-5);  // two fp32 ulps at 200
  EXPECT_NEAR(out[6], wa * 3 + wb * 7, 1e-5);
  EXPECT_NEAR(out[7], wa * 4 + wb * 8, 1e-5);
}

TEST(Attention, BackwardAccumulatesIntoGradients) {
  const PackedDocs docs = PackedDocsFromCuSeqlens({0, 40, 200});
  const Problem p = MakeProblem({2, 2, 16}, docs, docs, true, 9);
  const KernelResult once = RunKernel(p);
  std::vector<float> dq = once.dq, dk = once.dk, dv = once.dv, delta(once.lse.size());
  AttentionBackwardDelta(delta.data(), p.dout.data(), once.out.data(), 200, p.shape);
  AttentionBackward(dq.data(), dk.data(), dv.data(), p.dout.data(), p.q.data(), p.k.data(),
                    p.v.data(), once.lse.data(), delta.data(), p.qt.spans(), p.kt.spans(), p.shape,
                    true);
  for (auto [twice, single] :
       {std::pair{&dq, &once.dq}, std::pair{&dk, &once.dk}, std::pair{&dv, &once.dv}}) {
    std::vector<double> doubled = ToDouble(*single);
    for (double& x : doubled) x *= 2.0;
    EXPECT_LE(RelativeError(*twice, doubled), 1e-6);
  }
}

TEST(PackedDocs, FromCuSeqlensNumbersDocumentsAndPositions) {
  const PackedDocs docs = PackedDocsFromCuSeqlens({0, 2, 2, 5});  // the middle document is empty
  EXPECT_EQ(docs.doc, (std::vector<int32_t>{0, 0, 2, 2, 2}));
  EXPECT_EQ(docs.pos, (std::vector<int32_t>{0, 1, 0, 1, 2}));
  EXPECT_EQ(docs.spans().n, 5);
}

}  // namespace
}  // namespace loom
