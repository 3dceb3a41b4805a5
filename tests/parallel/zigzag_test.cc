// Zigzag and contiguous sharding: every token on exactly one member with its document and
// in-document position, pieces as equal as possible for any length, member i holding pieces i and
// 2c-1-i, whole documents where placed, and the causal balance zigzag is for.
#include "parallel/zigzag.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <random>
#include <vector>

namespace loom {
namespace {

// Every global token exactly once, with the document id and position the packed order gives it.
void ExpectCoversAll(const Sharding& sharding, const std::vector<int32_t>& lengths) {
  std::vector<int32_t> cu{0};
  for (int32_t l : lengths) cu.push_back(cu.back() + l);
  ASSERT_EQ(sharding.total_tokens, cu.back());
  std::vector<int> seen(static_cast<size_t>(cu.back()), 0);
  for (const MemberShard& m : sharding.members) {
    ASSERT_EQ(m.doc.size(), m.global.size());
    ASSERT_EQ(m.pos.size(), m.global.size());
    for (int t = 0; t < m.size(); ++t) {
      const int32_t g = m.global[static_cast<size_t>(t)];
      ++seen[static_cast<size_t>(g)];
      const int32_t d = m.doc[static_cast<size_t>(t)];
      EXPECT_GE(g, cu[static_cast<size_t>(d)]);
      EXPECT_LT(g, cu[static_cast<size_t>(d) + 1]);
      EXPECT_EQ(m.pos[static_cast<size_t>(t)], g - cu[static_cast<size_t>(d)]);
    }
  }
  for (int count : seen) EXPECT_EQ(count, 1);
}

TEST(ZigzagTest, MemberHoldsPiecesIAndMirror) {
  // 20 tokens on 2 members: pieces of 5, member 0 holds pieces 0 and 3, member 1 pieces 1 and 2.
  const Sharding s = *ShardDocuments({20}, 2, SplitKind::kZigzag);
  EXPECT_EQ(s.members[0].pos, (std::vector<int32_t>{0, 1, 2, 3, 4, 15, 16, 17, 18, 19}));
  EXPECT_EQ(s.members[1].pos, (std::vector<int32_t>{5, 6, 7, 8, 9, 10, 11, 12, 13, 14}));
}

TEST(ZigzagTest, AnyLengthIsCoveredWithNearEqualPieces) {
  for (int c : {1, 2, 3, 4, 5, 8}) {
    for (int32_t length : {1, 2, 3, 7, 13, 16, 17, 2 * c - 1, 2 * c, 2 * c + 1, 97, 1000}) {
      SCOPED_TRACE(testing::Message() << "c " << c << " length " << length);
      const Sharding s = *ShardDocuments({length}, c, SplitKind::kZigzag);
      ExpectCoversAll(s, {length});
      // Each member holds two pieces of floor or ceil(L / 2c) tokens.
      for (const MemberShard& m : s.members) {
        EXPECT_GE(m.size(), 2 * (length / (2 * c)));
        EXPECT_LE(m.size(), 2 * ((length + 2 * c - 1) / (2 * c)));
      }
      const Sharding contiguous = *ShardDocuments({length}, c, SplitKind::kContiguous);
      ExpectCoversAll(contiguous, {length});
    }
  }
}

TEST(ZigzagTest, PackedDocumentsWholeAndSpread) {
  std::mt19937_64 rng(3);
  std::vector<int32_t> lengths;
  std::vector<int> owner;
  for (int d = 0; d < 40; ++d) {
    lengths.push_back(static_cast<int32_t>(rng() % 30));  // empty documents too
    owner.push_back(d % 5 == 0 ? kSpreadOverGroup : static_cast<int>(rng() % 3));
  }
  const Sharding s = *ShardDocuments(lengths, 3, SplitKind::kZigzag, owner);
  ExpectCoversAll(s, lengths);
  for (int m = 0; m < 3; ++m) {
    for (int32_t d : s.members[static_cast<size_t>(m)].doc) {
      const int o = owner[static_cast<size_t>(d)];
      EXPECT_TRUE(o == kSpreadOverGroup || o == m) << "document " << d << " on member " << m;
    }
  }
}

TEST(ZigzagTest, RejectsBadArguments) {
  EXPECT_FALSE(ShardDocuments({4}, 0, SplitKind::kZigzag).ok());
  EXPECT_FALSE(ShardDocuments({-1}, 2, SplitKind::kZigzag).ok());
  EXPECT_FALSE(ShardDocuments({4, 4}, 2, SplitKind::kZigzag, {0}).ok());
  EXPECT_FALSE(ShardDocuments({4}, 2, SplitKind::kZigzag, {2}).ok());
}

TEST(ZigzagTest, GatherThenScatterRestoresGlobalOrder) {
  const Sharding s = *ShardDocuments({7, 1, 12}, 3, SplitKind::kZigzag);
  std::vector<float> global(20 * 2);
  for (size_t i = 0; i < global.size(); ++i) global[i] = static_cast<float>(i);
  std::vector<float> back(global.size(), -1.0f);
  for (const MemberShard& m : s.members) {
    const std::vector<float> local = GatherRows(global.data(), 2, m);
    ScatterRows(local.data(), 2, m, back.data());
  }
  EXPECT_EQ(back, global);
}

// Causal work per member (visible pairs) is nearly equal under zigzag and far from it under a
// contiguous split, whose last member does about 2c-1 times the first's work.
TEST(ZigzagTest, ZigzagBalancesCausalWork) {
  for (int c : {2, 3, 4, 8}) {
    const auto ratio = [c](SplitKind kind) {
      const Sharding s = *ShardDocuments({8192 + 7}, c, kind);
      int64_t max = 0, sum = 0;
      for (const MemberShard& m : s.members) {
        max = std::max(max, VisiblePairs(m));
        sum += VisiblePairs(m);
      }
      return static_cast<double>(max) * c / static_cast<double>(sum);
    };
    EXPECT_LE(ratio(SplitKind::kZigzag), 1.01) << "c " << c;
    EXPECT_GE(ratio(SplitKind::kContiguous), 1.3) << "c " << c;
  }
}

}  // namespace
}  // namespace loom
