#include "src/kernels/attention.h"

#include <cblas.h>
#include <omp.h>

#include <algorithm>
#include <bit>
#include <cassert>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <vector>

#include "src/kernels/attention_blocks.h"

namespace loom {
namespace {

constexpr int kBlockQ = kAttentionBlockQ;
constexpr int kBlockK = kAttentionBlockK;
constexpr float kNegInf = -std::numeric_limits<float>::infinity();

// fp32 lanes as a GCC/Clang vector type, as wide as the target's float vectors (8 with AVX, else
// the 4 every SIMD target has, so no vector is passed in registers the ABI lacks). The exponential
// below is written on it directly: under -ftrapping-math (the default, which the rest of the
// numerics keeps) the auto-vectoriser will not if-convert the range checks of a scalar exp, and
// libm's expf does not vectorise at all.
#if defined(__AVX__)
constexpr int kLanes = 8;
#else
constexpr int kLanes = 4;
#endif
using Lanes = float __attribute__((vector_size(kLanes * sizeof(float))));
using IntLanes = int32_t __attribute__((vector_size(kLanes * sizeof(int32_t))));
static_assert(kBlockK % kLanes == 0, "score rows must hold whole lane groups");

inline Lanes Broadcast(float x) { return Lanes{} + x; }
inline Lanes LoadLanes(const float* p) {
  Lanes v;
  std::memcpy(&v, p, sizeof(v));
  return v;
}
inline void StoreLanes(float* p, Lanes v) { std::memcpy(p, &v, sizeof(v)); }
inline float SumLanes(Lanes v) {
  float sum = 0.0f;
  for (int l = 0; l < kLanes; ++l) sum += v[l];
  return sum;
}

// exp(x) per lane. Cody-Waite reduction x = n ln2 + r with |r| <= ln2 / 2 (ln2 split in two so
// n * kLn2Hi is exact), then the degree-7 Taylor polynomial of exp(r), whose truncation error
// (< 6e-9) is below fp32 rounding. Attention only exponentiates values <= 0 (up to rounding), so
// the top is simply clamped; results that would be subnormal flush to 0, exp(-inf) = 0 exactly,
// and NaN propagates.
inline Lanes ExpLanes(Lanes x) {
  constexpr float kLog2e = 1.44269504088896341f;
  constexpr float kLn2Hi = 0.693145751953125f;
  constexpr float kLn2Lo = 1.42860682030941723e-6f;
  constexpr float kRound = 12582912.0f;  // 1.5 * 2^23: adding and subtracting it rounds to integer
  const Lanes lo = Broadcast(-87.3f);    // exp(-87.3) is just above FLT_MIN
  const Lanes hi = Broadcast(88.0f);     // keeps n <= 127
  Lanes xc = x > lo ? x : lo;            // also maps NaN to lo, so the int conversion stays defined
  xc = xc < hi ? xc : hi;
  const Lanes n = (xc * kLog2e + kRound) - kRound;
  const Lanes r = (xc - n * kLn2Hi) - n * kLn2Lo;
  Lanes poly = Broadcast(1.0f / 5040.0f);
  poly = poly * r + 1.0f / 720.0f;
  poly = poly * r + 1.0f / 120.0f;
  poly = poly * r + 1.0f / 24.0f;
  poly = poly * r + 1.0f / 6.0f;
  poly = poly * r + 0.5f;
  poly = poly * r + 1.0f;
  poly = poly * r + 1.0f;
  const IntLanes exponent = (__builtin_convertvector(n, IntLanes) + 127) << 23;
  const Lanes y = x > lo ? poly * std::bit_cast<Lanes>(exponent) : Broadcast(0.0f);
  return x == x ? y : x;
}

// Score tiles have rows of kBlockK floats, a multiple of kLanes. Filling the columns between the
// block's last key and the next multiple of kLanes with -inf lets the exponential run on whole
// lane groups: those columns become probability 0 and never reach a matrix product.
inline int RoundUpToLanes(int cols) { return (cols + kLanes - 1) / kLanes * kLanes; }
void PadScoreRows(float* scores, int rows, int cols) {
  const int padded = RoundUpToLanes(cols);
  if (padded == cols) return;
  for (int i = 0; i < rows; ++i) {
    std::fill(scores + static_cast<ptrdiff_t>(i) * kBlockK + cols,
              scores + static_cast<ptrdiff_t>(i) * kBlockK + padded, kNegInf);
  }
}

// What the forward and backward share about one call: shapes, strides and the block ranges.
struct AttentionProblem {
  AttentionProblem(const TokenSpans& q, const TokenSpans& k, const AttentionShape& shape,
                   bool causal_mask)
      : q_spans(q),
        k_spans(k),
        n_heads(shape.n_heads),
        n_kv_heads(shape.n_kv_heads),
        head_dim(shape.head_dim),
        group(shape.n_heads / shape.n_kv_heads),
        causal(causal_mask),
        scale(1.0f / std::sqrt(static_cast<float>(shape.head_dim))),
        q_stride(shape.n_heads * shape.head_dim),
        kv_stride(shape.n_kv_heads * shape.head_dim),
        q_blocks(TokenBlockRanges(q, kBlockQ)),
        k_blocks(TokenBlockRanges(k, kBlockK)) {
    assert(shape.n_heads > 0 && shape.n_kv_heads > 0 && shape.head_dim > 0);
    assert(shape.n_heads % shape.n_kv_heads == 0);
  }

  int q_rows(int qb) const { return std::min(kBlockQ, q_spans.n - qb * kBlockQ); }
  int k_rows(int kb) const { return std::min(kBlockK, k_spans.n - kb * kBlockK); }
  int n_q_blocks() const { return static_cast<int>(q_blocks.size()); }
  int n_k_blocks() const { return static_cast<int>(k_blocks.size()); }
  BlockVisibility Visibility(int qb, int kb) const {
    return ClassifyBlockPair(q_blocks[qb], k_blocks[kb], causal);
  }

  const TokenSpans& q_spans;
  const TokenSpans& k_spans;
  int n_heads;
  int n_kv_heads;
  int head_dim;
  int group;  // query heads per key/value head
  bool causal;
  float scale;
  int q_stride;   // floats from one token to the next in q, out, dout, dq
  int kv_stride;  // ... in k, v, dk, dv
  std::vector<TokenBlockRange> q_blocks;
  std::vector<TokenBlockRange> k_blocks;
};

// Sets to -infinity the scores of a tile (row stride kBlockK) whose (query, key) pair is masked.
void MaskScores(float* scores, const AttentionProblem& p, int q0, int rows, int k0, int cols) {
  const int32_t* k_doc = p.k_spans.doc + k0;
  const int32_t* k_pos = p.k_spans.pos + k0;
  for (int i = 0; i < rows; ++i) {
    const int32_t doc = p.q_spans.doc[q0 + i];
    // Without the causal mask every key position passes.
    const int32_t pos = p.causal ? p.q_spans.pos[q0 + i] : std::numeric_limits<int32_t>::max();
    float* row = scores + static_cast<ptrdiff_t>(i) * kBlockK;
#pragma omp simd
    for (int j = 0; j < cols; ++j) {
      if (k_doc[j] != doc || k_pos[j] > pos) row[j] = kNegInf;
    }
  }
}

struct ForwardScratch {
  explicit ForwardScratch(int head_dim)
      : scores(kBlockQ * kBlockK),
        acc(static_cast<size_t>(kBlockQ) * head_dim),
        row_max(kBlockQ),
        row_sum(kBlockQ) {}
  std::vector<float> scores;   // [kBlockQ, kBlockK] scores, then probabilities
  std::vector<float> acc;      // [kBlockQ, head_dim] unnormalised output
  std::vector<float> row_max;  // running max of each row's scores
  std::vector<float> row_sum;  // running sum of exp(score - row_max)
};

// Output and LSE of query block qb, head h, over every key block it may see.
void ForwardQueryBlock(float* out, float* lse, const float* q, const float* k, const float* v,
                       const AttentionProblem& p, int h, int qb, ForwardScratch& s) {
  const int D = p.head_dim;
  const int q0 = qb * kBlockQ;
  const int rows = p.q_rows(qb);
  const float* q_block = q + static_cast<ptrdiff_t>(q0) * p.q_stride + h * D;
  const int kv_head = h / p.group;
  std::fill(s.acc.begin(), s.acc.end(), 0.0f);
  std::fill(s.row_max.begin(), s.row_max.end(), kNegInf);
  std::fill(s.row_sum.begin(), s.row_sum.end(), 0.0f);
  float* scores = s.scores.data();
  for (int kb = 0; kb < p.n_k_blocks(); ++kb) {
    const BlockVisibility visibility = p.Visibility(qb, kb);
    if (visibility == BlockVisibility::kNone) continue;
    const int k0 = kb * kBlockK;
    const int cols = p.k_rows(kb);
    const ptrdiff_t kv_offset = static_cast<ptrdiff_t>(k0) * p.kv_stride + kv_head * D;
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, rows, cols, D, p.scale, q_block,
                p.q_stride, k + kv_offset, p.kv_stride, 0.0f, scores, kBlockK);
    if (visibility == BlockVisibility::kPartial) MaskScores(scores, p, q0, rows, k0, cols);
    PadScoreRows(scores, rows, cols);
    const int padded = RoundUpToLanes(cols);
    for (int i = 0; i < rows; ++i) {
      float* row = scores + static_cast<ptrdiff_t>(i) * kBlockK;
      float new_max = s.row_max[i];
#pragma omp simd reduction(max : new_max)
      for (int j = 0; j < cols; ++j) new_max = std::max(new_max, row[j]);
      if (new_max == kNegInf) {
        // Nothing visible in this row yet: its probabilities are 0 and exp(-inf - -inf) must not
        // be formed.
        std::fill(row, row + cols, 0.0f);
        continue;
      }
      const Lanes row_max = Broadcast(new_max);
      Lanes sum = Broadcast(0.0f);
      for (int j = 0; j < padded; j += kLanes) {
        const Lanes prob = ExpLanes(LoadLanes(row + j) - row_max);
        StoreLanes(row + j, prob);
        sum += prob;
      }
      const float rescale = std::exp(s.row_max[i] - new_max);
      if (rescale != 1.0f) {
        float* acc_row = s.acc.data() + static_cast<ptrdiff_t>(i) * D;
        for (int d = 0; d < D; ++d) acc_row[d] *= rescale;
      }
      s.row_sum[i] = s.row_sum[i] * rescale + SumLanes(sum);
      s.row_max[i] = new_max;
    }
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, rows, D, cols, 1.0f, scores, kBlockK,
                v + kv_offset, p.kv_stride, 1.0f, s.acc.data(), D);
  }
  for (int i = 0; i < rows; ++i) {
    float* out_row = out + static_cast<ptrdiff_t>(q0 + i) * p.q_stride + h * D;
    float& row_lse = lse[static_cast<ptrdiff_t>(q0 + i) * p.n_heads + h];
    if (s.row_sum[i] > 0.0f) {
      const float inv = 1.0f / s.row_sum[i];
      const float* acc_row = s.acc.data() + static_cast<ptrdiff_t>(i) * D;
      for (int d = 0; d < D; ++d) out_row[d] = acc_row[d] * inv;
      row_lse = s.row_max[i] + std::log(s.row_sum[i]);
    } else {
      std::fill(out_row, out_row + D, 0.0f);
      row_lse = kNegInf;
    }
  }
}

struct BackwardScratch {
  explicit BackwardScratch(int head_dim)
      : probs(kBlockQ * kBlockK), dscores(kBlockQ * kBlockK), lse(kBlockQ), delta(kBlockQ) {
    (void)head_dim;
  }
  std::vector<float> probs;    // [kBlockQ, kBlockK] probabilities recomputed from the LSE
  std::vector<float> dscores;  // [kBlockQ, kBlockK] gradient of the probabilities, then scores
  std::vector<float> lse;      // the query block's LSE and delta for one head, contiguous
  std::vector<float> delta;
};

// Gradients of key block kb of kv head kv_head against query blocks [qb_begin, qb_end) of every
// query head that reads it, accumulated into the calling thread's own dq, dk and dv buffers.
void BackwardKeyBlock(float* dq, float* dk, float* dv, const float* dout, const float* q,
                      const float* k, const float* v, const float* lse, const float* delta,
                      const AttentionProblem& p, int kv_head, int kb, int qb_begin, int qb_end,
                      BackwardScratch& s) {
  const int D = p.head_dim;
  const int k0 = kb * kBlockK;
  const int cols = p.k_rows(kb);
  const ptrdiff_t kv_offset = static_cast<ptrdiff_t>(k0) * p.kv_stride + kv_head * D;
  const float* k_block = k + kv_offset;
  const float* v_block = v + kv_offset;
  float* dk_block = dk + kv_offset;
  float* dv_block = dv + kv_offset;
  const int padded = RoundUpToLanes(cols);
  float* probs = s.probs.data();
  float* dscores = s.dscores.data();
  for (int qb = qb_begin; qb < qb_end; ++qb) {
    const BlockVisibility visibility = p.Visibility(qb, kb);
    if (visibility == BlockVisibility::kNone) continue;
    const int q0 = qb * kBlockQ;
    const int rows = p.q_rows(qb);
    for (int h = kv_head * p.group; h < (kv_head + 1) * p.group; ++h) {
      const ptrdiff_t q_offset = static_cast<ptrdiff_t>(q0) * p.q_stride + h * D;
      const float* q_block = q + q_offset;
      const float* dout_block = dout + q_offset;
      for (int i = 0; i < rows; ++i) {
        s.lse[i] = lse[static_cast<ptrdiff_t>(q0 + i) * p.n_heads + h];
        s.delta[i] = delta[static_cast<ptrdiff_t>(q0 + i) * p.n_heads + h];
      }
      // P = exp(scale * Q K^T - lse), the final probabilities of this block's pairs.
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, rows, cols, D, p.scale, q_block,
                  p.q_stride, k_block, p.kv_stride, 0.0f, probs, kBlockK);
      if (visibility == BlockVisibility::kPartial) MaskScores(probs, p, q0, rows, k0, cols);
      PadScoreRows(probs, rows, cols);
      for (int i = 0; i < rows; ++i) {
        float* row = probs + static_cast<ptrdiff_t>(i) * kBlockK;
        const float row_lse = s.lse[i];
        if (row_lse == kNegInf) {  // the row sees no key at all: no gradient flows through it
          std::fill(row, row + cols, 0.0f);
          continue;
        }
        const Lanes lanes_lse = Broadcast(row_lse);
        for (int j = 0; j < padded; j += kLanes) {
          StoreLanes(row + j, ExpLanes(LoadLanes(row + j) - lanes_lse));
        }
      }
      // dV += P^T dO
      cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, cols, D, rows, 1.0f, probs, kBlockK,
                  dout_block, p.q_stride, 1.0f, dv_block, p.kv_stride);
      // dP = dO V^T, then dS = P * (dP - delta) * scale: the gradient of the scaled scores.
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, rows, cols, D, 1.0f, dout_block,
                  p.q_stride, v_block, p.kv_stride, 0.0f, dscores, kBlockK);
      for (int i = 0; i < rows; ++i) {
        const float* p_row = probs + static_cast<ptrdiff_t>(i) * kBlockK;
        float* ds_row = dscores + static_cast<ptrdiff_t>(i) * kBlockK;
        const float row_delta = s.delta[i];
#pragma omp simd
        for (int j = 0; j < cols; ++j) ds_row[j] = p_row[j] * (ds_row[j] - row_delta) * p.scale;
      }
      // dQ += dS K; dK += dS^T Q.
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, rows, D, cols, 1.0f, dscores, kBlockK,
                  k_block, p.kv_stride, 1.0f, dq + q_offset, p.q_stride);
      cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, cols, D, rows, 1.0f, dscores, kBlockK,
                  q_block, p.q_stride, 1.0f, dk_block, p.kv_stride);
    }
  }
}

}  // namespace

PackedDocs PackedDocsFromCuSeqlens(const std::vector<int32_t>& cu_seqlens) {
  PackedDocs docs;
  if (cu_seqlens.empty()) return docs;
  assert(cu_seqlens.front() == 0);
  docs.doc.reserve(cu_seqlens.back());
  docs.pos.reserve(cu_seqlens.back());
  for (size_t d = 0; d + 1 < cu_seqlens.size(); ++d) {
    assert(cu_seqlens[d + 1] >= cu_seqlens[d]);
    for (int32_t pos = 0; pos < cu_seqlens[d + 1] - cu_seqlens[d]; ++pos) {
      docs.doc.push_back(static_cast<int32_t>(d));
      docs.pos.push_back(pos);
    }
  }
  return docs;
}

void AttentionForward(float* out, float* lse, const float* q, const float* k, const float* v,
                      const TokenSpans& q_spans, const TokenSpans& k_spans,
                      const AttentionShape& shape, bool causal) {
  const AttentionProblem p(q_spans, k_spans, shape, causal);
  const int n_q_blocks = p.n_q_blocks();
  const int64_t n_tasks = static_cast<int64_t>(n_q_blocks) * p.n_heads;
#pragma omp parallel
  {
    ForwardScratch scratch(p.head_dim);
#pragma omp for schedule(dynamic, 1)
    for (int64_t task = 0; task < n_tasks; ++task) {
      // Under the causal mask later query blocks see more keys: hand them out first so the
      // cheap ones fill the gaps at the end.
      const int qb = n_q_blocks - 1 - static_cast<int>(task / p.n_heads);
      const int h = static_cast<int>(task % p.n_heads);
      ForwardQueryBlock(out, lse, q, k, v, p, h, qb, scratch);
    }
  }
}

void AttentionMerge(float* out, float* lse, const float* part_out, const float* part_lse, int Tq,
                    const AttentionShape& shape) {
  const int D = shape.head_dim;
  const int64_t n_rows = static_cast<int64_t>(Tq) * shape.n_heads;
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < n_rows; ++r) {
    const float a = lse[r];
    const float b = part_lse[r];
    float* o = out + r * D;
    const float* po = part_out + r * D;
    if (b == kNegInf) continue;  // the part saw no key of this row: nothing to fold in
    if (a == kNegInf) {          // the running result saw none: take the part as it is
      std::copy(po, po + D, o);
      lse[r] = b;
      continue;
    }
    // log(e^a + e^b) = hi + log1p(e^(lo - hi)) never exponentiates a positive number.
    const float hi = std::max(a, b);
    const float merged = hi + std::log1p(std::exp(std::min(a, b) - hi));
    const float wa = std::exp(a - merged);
    const float wb = std::exp(b - merged);
    for (int d = 0; d < D; ++d) o[d] = wa * o[d] + wb * po[d];
    lse[r] = merged;
  }
}

void AttentionBackwardDelta(float* delta, const float* dout, const float* out, int Tq,
                            const AttentionShape& shape) {
  const int D = shape.head_dim;
  const int64_t n_rows = static_cast<int64_t>(Tq) * shape.n_heads;
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < n_rows; ++r) {
    const float* a = dout + r * D;
    const float* b = out + r * D;
    float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
    for (int d = 0; d < D; ++d) sum += a[d] * b[d];
    delta[r] = sum;
  }
}

void AttentionBackward(float* dq, float* dk, float* dv, const float* dout, const float* q,
                       const float* k, const float* v, const float* lse, const float* delta,
                       const TokenSpans& q_spans, const TokenSpans& k_spans,
                       const AttentionShape& shape, bool causal) {
  const AttentionProblem p(q_spans, k_spans, shape, causal);
  const int n_q_blocks = p.n_q_blocks();
  const int n_k_blocks = p.n_k_blocks();
  // Tasks own a (kv head, key block) so dk and dv gather without contention. When there are too
  // few of those to keep every thread busy (a short key set, as in one ring step), each is cut
  // further into ranges of query blocks, whose dk/dv shares are then added under a lock as well.
  const int64_t kv_tasks = static_cast<int64_t>(p.n_kv_heads) * n_k_blocks;
  const int64_t wanted = 4 * static_cast<int64_t>(omp_get_max_threads());
  const int q_splits = kv_tasks == 0
                           ? 1
                           : static_cast<int>(std::clamp<int64_t>(
                                 (wanted + kv_tasks - 1) / kv_tasks, 1, std::max(n_q_blocks, 1)));
  const int64_t n_tasks = kv_tasks * q_splits;
  // Each thread accumulates into buffers of its own, which are then added to the outputs in
  // thread order. With tasks dealt to threads round-robin (a fixed mapping, not first come first
  // served), the gradients are the same bits on every run with the same thread count: bit-exact
  // resumption of training relies on it. The cost is one dq/dk/dv-sized buffer per thread.
  const int n_threads = omp_get_max_threads();
  const size_t dq_size = static_cast<size_t>(q_spans.n) * p.q_stride;
  const size_t dkv_size = static_cast<size_t>(k_spans.n) * p.kv_stride;
  const size_t per_thread = dq_size + 2 * dkv_size;
  std::vector<float> partial(per_thread * static_cast<size_t>(n_threads), 0.0f);
#pragma omp parallel num_threads(n_threads)
  {
    BackwardScratch scratch(p.head_dim);
    float* mine = partial.data() + per_thread * static_cast<size_t>(omp_get_thread_num());
#pragma omp for schedule(static, 1)
    for (int64_t task = 0; task < n_tasks; ++task) {
      // Key blocks in order: under the causal mask the early ones see the most queries, and
      // round-robin dealing spreads them over the threads.
      const int kb = static_cast<int>(task / (static_cast<int64_t>(p.n_kv_heads) * q_splits));
      const int rest = static_cast<int>(task % (static_cast<int64_t>(p.n_kv_heads) * q_splits));
      const int kv_head = rest / q_splits;
      const int split = rest % q_splits;
      const int qb_begin = static_cast<int>(static_cast<int64_t>(n_q_blocks) * split / q_splits);
      const int qb_end =
          static_cast<int>(static_cast<int64_t>(n_q_blocks) * (split + 1) / q_splits);
      BackwardKeyBlock(mine, mine + dq_size, mine + dq_size + dkv_size, dout, q, k, v, lse, delta,
                       p, kv_head, kb, qb_begin, qb_end, scratch);
    }
  }
  float* outputs[3] = {dq, dk, dv};
  const size_t offsets[3] = {0, dq_size, dq_size + dkv_size};
  const size_t sizes[3] = {dq_size, dkv_size, dkv_size};
  for (int o = 0; o < 3; ++o) {
    const int64_t n = static_cast<int64_t>(sizes[o]);
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < n; ++i) {
      float sum = 0.0f;
      for (int t = 0; t < n_threads; ++t) sum += partial[per_thread * t + offsets[o] + i];
      outputs[o][i] += sum;
    }
  }
}

}  // namespace loom
