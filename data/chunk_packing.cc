#include "data/chunk_packing.h"

#include <algorithm>
#include <cstddef>
#include <set>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_format.h"

namespace loom {

int64_t Chunk::tokens() const {
  int64_t sum = 0;
  for (const ChunkPiece& piece : pieces) sum += piece.end - piece.begin;
  return sum;
}

double ChunkPacking::padding_fraction() const {
  if (chunks.empty()) return 0.0;
  const double capacity = static_cast<double>(chunks.size()) * static_cast<double>(chunk_size);
  return 1.0 - static_cast<double>(total_tokens) / capacity;
}

int64_t ChunkPacking::lower_bound() const {
  // Written without total + C - 1, which could overflow.
  return total_tokens == 0 ? 0 : (total_tokens - 1) / chunk_size + 1;
}

absl::StatusOr<ChunkPacking> PackChunks(std::span<const int64_t> lengths, int64_t chunk_size) {
  if (chunk_size < 1) {
    return absl::InvalidArgumentError(
        absl::StrFormat("chunk packing: chunk size must be >= 1, got %d", chunk_size));
  }
  const int64_t c = chunk_size;
  ChunkPacking packing;
  packing.chunk_size = c;
  std::vector<int64_t> long_sequences;
  std::vector<int64_t> short_sequences;
  for (int64_t i = 0; i < std::ssize(lengths); ++i) {
    const int64_t length = lengths[static_cast<size_t>(i)];
    if (length < 1) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "chunk packing: sequence %d has length %d; lengths must be >= 1", i, length));
    }
    packing.total_tokens += length;
    (length > c ? long_sequences : short_sequences).push_back(i);
  }
  // Longest first; the stable sort breaks ties by batch index, which makes the result a function
  // of the lengths alone.
  auto longer = [&](int64_t a, int64_t b) {
    return lengths[static_cast<size_t>(a)] > lengths[static_cast<size_t>(b)];
  };
  std::stable_sort(long_sequences.begin(), long_sequences.end(), longer);
  std::stable_sort(short_sequences.begin(), short_sequences.end(), longer);

  std::vector<Chunk>& chunks = packing.chunks;
  // Chunks that still have room, as (free tokens, position in `chunks`), so that among equal rooms
  // the earlier chunk comes first: a long sequence's last chunk wins ties against standalone ones.
  std::set<std::pair<int64_t, size_t>> room;
  for (int64_t s : long_sequences) {
    const int64_t length = lengths[static_cast<size_t>(s)];
    const int64_t count = (length - 1) / c + 1;
    for (int64_t j = 0; j < count; ++j) {
      const int64_t begin = j * c;
      chunks.push_back(Chunk{.pieces = {{s, begin, std::min(length, begin + c)}},
                             .long_sequence = s,
                             .index = j,
                             .count = count});
    }
    const int64_t free = count * c - length;
    if (free > 0) room.insert({free, chunks.size() - 1});
  }
  for (int64_t s : short_sequences) {
    const int64_t length = lengths[static_cast<size_t>(s)];
    // The first room at or above the length is the best fit.
    const auto fit = room.lower_bound({length, 0});
    if (fit == room.end()) {
      if (length < c) room.insert({c - length, chunks.size()});
      chunks.push_back(Chunk{.pieces = {{s, 0, length}}});
      continue;
    }
    const auto [free, position] = *fit;
    room.erase(fit);
    chunks[position].pieces.push_back({s, 0, length});
    if (free > length) room.insert({free - length, position});
  }
  return packing;
}

int64_t PaddedTokens(std::span<const int64_t> lengths) {
  if (lengths.empty()) return 0;
  return *std::max_element(lengths.begin(), lengths.end()) * std::ssize(lengths);
}

}  // namespace loom
