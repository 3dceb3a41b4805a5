#include "src/kernels/attention_blocks.h"

#include <algorithm>

namespace loom {

std::vector<TokenBlockRange> TokenBlockRanges(const TokenSpans& spans, int block) {
  std::vector<TokenBlockRange> ranges;
  ranges.reserve((spans.n + block - 1) / block);
  for (int begin = 0; begin < spans.n; begin += block) {
    const int end = std::min(begin + block, spans.n);
    TokenBlockRange r{spans.doc[begin], spans.doc[begin], spans.pos[begin], spans.pos[begin]};
    for (int t = begin + 1; t < end; ++t) {
      r.doc_min = std::min(r.doc_min, spans.doc[t]);
      r.doc_max = std::max(r.doc_max, spans.doc[t]);
      r.pos_min = std::min(r.pos_min, spans.pos[t]);
      r.pos_max = std::max(r.pos_max, spans.pos[t]);
    }
    ranges.push_back(r);
  }
  return ranges;
}

BlockVisibility ClassifyBlockPair(const TokenBlockRange& q, const TokenBlockRange& k, bool causal) {
  // A visible pair needs equal documents, so the document ranges must overlap, and under the
  // causal mask a key position <= a query position, so the smallest key position must not exceed
  // the largest query position.
  if (q.doc_max < k.doc_min || k.doc_max < q.doc_min) return BlockVisibility::kNone;
  if (causal && k.pos_min > q.pos_max) return BlockVisibility::kNone;
  // Every pair is visible only if both blocks lie in one and the same document and, under the
  // causal mask, the latest key comes no later than the earliest query.
  const bool one_doc = q.doc_min == q.doc_max && k.doc_min == k.doc_max && q.doc_min == k.doc_min;
  if (one_doc && (!causal || k.pos_max <= q.pos_min)) return BlockVisibility::kAll;
  return BlockVisibility::kPartial;
}

BlockPairCounts CountBlockPairs(const TokenSpans& q_spans, const TokenSpans& k_spans, bool causal) {
  const std::vector<TokenBlockRange> q_blocks = TokenBlockRanges(q_spans, kAttentionBlockQ);
  const std::vector<TokenBlockRange> k_blocks = TokenBlockRanges(k_spans, kAttentionBlockK);
  BlockPairCounts counts;
  for (const TokenBlockRange& q : q_blocks) {
    for (const TokenBlockRange& k : k_blocks) {
      switch (ClassifyBlockPair(q, k, causal)) {
        case BlockVisibility::kNone:
          ++counts.none;
          break;
        case BlockVisibility::kAll:
          ++counts.all;
          break;
        case BlockVisibility::kPartial:
          ++counts.partial;
          break;
      }
    }
  }
  return counts;
}

}  // namespace loom
