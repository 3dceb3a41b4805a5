#include "parallel/zigzag.h"

#include <cstring>

#include "absl/strings/str_format.h"

namespace loom {
namespace {

// Appends tokens [begin, end) of document `doc`, which starts at global index `offset`.
void Append(MemberShard& shard, int32_t doc, int64_t offset, int64_t begin, int64_t end) {
  for (int64_t t = begin; t < end; ++t) {
    shard.global.push_back(static_cast<int32_t>(offset + t));
    shard.doc.push_back(doc);
    shard.pos.push_back(static_cast<int32_t>(t));
  }
}

// Start of piece p when a length is cut into n pieces differing by at most one token.
int64_t PieceStart(int64_t length, int p, int n) { return length * p / n; }

}  // namespace

absl::StatusOr<Sharding> ShardDocuments(const std::vector<int32_t>& lengths, int group_size,
                                        SplitKind kind, const std::vector<int>& owner) {
  if (group_size <= 0) {
    return absl::InvalidArgumentError(absl::StrFormat("group size %d is not positive", group_size));
  }
  if (!owner.empty() && owner.size() != lengths.size()) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "%d owners given for %d documents", owner.size(), lengths.size()));
  }
  Sharding sharding;
  sharding.members.resize(static_cast<size_t>(group_size));
  const int c = group_size;
  int64_t offset = 0;
  for (size_t d = 0; d < lengths.size(); ++d) {
    const int64_t length = lengths[d];
    if (length < 0) {
      return absl::InvalidArgumentError(
          absl::StrFormat("document %d has negative length %d", d, length));
    }
    const int place = owner.empty() ? kSpreadOverGroup : owner[d];
    const int32_t id = static_cast<int32_t>(d);
    if (place != kSpreadOverGroup) {
      if (place < 0 || place >= c) {
        return absl::InvalidArgumentError(absl::StrFormat(
            "document %d is placed on member %d of a group of %d", d, place, c));
      }
      Append(sharding.members[static_cast<size_t>(place)], id, offset, 0, length);
    } else if (kind == SplitKind::kZigzag) {
      for (int m = 0; m < c; ++m) {
        MemberShard& shard = sharding.members[static_cast<size_t>(m)];
        const int late = 2 * c - 1 - m;
        Append(shard, id, offset, PieceStart(length, m, 2 * c), PieceStart(length, m + 1, 2 * c));
        Append(shard, id, offset, PieceStart(length, late, 2 * c),
               PieceStart(length, late + 1, 2 * c));
      }
    } else {
      for (int m = 0; m < c; ++m) {
        Append(sharding.members[static_cast<size_t>(m)], id, offset, PieceStart(length, m, c),
               PieceStart(length, m + 1, c));
      }
    }
    offset += length;
  }
  sharding.total_tokens = offset;
  return sharding;
}

int64_t VisiblePairs(const MemberShard& shard) {
  int64_t pairs = 0;
  for (int32_t p : shard.pos) pairs += static_cast<int64_t>(p) + 1;
  return pairs;
}

std::vector<float> GatherRows(const float* global, int width, const MemberShard& shard) {
  const size_t w = static_cast<size_t>(width);
  std::vector<float> local(shard.global.size() * w);
  for (size_t t = 0; t < shard.global.size(); ++t) {
    std::memcpy(local.data() + t * w, global + static_cast<size_t>(shard.global[t]) * w,
                w * sizeof(float));
  }
  return local;
}

void ScatterRows(const float* local, int width, const MemberShard& shard, float* global) {
  const size_t w = static_cast<size_t>(width);
  for (size_t t = 0; t < shard.global.size(); ++t) {
    std::memcpy(global + static_cast<size_t>(shard.global[t]) * w, local + t * w,
                w * sizeof(float));
  }
}

}  // namespace loom
