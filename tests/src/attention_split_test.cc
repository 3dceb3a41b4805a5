// The attention kernel as ring attention uses it: queries and keys split into parts (zigzag
// pieces with their in-document positions, or arbitrary token subsets), forward per key part
// merged with AttentionMerge, backward per key part with the merged LSE and delta. The result must
// equal the kernel on the whole set. Also: the block classification is conservative, and the
// blocks it skips are really not computed.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <random>
#include <vector>

#include "src/kernels/attention.h"
#include "src/kernels/attention_blocks.h"
#include "tests/src/test_util.h"

namespace loom {
namespace {

using test::kFp32Tolerance;
using test::RandomVector;
using test::RelativeError;
using test::ToDouble;

constexpr float kInf = std::numeric_limits<float>::infinity();
using Parts = std::vector<std::vector<int>>;  // token indices of each part

std::vector<float> GatherRows(const std::vector<float>& x, const std::vector<int>& rows,
                              int width) {
  std::vector<float> out;
  for (int r : rows) out.insert(out.end(), x.begin() + r * width, x.begin() + (r + 1) * width);
  return out;
}

void ScatterAddRows(std::vector<float>& x, const std::vector<float>& part,
                    const std::vector<int>& rows, int width) {
  for (size_t i = 0; i < rows.size(); ++i) {
    for (int d = 0; d < width; ++d) x[rows[i] * width + d] += part[i * width + d];
  }
}

PackedDocs GatherTokens(const PackedDocs& t, const std::vector<int>& rows) {
  PackedDocs out;
  for (int r : rows) out.doc.push_back(t.doc[r]), out.pos.push_back(t.pos[r]);
  return out;
}

// Each document cut into 2c pieces whose lengths differ by at most one (lengths need not divide,
// short documents leave pieces empty); part r holds pieces r and 2c-1-r, as zigzag sharding does.
Parts ZigzagParts(const std::vector<int32_t>& cu_seqlens, int c) {
  Parts parts(c);
  for (size_t d = 0; d + 1 < cu_seqlens.size(); ++d) {
    const int begin = cu_seqlens[d], length = cu_seqlens[d + 1] - begin;
    for (int piece = 0; piece < 2 * c; ++piece) {
      const int rank = piece < c ? piece : 2 * c - 1 - piece;
      for (int t = length * piece / (2 * c); t < length * (piece + 1) / (2 * c); ++t) {
        parts[rank].push_back(begin + t);
      }
    }
  }
  return parts;
}

Parts RandomParts(int n_tokens, int n_parts, uint64_t seed) {
  std::mt19937_64 rng(seed);
  Parts parts(n_parts);
  for (int t = 0; t < n_tokens; ++t) parts[rng() % n_parts].push_back(t);
  return parts;
}

void ExpectLseEqual(const std::vector<float>& got, const std::vector<float>& want) {
  ASSERT_EQ(got.size(), want.size());
  std::vector<double> finite_got, finite_want;
  for (size_t i = 0; i < got.size(); ++i) {
    ASSERT_EQ(got[i] == -kInf, want[i] == -kInf) << "row " << i;
    if (want[i] != -kInf) finite_got.push_back(got[i]), finite_want.push_back(want[i]);
  }
  EXPECT_LE(RelativeError(finite_got, finite_want), kFp32Tolerance);
}

// Runs the whole problem, then every (query part, key part) pair as a ring would, and compares.
void ExpectSplitMatchesWhole(const AttentionShape& shape, const std::vector<int32_t>& cu_seqlens,
                             bool causal, const Parts& q_parts, const Parts& k_parts) {
  const PackedDocs docs = PackedDocsFromCuSeqlens(cu_seqlens);
  const int T = static_cast<int>(docs.doc.size());
  const int H = shape.n_heads, qw = H * shape.head_dim, kw = shape.n_kv_heads * shape.head_dim;
  const std::vector<float> q = RandomVector(T * qw, 1, 1.5f), k = RandomVector(T * kw, 2),
                           v = RandomVector(T * kw, 3), dout = RandomVector(T * qw, 4);
  std::vector<float> out(T * qw), lse(T * H), delta(T * H), dq(T * qw), dk(T * kw), dv(T * kw);
  AttentionForward(out.data(), lse.data(), q.data(), k.data(), v.data(), docs.spans(), docs.spans(),
                   shape, causal);
  AttentionBackwardDelta(delta.data(), dout.data(), out.data(), T, shape);
  AttentionBackward(dq.data(), dk.data(), dv.data(), dout.data(), q.data(), k.data(), v.data(),
                    lse.data(), delta.data(), docs.spans(), docs.spans(), shape, causal);

  std::vector<float> split_out(out.size()), split_lse(lse.size()), split_dq(dq.size()),
      split_dk(dk.size()), split_dv(dv.size());
  for (const std::vector<int>& qp : q_parts) {
    const int n = static_cast<int>(qp.size());
    const PackedDocs qt = GatherTokens(docs, qp);
    const std::vector<float> q_part = GatherRows(q, qp, qw), dout_part = GatherRows(dout, qp, qw);
    std::vector<float> o(n * qw, 0.0f), l(n * H, -kInf), part_o(n * qw), part_l(n * H);
    for (const std::vector<int>& kp : k_parts) {
      const PackedDocs kt = GatherTokens(docs, kp);
      AttentionForward(part_o.data(), part_l.data(), q_part.data(), GatherRows(k, kp, kw).data(),
                       GatherRows(v, kp, kw).data(), qt.spans(), kt.spans(), shape, causal);
      AttentionMerge(o.data(), l.data(), part_o.data(), part_l.data(), n, shape);
    }
    std::vector<float> d(n * H), dq_part(n * qw, 0.0f);
    AttentionBackwardDelta(d.data(), dout_part.data(), o.data(), n, shape);
    for (const std::vector<int>& kp : k_parts) {
      const PackedDocs kt = GatherTokens(docs, kp);
      std::vector<float> dk_part(kp.size() * kw, 0.0f), dv_part(kp.size() * kw, 0.0f);
      AttentionBackward(dq_part.data(), dk_part.data(), dv_part.data(), dout_part.data(),
                        q_part.data(), GatherRows(k, kp, kw).data(), GatherRows(v, kp, kw).data(),
                        l.data(), d.data(), qt.spans(), kt.spans(), shape, causal);
      ScatterAddRows(split_dk, dk_part, kp, kw);
      ScatterAddRows(split_dv, dv_part, kp, kw);
    }
    ScatterAddRows(split_out, o, qp, qw);
    ScatterAddRows(split_lse, l, qp, H);
    ScatterAddRows(split_dq, dq_part, qp, qw);
  }
  EXPECT_LE(RelativeError(split_out, ToDouble(out)), kFp32Tolerance) << "out";
  ExpectLseEqual(split_lse, lse);
  EXPECT_LE(RelativeError(split_dq, ToDouble(dq)), kFp32Tolerance) << "dq";
  EXPECT_LE(RelativeError(split_dk, ToDouble(dk)), kFp32Tolerance) << "dk";
  EXPECT_LE(RelativeError(split_dv, ToDouble(dv)), kFp32Tolerance) << "dv";
}

TEST(AttentionSplit, ZigzagPiecesMergeToTheWhole) {
  // A 1-token document (empty pieces), one longer than a block, lengths not divisible by 2c.
  const std::vector<int32_t> cu = {0, 1, 300, 371, 372, 640};
  for (int c : {2, 3}) {
    SCOPED_TRACE(c);
    const Parts parts = ZigzagParts(cu, c);
    ExpectSplitMatchesWhole({4, 2, 16}, cu, /*causal=*/true, parts, parts);
    ExpectSplitMatchesWhole({4, 1, 8}, cu, /*causal=*/true, parts, parts);
  }
}

TEST(AttentionSplit, ArbitraryTokenSubsetsMergeToTheWhole) {
  // Random subsets interleave documents and positions inside every block, so block ranges are
  // wide and the classification must stay conservative.
  const std::vector<int32_t> cu = {0, 200, 201, 333, 590};
  ExpectSplitMatchesWhole({4, 2, 16}, cu, /*causal=*/true, RandomParts(590, 3, 7),
                          RandomParts(590, 3, 8));
  ExpectSplitMatchesWhole({2, 2, 16}, cu, /*causal=*/false, RandomParts(590, 2, 9),
                          RandomParts(590, 3, 10));
}

TEST(AttentionBlocks, SkippedBlocksAreNotComputed) {
  // One query block: document 0, positions 0..127. Key block 0 matches it; key block 1 is another
  // document, key block 2 lies after every query. Blocks 1 and 2 hold NaN: had they been computed,
  // even with every probability 0, NaN would reach the output (0 * NaN) and the gradients.
  constexpr int B = kAttentionBlockK;
  static_assert(kAttentionBlockQ >= B);
  const AttentionShape shape{2, 1, 8};
  PackedDocs qt, kt;
  for (int t = 0; t < B; ++t) qt.doc.push_back(0), qt.pos.push_back(t);
  for (int t = 0; t < 3 * B; ++t) {
    const int block = t / B;
    kt.doc.push_back(block == 1 ? 5 : 0);
    kt.pos.push_back(t % B + (block == 2 ? B : 0));
  }
  const BlockPairCounts counts = CountBlockPairs(qt.spans(), kt.spans(), true);
  EXPECT_EQ(counts.none, 2);
  EXPECT_EQ(counts.partial, 1);

  const int qw = 2 * 8, kw = 8;
  const std::vector<float> q = RandomVector(B * qw, 1), dout = RandomVector(B * qw, 2);
  std::vector<float> k = RandomVector(3 * B * kw, 3), v = RandomVector(3 * B * kw, 4);
  std::fill(k.begin() + B * kw, k.end(), std::nanf(""));
  std::fill(v.begin() + B * kw, v.end(), std::nanf(""));
  auto run = [&](int n_keys) {
    PackedDocs keys = kt;
    keys.doc.resize(n_keys), keys.pos.resize(n_keys);
    std::vector<float> out(B * qw), lse(B * 2), delta(B * 2), dq(B * qw), dk(n_keys * kw),
        dv(n_keys * kw);
    AttentionForward(out.data(), lse.data(), q.data(), k.data(), v.data(), qt.spans(), keys.spans(),
                     shape, true);
    AttentionBackwardDelta(delta.data(), dout.data(), out.data(), B, shape);
    AttentionBackward(dq.data(), dk.data(), dv.data(), dout.data(), q.data(), k.data(), v.data(),
                      lse.data(), delta.data(), qt.spans(), keys.spans(), shape, true);
    return std::vector<std::vector<float>>{out, lse, dq, dk, dv};
  };
  const auto all = run(3 * B), first = run(B);
  // The skipped blocks contribute nothing, so the results are exactly those of block 0 alone,
  // and the gradients of the skipped keys stay untouched.
  for (int i = 0; i < 3; ++i) EXPECT_EQ(all[i], first[i]) << i;
  for (int i = 3; i < 5; ++i) {
    EXPECT_TRUE(std::equal(first[i].begin(), first[i].end(), all[i].begin())) << i;
    EXPECT_TRUE(std::all_of(all[i].begin() + B * kw, all[i].end(), [](float x) { return x == 0; }));
  }
}

TEST(AttentionBlocks, CountsFollowTheMask) {
  static_assert(kAttentionBlockQ == kAttentionBlockK, "the counts below assume square blocks");
  constexpr int B = kAttentionBlockQ;
  // One document of 7.5 blocks: 8 blocks, causal visits the lower triangle, diagonal masked.
  const PackedDocs one = PackedDocsFromCuSeqlens({0, 7 * B + B / 2});
  const BlockPairCounts causal = CountBlockPairs(one.spans(), one.spans(), true);
  EXPECT_EQ(causal.none, 28);
  EXPECT_EQ(causal.all, 28);
  EXPECT_EQ(causal.partial, 8);
  EXPECT_EQ(CountBlockPairs(one.spans(), one.spans(), false).all, 64);
  // Four documents of exactly one block each: only the diagonal is visited.
  const PackedDocs four = PackedDocsFromCuSeqlens({0, B, 2 * B, 3 * B, 4 * B});
  const BlockPairCounts packed = CountBlockPairs(four.spans(), four.spans(), true);
  EXPECT_EQ(packed.none, 12);
  EXPECT_EQ(packed.partial, 4);
  EXPECT_EQ(CountBlockPairs(four.spans(), four.spans(), false).all, 4);
}

TEST(AttentionBlocks, ClassificationIsConservative) {
  // Token sets whose blocks mix documents and positions arbitrarily, and sorted packed ones: a
  // skipped pair has no visible token pair, an unmasked pair has only visible ones.
  std::mt19937_64 rng(42);
  int64_t seen[3] = {0, 0, 0};
  for (int trial = 0; trial < 24; ++trial) {
    PackedDocs qt, kt;
    for (PackedDocs* t : {&qt, &kt}) {
      const int n = 200 + static_cast<int>(rng() % 300);
      const bool sorted = trial % 2 == 0;
      for (int i = 0; i < n; ++i) {
        t->doc.push_back(sorted ? i / 150 : static_cast<int32_t>(rng() % 3));
        t->pos.push_back(sorted ? i % 150 + static_cast<int32_t>(rng() % 2) * (t == &qt ? 60 : 0)
                                : static_cast<int32_t>(rng() % 300));
      }
    }
    const bool causal = trial % 4 < 2;
    const auto q_blocks = TokenBlockRanges(qt.spans(), kAttentionBlockQ);
    const auto k_blocks = TokenBlockRanges(kt.spans(), kAttentionBlockK);
    for (size_t qb = 0; qb < q_blocks.size(); ++qb) {
      for (size_t kb = 0; kb < k_blocks.size(); ++kb) {
        bool any = false, every = true;
        const int q_end = std::min<int>((qb + 1) * kAttentionBlockQ, qt.doc.size());
        const int k_end = std::min<int>((kb + 1) * kAttentionBlockK, kt.doc.size());
        for (int i = qb * kAttentionBlockQ; i < q_end; ++i) {
          for (int j = kb * kAttentionBlockK; j < k_end; ++j) {
            const bool visible = qt.doc[i] == kt.doc[j] && (!causal || kt.pos[j] <= qt.pos[i]);
            any |= visible;
            every &= visible;
          }
        }
        const BlockVisibility c = ClassifyBlockPair(q_blocks[qb], k_blocks[kb], causal);
        ++seen[static_cast<int>(c)];
        if (c == BlockVisibility::kNone) {
          EXPECT_FALSE(any) << trial << " " << qb << " " << kb;
        }
        if (c == BlockVisibility::kAll) {
          EXPECT_TRUE(every) << trial << " " << qb << " " << kb;
        }
      }
    }
  }
  for (int64_t n : seen) EXPECT_GT(n, 0);  // every kind occurred
}

}  // namespace
}  // namespace loom
