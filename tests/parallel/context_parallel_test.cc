// The whole model with context-parallel sharding against single-rank training on the same
// documents: the loss (relative <= 1e-6) and every parameter's gradient (relative <= 1e-5), for
// both attention strategies, several group sizes, permuted subsets of a larger world, packed short
// documents beside long ones and lengths not divisible by 2c.
#include "parallel/context_parallel.h"

#include <gtest/gtest.h>
#include <omp.h>

#include <cmath>
#include <random>
#include <string>
#include <vector>

#include "runtime/local_world.h"
#include "tests/src/test_util.h"

namespace loom {
namespace {

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

std::vector<std::vector<int32_t>> RandomDocuments(const std::vector<int>& lengths, uint64_t seed,
                                                  int vocab) {
  std::vector<std::vector<int32_t>> docs;
  for (size_t d = 0; d < lengths.size(); ++d) {
    docs.push_back(test::RandomTokens(static_cast<size_t>(lengths[d]), seed * 100 + d, vocab));
  }
  return docs;
}

struct Case {
  std::vector<int> lengths;
  int world_size;
  std::vector<int> group;
  uint64_t seed;
};

void ExpectMatchesSingleRank(const Case& k, CpStrategy strategy) {
  const ModelConfig config = SmallConfig();
  const std::vector<std::vector<int32_t>> docs =
      RandomDocuments(k.lengths, k.seed, config.vocab_size);
  const TokenBatch global = TokenBatch::FromDocuments(docs);
  const float grad_scale = 1.0f / static_cast<float>(global.num_targets());

  std::unique_ptr<Model> reference = *Model::Create(config);
  reference->InitWeights(k.seed);
  reference->ZeroGrads();
  const double want_loss = reference->ForwardBackward(global, grad_scale);

  const Group group = *Group::Make(k.group);
  std::vector<double> losses(static_cast<size_t>(k.world_size), NAN);
  std::vector<float> grads;
  std::unique_ptr<LocalWorld> world = *LocalWorld::Create(k.world_size, absl::Seconds(60));
  const absl::Status status = world->Run([&](Communicator& comm) -> absl::Status {
    if (!group.Contains(comm.rank())) return absl::OkStatus();
    omp_set_num_threads(1);
    absl::StatusOr<std::unique_ptr<Model>> model = Model::Create(config);
    if (!model.ok()) return model.status();
    (*model)->InitWeights(k.seed);
    ContextParallelRunner runner(comm, group, strategy, /*tag=*/6);
    absl::StatusOr<double> loss = runner.ForwardBackward(**model, docs, grad_scale);
    if (!loss.ok()) return loss.status();
    losses[static_cast<size_t>(comm.rank())] = *loss;
    if (comm.rank() == group.world_rank(0)) {
      grads.assign((*model)->grads(), (*model)->grads() + (*model)->num_params());
    }
    return absl::OkStatus();
  });
  ASSERT_TRUE(status.ok()) << status;
  for (int r : k.group) {
    EXPECT_LE(std::abs(losses[static_cast<size_t>(r)] - want_loss), 1e-6 * std::abs(want_loss))
        << "rank " << r;
  }
  for (const ParamEntry& e : reference->layout().entries()) {
    const std::vector<float> got(grads.begin() + static_cast<ptrdiff_t>(e.offset),
                                 grads.begin() + static_cast<ptrdiff_t>(e.offset + e.numel));
    const std::vector<float> want(reference->grads() + e.offset,
                                  reference->grads() + e.offset + e.numel);
    EXPECT_LE(test::RelativeError(got, test::ToDouble(want)), test::kFp32Tolerance) << e.name;
  }
}

class ContextParallelModelTest : public ::testing::TestWithParam<CpStrategy> {};

TEST_P(ContextParallelModelTest, WholeWorldGroups) {
  const std::vector<Case> cases = {
      {{37}, 1, {0}, 1},
      {{53, 1, 8}, 2, {1, 0}, 2},
      {{97, 5, 12}, 3, {0, 1, 2}, 3},
      {{120, 1, 2, 31}, 4, {3, 1, 0, 2}, 4},
      {{61, 9}, 5, {4, 0, 3, 1, 2}, 5},
  };
  for (const Case& k : cases) {
    SCOPED_TRACE(testing::Message() << "group " << Group::Make(k.group)->ToString() << " seed "
                                    << k.seed);
    ExpectMatchesSingleRank(k, GetParam());
  }
}

// A permuted subset of a larger world, with many short documents beside a long one.
TEST_P(ContextParallelModelTest, PermutedSubsetWithPackedShortDocuments) {
  std::mt19937_64 rng(9);
  std::vector<int> lengths;
  for (int d = 0; d < 12; ++d) lengths.push_back(static_cast<int>(1 + rng() % 9));
  lengths.insert(lengths.begin() + 5, 151);
  ExpectMatchesSingleRank(Case{lengths, 6, {4, 1, 3}, 9}, GetParam());
}

INSTANTIATE_TEST_SUITE_P(Strategies, ContextParallelModelTest,
                         ::testing::Values(CpStrategy::kRing, CpStrategy::kAllGather),
                         [](const auto& info) {
                           return std::string(info.param == CpStrategy::kRing ? "ring"
                                                                              : "allgather");
                         });

}  // namespace
}  // namespace loom
