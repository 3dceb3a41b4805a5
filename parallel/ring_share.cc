#include "parallel/ring_share.h"

namespace loom {
namespace {

// Start of piece j when `length` tokens are cut into `pieces` pieces, the first length % pieces
// of them one token longer.
int64_t PieceStart(int64_t length, int64_t pieces, int64_t j) {
  const int64_t base = length / pieces;
  const int64_t extra = length % pieces;
  return j * base + (j < extra ? j : extra);
}

}  // namespace

int ZigzagShareInto(int64_t sequence_id, int64_t length, int members, int member,
                    TokenRange out[2]) {
  int count = 0;
  const int64_t pieces = 2 * static_cast<int64_t>(members);
  for (const int64_t j : {static_cast<int64_t>(member), pieces - 1 - member}) {
    const TokenRange r{sequence_id, PieceStart(length, pieces, j),
                       PieceStart(length, pieces, j + 1)};
    if (r.size() > 0) out[count++] = r;
  }
  return count;
}

std::vector<TokenRange> ZigzagShare(int64_t sequence_id, int64_t length, int members, int member) {
  TokenRange ranges[2];
  const int count = ZigzagShareInto(sequence_id, length, members, member, ranges);
  return std::vector<TokenRange>(ranges, ranges + count);
}

}  // namespace loom
