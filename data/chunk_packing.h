// ChunkFlow chunk construction (arXiv 2503.02356): a global batch of variable-length sequences
// becomes chunks of at most C tokens, so that a step's memory follows C instead of the longest
// sequence.
//
// Long sequences (L > C) are cut, in order, into n = ceil(L/C) *dependent* chunks; chunk j holds
// tokens [j*C, min(L, (j+1)*C)). They must run in order, each attending to the K/V of the earlier
// ones, so every such chunk records its sequence, its position j and the count n.
//
// Short sequences (L <= C) are never split. They are packed whole by best-fit decreasing (BFD):
// longest first, each into the chunk with the least free room that still holds it, and into a new
// chunk only when none does. The free room after a long sequence's last piece counts as such a
// chunk too, which saves chunks for the same tokens. That chunk stays dependent (index n-1 of n)
// because of its long piece; the short sequences beside it attend only to themselves (attention is
// masked per sequence), so running after the long sequence's earlier chunks does not concern them.
// Every other chunk is *standalone*.
//
// Layout. A chunk's pieces are in the order their tokens are laid out: a dependent chunk's long
// piece first, then short sequences in the order they were placed (longest first; ties by batch
// index). Chunk order: the dependent chunks of the long sequences, longest sequence first (ties by
// batch index), each sequence's chunks consecutive and in order; then the standalone chunks in the
// order they were opened, which puts their first (longest) sequences in non-increasing order. A
// scheduler reorders chunks anyway; only a sequence's own chunks must keep their order.
//
// Guarantee. Let D = sum over long sequences of ceil(L/C); every construction needs these chunks,
// since a chunk holds at most C tokens and at most one long piece. Let S be the short sequences
// that did not go beside a long piece. The standalone chunks are exactly what BFD makes of S alone:
// a sequence of S went into a standalone chunk that was the tightest fit of all chunks, hence of
// the standalone ones, and sequences placed beside long pieces never touch standalone chunks. Cited
// bounds: BFD <= 11/9 OPT + 4 (Johnson 1973; Johnson, Demers, Ullman, Garey and Graham, SIAM J.
// Comput. 1974) and BFD <= 3/2 OPT (Simchi-Levi, Naval Res. Logistics 1994). OPT(S) is at most
// OPT of all short sequences (dropping items never costs bins), so
//     chunks <= D + min(11/9 OPT_short + 4, 3/2 OPT_short),
// which for a batch of short sequences only is BFD's own bound. The tighter 11/9 OPT + 6/9 is
// proven for first-fit decreasing (Dosa, Li, Han and Tuza, Theor. Comput. Sci. 2013), not for BFD,
// so it is not claimed. One property needs no citation: a chunk is opened only for a sequence that
// fits no earlier chunk, and chunks only fill up, so a standalone chunk's first sequence and any
// earlier chunk hold more than C tokens together; hence any two standalone chunks do, and there are
// at most 2 * ceil(tokens in them / C) - 1 of them.
//
// What tests/data/chunk_packing_test.cc checks: every token in exactly one chunk, in order; no
// chunk over C; dependent chunks complete, consecutive and in order; short sequences whole; the
// layout and order above; the output equal to a naive BFD; the bound against the exact optimum on
// small batches; the any-two-chunks property on large ones, with the worst ratio to ceil(total/C)
// printed; the ChunkFlow and LMSYS-Chat-1M presets at C = 4096.
#ifndef LOOM_DATA_CHUNK_PACKING_H_
#define LOOM_DATA_CHUNK_PACKING_H_

#include <cstdint>
#include <span>
#include <vector>

#include "absl/status/statusor.h"

namespace loom {

// Tokens [begin, end) of batch sequence `sequence`.
struct ChunkPiece {
  int64_t sequence = 0;
  int64_t begin = 0;
  int64_t end = 0;

  bool operator==(const ChunkPiece&) const = default;
};

struct Chunk {
  std::vector<ChunkPiece> pieces;  // in the order their tokens are laid out in the chunk
  int64_t long_sequence = -1;      // the sequence of the dependent piece (pieces[0]), or -1
  int64_t index = 0;               // position among that sequence's chunks (0 when standalone)
  int64_t count = 1;               // that sequence's chunk count (1 when standalone)

  bool dependent() const { return long_sequence >= 0; }
  int64_t tokens() const;
  bool operator==(const Chunk&) const = default;
};

struct ChunkPacking {
  std::vector<Chunk> chunks;
  int64_t chunk_size = 0;
  int64_t total_tokens = 0;

  // The share of the chunks' capacity left empty: 1 - total_tokens / (chunks * C); 0 when empty.
  double padding_fraction() const;
  // ceil(total_tokens / C): no construction uses fewer chunks.
  int64_t lower_bound() const;
};

// Chunks for the sequences of one global batch, `lengths` in batch order. Fails on a chunk size
// below 1 or a length below 1 (naming the sequence).
absl::StatusOr<ChunkPacking> PackChunks(std::span<const int64_t> lengths, int64_t chunk_size);

// The tokens the batch would take with every sequence padded to the longest: the baseline chunking
// is measured against. 0 for an empty batch.
int64_t PaddedTokens(std::span<const int64_t> lengths);

}  // namespace loom

#endif  // LOOM_DATA_CHUNK_PACKING_H_
