// Context-parallel attention (ring and all-gather) against the single-rank kernel on the same
// tokens: out, LSE, dQ, dK, dV within the fp32 bound, for group sizes 1..8, document lengths of 1,
// primes, multiples of 2c and below 2c, packed short documents beside a long one, GQA and MQA,
// permuted subsets of the world running concurrently; plus skipped masked steps and timeouts.
#include <gtest/gtest.h>

#include <algorithm>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "runtime/local_world.h"
#include "tests/parallel/cp_attention_harness.h"

namespace loom {
namespace {

using test::AttentionData;
using test::AttentionProblem;
using test::Strategy;

constexpr uint64_t kSeeds[] = {11, 23, 37};
constexpr int32_t kPrimes[] = {2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37, 41, 43, 47, 53, 97};

std::unique_ptr<LocalWorld> MakeWorld(int size, absl::Duration timeout = absl::Seconds(60)) {
  absl::StatusOr<std::unique_ptr<LocalWorld>> world = LocalWorld::Create(size, timeout);
  EXPECT_TRUE(world.ok()) << world.status();
  return *std::move(world);
}

// Runs `p` over `group` (world rank order given by the group) on a world of `world_size`.
AttentionData RunOnGroup(int world_size, const Group& group, Strategy strategy,
                         const AttentionProblem& p, const AttentionData& in) {
  AttentionData got = test::EmptyOutputs(p);
  std::unique_ptr<LocalWorld> world = MakeWorld(world_size);
  const absl::Status status = world->Run([&](Communicator& comm) -> absl::Status {
    if (!group.Contains(comm.rank())) return absl::OkStatus();
    return test::RunMember(comm, group, strategy, p, in, /*tag=*/0, got);
  });
  EXPECT_TRUE(status.ok()) << status;
  return got;
}

// Document lengths covering the edge cases for a group of c: 1, a prime, a multiple of 2c, one
// shorter than 2c, and a random one; shuffled.
std::vector<int32_t> EdgeLengths(int c, std::mt19937_64& rng) {
  std::vector<int32_t> lengths = {
      1, kPrimes[rng() % std::size(kPrimes)], 2 * c * static_cast<int32_t>(1 + rng() % 6),
      static_cast<int32_t>(1 + rng() % (2 * c)), static_cast<int32_t>(1 + rng() % 150)};
  std::shuffle(lengths.begin(), lengths.end(), rng);
  return lengths;
}

AttentionShape RandomShape(std::mt19937_64& rng) {
  constexpr AttentionShape kShapes[] = {{4, 2, 8}, {4, 4, 8}, {2, 1, 16}, {6, 3, 8}};
  return kShapes[rng() % std::size(kShapes)];
}

std::string Describe(const AttentionProblem& p, const Group& group) {
  return absl::StrCat("group ", group.ToString(), " lengths [", absl::StrJoin(p.lengths, " "),
                      "] heads ", p.shape.n_heads, "/", p.shape.n_kv_heads, " D ",
                      p.shape.head_dim, " seed ", p.seed);
}

class ContextParallelAttentionTest : public ::testing::TestWithParam<Strategy> {};

TEST_P(ContextParallelAttentionTest, GroupSizesAndEdgeLengths) {
  for (int c : {1, 2, 3, 4, 5, 8}) {
    for (uint64_t seed : kSeeds) {
      std::mt19937_64 rng(seed * 1000 + static_cast<uint64_t>(c));
      AttentionProblem p;
      p.lengths = EdgeLengths(c, rng);
      p.shape = RandomShape(rng);
      p.seed = seed + static_cast<uint64_t>(c);
      // The whole world, in a shuffled ring order.
      std::vector<int> ranks(static_cast<size_t>(c));
      std::iota(ranks.begin(), ranks.end(), 0);
      std::shuffle(ranks.begin(), ranks.end(), rng);
      const Group group = *Group::Make(ranks);
      SCOPED_TRACE(Describe(p, group));
      test::ExpectMatches(RunOnGroup(c, group, GetParam(), p, test::Reference(p)),
                          test::Reference(p));
    }
  }
}

TEST_P(ContextParallelAttentionTest, ManyShortDocumentsBesideOneLong) {
  for (uint64_t seed : kSeeds) {
    std::mt19937_64 rng(seed);
    const int c = 4;
    AttentionProblem p;
    p.seed = seed;
    // Short documents whole on one member each (some spread too), one long document spread.
    for (int d = 0; d < 30; ++d) {
      p.lengths.push_back(static_cast<int32_t>(1 + rng() % 24));
      p.owner.push_back(d % 7 == 0 ? kSpreadOverGroup : static_cast<int>(rng() % c));
    }
    const size_t long_at = rng() % p.lengths.size();
    p.lengths.insert(p.lengths.begin() + static_cast<ptrdiff_t>(long_at), 389);
    p.owner.insert(p.owner.begin() + static_cast<ptrdiff_t>(long_at), kSpreadOverGroup);
    const Group group = *Group::Make({2, 0, 3, 1});
    SCOPED_TRACE(Describe(p, group));
    const AttentionData want = test::Reference(p);
    test::ExpectMatches(RunOnGroup(c, group, GetParam(), p, want), want);
  }
}

TEST_P(ContextParallelAttentionTest, GroupedAndMultiQuery) {
  for (const AttentionShape& shape : {AttentionShape{8, 2, 16}, AttentionShape{8, 1, 16}}) {
    AttentionProblem p;
    p.shape = shape;
    p.lengths = {67, 5, 120};
    p.seed = 5;
    const Group group = *Group::Make({1, 2, 0});
    SCOPED_TRACE(Describe(p, group));
    const AttentionData want = test::Reference(p);
    test::ExpectMatches(RunOnGroup(3, group, GetParam(), p, want), want);
  }
}

// Two rings on one world at once: {6 1 4} and {3 7 0 5 2}, disjoint, permuted; and then a rank
// shared by two rings ({0 2 4} and {3 2 1}), which takes part in them in ring order.
TEST_P(ContextParallelAttentionTest, ConcurrentRingsOnPermutedSubsets) {
  struct Ring {
    Group group;
    AttentionProblem problem;
    int tag;
  };
  const auto make = [](std::vector<int> ranks, std::vector<int32_t> lengths, uint64_t seed,
                       int tag) {
    AttentionProblem p;
    p.lengths = std::move(lengths);
    p.seed = seed;
    return Ring{*Group::Make(std::move(ranks)), p, tag};
  };
  const std::vector<std::vector<Ring>> layouts = {
      {make({6, 1, 4}, {41, 3, 18}, 7, 0), make({3, 7, 0, 5, 2}, {1, 97, 10}, 8, 0)},
      {make({0, 2, 4}, {29, 6}, 9, 10), make({3, 2, 1}, {53, 2, 1}, 10, 20)},
  };
  for (const std::vector<Ring>& rings : layouts) {
    std::vector<AttentionData> want, got;
    for (const Ring& r : rings) {
      want.push_back(test::Reference(r.problem));
      got.push_back(test::EmptyOutputs(r.problem));
    }
    std::unique_ptr<LocalWorld> world = MakeWorld(8);
    const absl::Status status = world->Run([&](Communicator& comm) -> absl::Status {
      for (size_t i = 0; i < rings.size(); ++i) {
        if (!rings[i].group.Contains(comm.rank())) continue;
        absl::Status s = test::RunMember(comm, rings[i].group, GetParam(), rings[i].problem,
                                         want[i], rings[i].tag, got[i]);
        if (!s.ok()) return s;
      }
      return absl::OkStatus();
    });
    ASSERT_TRUE(status.ok()) << status;
    for (size_t i = 0; i < rings.size(); ++i) {
      SCOPED_TRACE(Describe(rings[i].problem, rings[i].group));
      test::ExpectMatches(got[i], want[i]);
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Strategies, ContextParallelAttentionTest,
                         ::testing::Values(Strategy::kRing, Strategy::kAllGather),
                         [](const auto& info) { return std::string(StrategyName(info.param)); });

// A contiguous split of one causal document: member m sees only members 0..m, so it skips
// c-1-m steps in the forward and again in the backward, and the result is still exact. Zigzag
// skips nothing: every member's late piece sees every other member's keys.
TEST(RingAttentionTest, SkipsFullyMaskedSteps) {
  const int c = 4;
  for (SplitKind split : {SplitKind::kContiguous, SplitKind::kZigzag}) {
    AttentionProblem p;
    p.lengths = {64};
    p.split = split;
    const AttentionData want = test::Reference(p);
    AttentionData got = test::EmptyOutputs(p);
    std::vector<int> skipped(c, -1);
    const Group group = Group::World(c);
    std::unique_ptr<LocalWorld> world = MakeWorld(c);
    const absl::Status status = world->Run([&](Communicator& comm) {
      return test::RunMember(comm, group, Strategy::kRing, p, want, 0, got,
                             &skipped[static_cast<size_t>(comm.rank())]);
    });
    ASSERT_TRUE(status.ok()) << status;
    test::ExpectMatches(got, want);
    for (int m = 0; m < c; ++m) {
      EXPECT_EQ(skipped[static_cast<size_t>(m)], split == SplitKind::kContiguous ? 2 * (c - 1 - m) : 0)
          << "member " << m;
    }
  }
}

// Packed documents that live on different members never meet: every foreign step is skipped.
TEST(RingAttentionTest, SkipsStepsBetweenDisjointDocuments) {
  AttentionProblem p;
  p.lengths = {9, 14, 1};
  p.owner = {0, 1, 2};
  const AttentionData want = test::Reference(p);
  AttentionData got = test::EmptyOutputs(p);
  std::vector<int> skipped(3, -1);
  const Group group = *Group::Make({2, 1, 0});
  std::unique_ptr<LocalWorld> world = MakeWorld(3);
  const absl::Status status = world->Run([&](Communicator& comm) {
    return test::RunMember(comm, group, Strategy::kRing, p, want, 0, got,
                           &skipped[static_cast<size_t>(comm.rank())]);
  });
  ASSERT_TRUE(status.ok()) << status;
  test::ExpectMatches(got, want);
  for (int s : skipped) EXPECT_EQ(s, 4);  // two foreign blocks, forward and backward
}

// A member that never takes its ring step: the others fail within the timeout, naming the step
// and the silent peer, instead of hanging.
TEST(RingAttentionTest, SilentPeerTimesOutNamingStepAndPeer) {
  AttentionProblem p;
  p.lengths = {20};
  const AttentionData in = test::Reference(p);
  const Group group = *Group::Make({1, 0});
  std::unique_ptr<LocalWorld> world = MakeWorld(2, absl::Milliseconds(300));
  absl::Status rank0;
  (void)world->Run([&](Communicator& comm) -> absl::Status {
    absl::StatusOr<Sharding> sharding = ShardDocuments(p.lengths, 2, SplitKind::kZigzag);
    const MemberShard& shard = sharding->members[static_cast<size_t>(*group.IndexOf(comm.rank()))];
    absl::StatusOr<std::unique_ptr<RingAttention>> ring =
        RingAttention::Create(comm, group, p.shape, shard.spans(), /*tag=*/4);
    if (!ring.ok()) return ring.status();
    if (comm.rank() == 1) return absl::OkStatus();  // never steps
    std::vector<float> q = GatherRows(in.q.data(), p.q_width(), shard);
    std::vector<float> k = GatherRows(in.k.data(), p.kv_width(), shard);
    std::vector<float> v = GatherRows(in.v.data(), p.kv_width(), shard);
    std::vector<float> out(q.size()), lse(static_cast<size_t>(shard.size()) * p.shape.n_heads);
    rank0 = (*ring)->Forward(out.data(), lse.data(), q.data(), k.data(), v.data());
    return rank0;
  });
  EXPECT_EQ(rank0.code(), absl::StatusCode::kDeadlineExceeded) << rank0;
  EXPECT_NE(rank0.message().find("ring attention forward step 1/2"), std::string::npos) << rank0;
  EXPECT_NE(rank0.message().find("from rank 1"), std::string::npos) << rank0;
}

}  // namespace
}  // namespace loom
