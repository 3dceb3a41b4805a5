// Context-parallel attention and the context-parallel model on the mpi backend, under
// `mpirun -np N` (N = 2, 3, 4, see tests.cmake): one process per rank, against the single-rank
// kernel and model in fp32 (relative <= 1e-5). A subset of ring_attention_test.cc and
// context_parallel_test.cc: both strategies over the whole world in a shuffled order and over
// permuted subsets while other ranks run another ring, packed short documents beside a long one
// whose length is not a multiple of 2c, GQA and MQA, skipped masked steps, and the whole model.
//
// The inputs come from fixed seeds, so every rank builds the same problem and computes the whole
// single-rank reference itself; each rank then checks the rows it holds, and together the ranks
// check every row, with no messages beyond those under test.
#include <gtest/gtest.h>
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <memory>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "parallel/context_parallel.h"
#include "runtime/mpi_communicator.h"
#include "tests/parallel/cp_attention_harness.h"

namespace loom {
namespace {

using test::AttentionData;
using test::AttentionProblem;
using test::Strategy;

// Generous: 4 processes share 2 cores in CI. A failing rank ends its test without waiting.
constexpr absl::Duration kTimeout = absl::Seconds(30);

class MpiEnvironment : public ::testing::Environment {
 public:
  void SetUp() override {
    // Several processes share the cores: one thread each for the kernels and the reference.
    omp_set_num_threads(1);
    absl::StatusOr<std::unique_ptr<Communicator>> comm = MakeMpiCommunicator(kTimeout);
    ASSERT_TRUE(comm.ok()) << comm.status();
    communicator = *std::move(comm);
  }
  // Before MPI_Finalize in main().
  void TearDown() override { communicator.reset(); }

  static inline std::unique_ptr<Communicator> communicator;
};

[[maybe_unused]] ::testing::Environment* const kEnvironment =
    ::testing::AddGlobalTestEnvironment(new MpiEnvironment);

Communicator& Comm() { return *MpiEnvironment::communicator; }
int WorldSize() { return Comm().size(); }

// The world's ranks in an order drawn from `seed` (the same on every rank).
std::vector<int> ShuffledWorld(uint64_t seed) {
  std::vector<int> ranks(static_cast<size_t>(WorldSize()));
  std::iota(ranks.begin(), ranks.end(), 0);
  std::mt19937_64 rng(seed);
  std::shuffle(ranks.begin(), ranks.end(), rng);
  return ranks;
}

std::string Describe(const AttentionProblem& p, const Group& group) {
  return absl::StrCat("group ", group.ToString(), " lengths [", absl::StrJoin(p.lengths, " "),
                      "] heads ", p.shape.n_heads, "/", p.shape.n_kv_heads, " D ",
                      p.shape.head_dim, " seed ", p.seed, " on rank ", Comm().rank());
}

// The rows of this rank's shard, of `got` against the reference `want`. The distributed run
// fills only these rows of `got`; the other ranks check theirs.
void ExpectMemberMatches(const AttentionProblem& p, const Group& group, const AttentionData& got,
                         const AttentionData& want) {
  absl::StatusOr<Sharding> sharding = ShardDocuments(p.lengths, group.size(), p.split, p.owner);
  ASSERT_TRUE(sharding.ok()) << sharding.status();
  const MemberShard& shard = sharding->members[static_cast<size_t>(*group.IndexOf(Comm().rank()))];
  const auto expect = [&](const std::vector<float>& g, const std::vector<float>& w, int width,
                          const char* name) {
    EXPECT_LE(test::RelativeError(GatherRows(g.data(), width, shard),
                                  test::ToDouble(GatherRows(w.data(), width, shard))),
              test::kFp32Tolerance)
        << name << " (" << shard.size() << " rows)";
  };
  expect(got.out, want.out, p.q_width(), "out");
  expect(got.lse, want.lse, p.shape.n_heads, "lse");
  expect(got.dq, want.dq, p.q_width(), "dq");
  expect(got.dk, want.dk, p.kv_width(), "dk");
  expect(got.dv, want.dv, p.kv_width(), "dv");
}

// Runs `p` over `group` when this rank is a member, and checks this member's rows.
void RunAndCheck(const Group& group, Strategy strategy, const AttentionProblem& p, int tag) {
  if (!group.Contains(Comm().rank())) return;
  SCOPED_TRACE(Describe(p, group));
  const AttentionData want = test::Reference(p);
  AttentionData got = test::EmptyOutputs(p);
  const absl::Status status = test::RunMember(Comm(), group, strategy, p, want, tag, got);
  ASSERT_TRUE(status.ok()) << status;
  ExpectMemberMatches(p, group, got, want);
}

class MpiContextParallelAttentionTest : public ::testing::TestWithParam<Strategy> {};

// Lengths of 1, a prime, a multiple of 2c, one shorter than 2c and a random one, over the whole
// world in a shuffled ring order, with MHA and GQA shapes.
TEST_P(MpiContextParallelAttentionTest, WholeWorldEdgeLengths) {
  constexpr AttentionShape kShapes[] = {{4, 2, 8}, {4, 4, 8}, {2, 1, 16}, {6, 3, 8}};
  const int c = WorldSize();
  for (uint64_t seed : {11, 23, 37}) {
    std::mt19937_64 rng(seed * 1000 + static_cast<uint64_t>(c));
    AttentionProblem p;
    p.shape = kShapes[rng() % std::size(kShapes)];
    p.lengths = {1, 37, 2 * c * static_cast<int32_t>(1 + rng() % 6),
                 static_cast<int32_t>(1 + rng() % (2 * c)), static_cast<int32_t>(1 + rng() % 150)};
    std::shuffle(p.lengths.begin(), p.lengths.end(), rng);
    p.seed = seed + static_cast<uint64_t>(c);
    RunAndCheck(*Group::Make(ShuffledWorld(seed)), GetParam(), p, /*tag=*/0);
  }
}

// Short documents, each whole on one member or spread, beside one long document of 389 tokens
// (not a multiple of 2c for c = 2, 3, 4).
TEST_P(MpiContextParallelAttentionTest, ManyShortDocumentsBesideOneLong) {
  const int c = WorldSize();
  std::mt19937_64 rng(31);
  AttentionProblem p;
  p.seed = 31;
  for (int d = 0; d < 30; ++d) {
    p.lengths.push_back(static_cast<int32_t>(1 + rng() % 24));
    p.owner.push_back(d % 7 == 0 ? kSpreadOverGroup : static_cast<int>(rng() % c));
  }
  const size_t long_at = rng() % p.lengths.size();
  p.lengths.insert(p.lengths.begin() + static_cast<ptrdiff_t>(long_at), 389);
  p.owner.insert(p.owner.begin() + static_cast<ptrdiff_t>(long_at), kSpreadOverGroup);
  RunAndCheck(*Group::Make(ShuffledWorld(32)), GetParam(), p, /*tag=*/0);
}

TEST_P(MpiContextParallelAttentionTest, GroupedAndMultiQuery) {
  for (const AttentionShape& shape : {AttentionShape{8, 2, 16}, AttentionShape{8, 1, 16}}) {
    AttentionProblem p;
    p.shape = shape;
    p.lengths = {67, 5, 120};
    p.seed = 5;
    RunAndCheck(*Group::Make(ShuffledWorld(5)), GetParam(), p, /*tag=*/0);
  }
}

// Two rings at once on permuted parts of the world: first disjoint (the world cut in two), then
// sharing ranks (for 2 ranks, the same two in opposite orders), which take part in the rings one
// after the other; distinct tags keep the rings' messages apart.
TEST_P(MpiContextParallelAttentionTest, ConcurrentRingsOnPermutedSubsets) {
  const int n = WorldSize();
  const std::vector<int> perm = ShuffledWorld(41);
  const size_t half = static_cast<size_t>(n + 1) / 2;
  const std::vector<int> first(perm.begin(), perm.begin() + static_cast<ptrdiff_t>(half));
  const std::vector<int> second(perm.begin() + static_cast<ptrdiff_t>(half), perm.end());
  // For n > 2: {p0 .. p(n-2)} and {p(n-1) .. p1}, sharing p1 .. p(n-2).
  std::vector<int> shared_a = perm, shared_b(perm.rbegin(), perm.rend());
  if (n > 2) {
    shared_a.pop_back();
    shared_b.pop_back();
  }
  struct Ring {
    std::vector<int> ranks;
    std::vector<int32_t> lengths;
    int tag;
  };
  const std::vector<std::vector<Ring>> layouts = {
      {{first, {41, 3, 18}, 0}, {second, {1, 97, 10}, 0}},
      {{shared_a, {29, 6}, 10}, {shared_b, {53, 2, 1}, 20}},
  };
  uint64_t seed = 7;
  for (const std::vector<Ring>& rings : layouts) {
    for (const Ring& r : rings) {
      AttentionProblem p;
      p.lengths = r.lengths;
      p.seed = seed++;
      RunAndCheck(*Group::Make(r.ranks), GetParam(), p, r.tag);
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Strategies, MpiContextParallelAttentionTest,
                         ::testing::Values(Strategy::kRing, Strategy::kAllGather),
                         [](const auto& info) { return std::string(StrategyName(info.param)); });

// A contiguous split of one causal document: member m skips the c-1-m blocks after its own, in
// the forward and again in the backward, and the result stays exact.
TEST(MpiRingAttentionTest, SkipsFullyMaskedSteps) {
  const int c = WorldSize();
  AttentionProblem p;
  p.lengths = {64};
  p.split = SplitKind::kContiguous;
  const Group group = Group::World(c);
  const AttentionData want = test::Reference(p);
  AttentionData got = test::EmptyOutputs(p);
  int skipped = -1;
  const absl::Status status =
      test::RunMember(Comm(), group, Strategy::kRing, p, want, /*tag=*/0, got, &skipped);
  ASSERT_TRUE(status.ok()) << status;
  ExpectMemberMatches(p, group, got, want);
  EXPECT_EQ(skipped, 2 * (c - 1 - Comm().rank()));
}

ModelConfig SmallConfig() {
  ModelConfig c;
  c.vocab_size = 61;
  c.d_model = 32;
  c.n_layers = 2;
  c.n_heads = 4;
  c.n_kv_heads = 2;
  c.ffn_dim = 40;
  return c;
}

// Loss and every gradient of one ContextParallelRunner step on `ranks` against single-rank
// Model::ForwardBackward on the same documents, which every member computes itself.
void ExpectModelMatchesSingleRank(const std::vector<int>& lengths, const std::vector<int>& ranks,
                                  uint64_t seed, CpStrategy strategy) {
  const Group group = *Group::Make(ranks);
  if (!group.Contains(Comm().rank())) return;
  SCOPED_TRACE(testing::Message() << "group " << group.ToString() << " seed " << seed
                                  << " on rank " << Comm().rank());
  const ModelConfig config = SmallConfig();
  std::vector<std::vector<int32_t>> docs;
  for (size_t d = 0; d < lengths.size(); ++d) {
    docs.push_back(
        test::RandomTokens(static_cast<size_t>(lengths[d]), seed * 100 + d, config.vocab_size));
  }
  const TokenBatch global = TokenBatch::FromDocuments(docs);
  const float grad_scale = 1.0f / static_cast<float>(global.num_targets());

  std::unique_ptr<Model> reference = *Model::Create(config);
  reference->InitWeights(seed);
  reference->ZeroGrads();
  const double want_loss = reference->ForwardBackward(global, grad_scale);

  std::unique_ptr<Model> model = *Model::Create(config);
  model->InitWeights(seed);
  ContextParallelRunner runner(Comm(), group, strategy, /*tag=*/6);
  absl::StatusOr<double> loss = runner.ForwardBackward(*model, docs, grad_scale);
  ASSERT_TRUE(loss.ok()) << loss.status();
  EXPECT_LE(std::abs(*loss - want_loss), 1e-6 * std::abs(want_loss));
  for (const ParamEntry& e : reference->layout().entries()) {
    const std::vector<float> got(model->grads() + e.offset, model->grads() + e.offset + e.numel);
    const std::vector<float> want(reference->grads() + e.offset,
                                  reference->grads() + e.offset + e.numel);
    EXPECT_LE(test::RelativeError(got, test::ToDouble(want)), test::kFp32Tolerance) << e.name;
  }
}

class MpiContextParallelModelTest : public ::testing::TestWithParam<CpStrategy> {};

// The whole world in a shuffled order, with packed short documents beside a long one of a length
// that is not a multiple of 2c.
TEST_P(MpiContextParallelModelTest, WholeWorldWithPackedShortDocuments) {
  std::mt19937_64 rng(9);
  std::vector<int> lengths;
  for (int d = 0; d < 8; ++d) lengths.push_back(static_cast<int>(1 + rng() % 9));
  lengths.insert(lengths.begin() + 3, 151);
  ExpectModelMatchesSingleRank(lengths, ShuffledWorld(9), 9, GetParam());
}

// A permuted subset of the world (all but one rank; the whole world reversed on 2 ranks).
TEST_P(MpiContextParallelModelTest, PermutedSubset) {
  std::vector<int> ranks = ShuffledWorld(4);
  if (ranks.size() > 2) {
    ranks.pop_back();
  } else {
    std::reverse(ranks.begin(), ranks.end());
  }
  ExpectModelMatchesSingleRank({97, 5, 12}, ranks, 3, GetParam());
}

INSTANTIATE_TEST_SUITE_P(Strategies, MpiContextParallelModelTest,
                         ::testing::Values(CpStrategy::kRing, CpStrategy::kAllGather),
                         [](const auto& info) {
                           return std::string(info.param == CpStrategy::kRing ? "ring"
                                                                              : "allgather");
                         });

}  // namespace
}  // namespace loom
