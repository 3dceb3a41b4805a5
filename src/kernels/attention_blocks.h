// Block tiling of the attention kernels: which (query block, key block) pairs must be computed and
// which of those need a per-element mask, decided from each block's range of document ids and
// positions alone. Ranges say nothing about the order of tokens inside a block, so the decision is
// conservative: a pair is skipped only when no pair of tokens in it can be visible, and left
// unmasked only when every pair is. Shared with the tests, which check exactly that.
#ifndef LOOM_SRC_KERNELS_ATTENTION_BLOCKS_H_
#define LOOM_SRC_KERNELS_ATTENTION_BLOCKS_H_

#include <cstdint>
#include <vector>

#include "src/kernels/attention.h"

namespace loom {

// Rows per block. 128 x 128 score tiles (64 KiB) stay in L2 next to the Q/K/V blocks; at
// head_dim 64 tiles of 256 ran no faster overall (sgemm gains, the masked work on diagonal and
// document-boundary blocks grows), and smaller ones ran ~10% slower.
inline constexpr int kAttentionBlockQ = 128;
inline constexpr int kAttentionBlockK = 128;

// The range of document ids and of positions over one block of consecutive tokens.
struct TokenBlockRange {
  int32_t doc_min = 0;
  int32_t doc_max = 0;
  int32_t pos_min = 0;
  int32_t pos_max = 0;
};

// Ranges of the blocks of `block` consecutive tokens of a set (the last block may be shorter).
std::vector<TokenBlockRange> TokenBlockRanges(const TokenSpans& spans, int block);

enum class BlockVisibility {
  kNone,     // no query of the block may see any key of the block: skipped
  kAll,      // every query sees every key: computed without a mask
  kPartial,  // anything else: computed with a per-element mask
};

BlockVisibility ClassifyBlockPair(const TokenBlockRange& q, const TokenBlockRange& k, bool causal);

// How many block pairs of each kind AttentionForward and AttentionBackward visit per head.
struct BlockPairCounts {
  int64_t none = 0;
  int64_t all = 0;
  int64_t partial = 0;
};
BlockPairCounts CountBlockPairs(const TokenSpans& q_spans, const TokenSpans& k_spans, bool causal);

}  // namespace loom

#endif  // LOOM_SRC_KERNELS_ATTENTION_BLOCKS_H_
