// Grouped-query attention over packed variable-length documents, blockwise with an online softmax
// (flash-attention style): memory O(T * head_dim), never a T x T matrix.
//
// The kernel works on one (query set, key/value set) pair. Each token carries the id of its
// document and its position within that document, so the same call covers a packed batch on one
// rank, one step of ring attention (keys from another rank, any offset between query and key
// positions), and a chunk attending to the cached K/V of earlier chunks. Query i may attend key j
// iff doc[i] == doc[j] and, when causal, pos_k[j] <= pos_q[i]. Packed documents never see each
// other; a 1-token document is a document.
//
// Partial results of several key sets merge exactly with AttentionMerge (log-sum-exp in fp32),
// and the backward takes the final merged output and LSE, so ring attention can run the backward
// one key set at a time.
#ifndef LOOM_SRC_KERNELS_ATTENTION_H_
#define LOOM_SRC_KERNELS_ATTENTION_H_

#include <cstdint>
#include <vector>

namespace loom {

struct AttentionShape {
  int n_heads = 0;     // query heads
  int n_kv_heads = 0;  // key/value heads; n_heads % n_kv_heads == 0 (query head h uses h / group)
  int head_dim = 0;
};

// Document id and in-document position of each token of a query or key/value set.
struct TokenSpans {
  const int32_t* doc = nullptr;
  const int32_t* pos = nullptr;
  int n = 0;
};

// Per-token doc ids and positions for documents packed back to back, given cu_seqlens-style
// boundaries (cu[0] = 0, cu[i+1] - cu[i] = length of document i; positions start at 0).
struct PackedDocs {
  std::vector<int32_t> doc;
  std::vector<int32_t> pos;
  TokenSpans spans() const {
    return TokenSpans{doc.data(), pos.data(), static_cast<int>(doc.size())};
  }
};
PackedDocs PackedDocsFromCuSeqlens(const std::vector<int32_t>& cu_seqlens);

// q: [Tq, n_heads, D]; k, v: [Tk, n_kv_heads, D] (row-major, the layout the projections produce).
// Writes out: [Tq, n_heads, D] and lse: [Tq, n_heads] (natural log of the softmax denominator of
// the scaled scores, scale = 1/sqrt(D)). A query row with no visible key gets out = 0 and
// lse = -infinity. Key blocks with no visible pair are skipped, not computed.
void AttentionForward(float* out, float* lse, const float* q, const float* k, const float* v,
                      const TokenSpans& q_spans, const TokenSpans& k_spans,
                      const AttentionShape& shape, bool causal);

// Folds a partial result (part_out, part_lse over another key set) into the running result
// (out, lse), in place, with a stable log-sum-exp; -infinity rows are handled.
void AttentionMerge(float* out, float* lse, const float* part_out, const float* part_lse, int Tq,
                    const AttentionShape& shape);

// delta[t, h] = sum_d dout[t, h, d] * out[t, h, d]: computed once from the final output.
void AttentionBackwardDelta(float* delta, const float* dout, const float* out, int Tq,
                            const AttentionShape& shape);

// Backward for one key set, given the final (merged) lse and delta. Accumulates (+=) into dq
// [Tq, n_heads, D], dk and dv [Tk, n_kv_heads, D]; recomputes probabilities from the LSE.
void AttentionBackward(float* dq, float* dk, float* dv, const float* dout, const float* q,
                       const float* k, const float* v, const float* lse, const float* delta,
                       const TokenSpans& q_spans, const TokenSpans& k_spans,
                       const AttentionShape& shape, bool causal);

}  // namespace loom

#endif  // LOOM_SRC_KERNELS_ATTENTION_H_
