// ZeRO-1 AdamW on the local backend against single-rank AdamW + ClipGradNorm on the summed
// gradient, for world sizes 1, 2, 3, 5 and 8 and three layouts: 17888 parameters (divisible by 1,
// 2 and 8, so the gradient is reduced in place, but not by 3 or 5), 1452 (divisible by neither 5
// nor 8) and 3 (fewer parameters than ranks: some shards are empty). Over three steps, with
// clipping active in some steps and not in others, the parameters agree to relative 1e-6 (worst
// seen: 0, bit for bit, since the reference adds the contributions in the backend's order) and
// the returned norm to relative 1e-9 (worst seen 7.8e-16). Checkpoint state gathered from the
// shards matches the single-rank moments and resumes bit for bit on the same group, and to
// rounding on a permuted group that reshards it (worst seen 1.9e-9).
#include "parallel/sharded_adamw.h"

#include <gtest/gtest.h>
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <functional>
#include <memory>
#include <ostream>
#include <string>
#include <tuple>
#include <vector>

#include "absl/strings/match.h"
#include "runtime/run_ranks.h"
#include "src/grad_clip.h"
#include "tests/src/test_util.h"

namespace loom {
namespace {

constexpr int kSteps = 3;
constexpr float kLr[kSteps] = {1e-2f, 5e-3f, 2e-3f};
// Gradients of different sizes, so that one threshold clips some steps and not others.
constexpr float kGradScale[kSteps] = {1.0f, 0.3f, 2.0f};
constexpr double kParamTolerance = 1e-6;
constexpr double kNormTolerance = 1e-9;

struct LayoutCase {
  const char* name;
  ModelConfig config;
};

LayoutCase SmallModel() {
  ModelConfig c;
  c.vocab_size = 61;
  c.d_model = 32;
  c.n_layers = 2;
  c.n_heads = 4;
  c.n_kv_heads = 2;
  c.ffn_dim = 40;
  return {"small", c};  // 17888 parameters
}

LayoutCase OddModel() {
  ModelConfig c;
  c.vocab_size = 11;
  c.d_model = 12;
  c.n_layers = 1;
  c.n_heads = 2;
  c.n_kv_heads = 1;
  c.ffn_dim = 20;
  return {"odd", c};  // 1452 parameters
}

// A 1x1 embedding, a 1-element norm gain and a 1x1 head: 3 parameters, decayed, not, decayed. A
// layout needs only shapes, not a model that validates.
LayoutCase TinyModel() {
  ModelConfig c;
  c.vocab_size = 1;
  c.d_model = 1;
  c.n_layers = 0;
  c.n_heads = 1;
  c.n_kv_heads = 1;
  c.ffn_dim = 1;
  return {"tiny", c};
}

void PrintTo(const LayoutCase& c, std::ostream* os) { *os << c.name; }

RuntimeConfig LocalRuntime(int world_size) {
  RuntimeConfig config;
  config.local_world_size = world_size;
  config.timeout = absl::Seconds(30);
  return config;
}

std::vector<float> InitialParams(size_t p) { return test::RandomVector(p, 7); }

// Rank `rank`'s contribution to the gradient of step `step`.
std::vector<float> Contribution(size_t p, int step, int rank) {
  return test::RandomVector(p, 1000 * static_cast<uint64_t>(step) + static_cast<uint64_t>(rank) + 1,
                            kGradScale[step]);
}

// The gradient the group reduces: contributions added in group order, as the local backend does,
// so the reference sees the same gradient bits as the shards.
std::vector<float> SummedGradient(size_t p, int step, const Group& group) {
  std::vector<float> sum = Contribution(p, step, group.world_rank(0));
  for (int i = 1; i < group.size(); ++i) {
    const std::vector<float> c = Contribution(p, step, group.world_rank(i));
    for (size_t e = 0; e < p; ++e) sum[e] += c[e];
  }
  return sum;
}

// Between the smallest and the largest of the steps' gradient norms: some steps are clipped and
// some are not, and no norm sits at the threshold, where rounding could decide.
double MaxNorm(size_t p, const Group& group) {
  double smallest = INFINITY, largest = 0.0;
  for (int s = 0; s < kSteps; ++s) {
    const std::vector<float> g = SummedGradient(p, s, group);
    smallest = std::min(smallest, GradNorm(g.data(), p));
    largest = std::max(largest, GradNorm(g.data(), p));
  }
  return std::sqrt(smallest * largest);
}

struct Reference {
  std::vector<float> params;
  std::vector<double> norms;
  std::unique_ptr<AdamW> adamw;
};

// Single-rank training on the summed gradient for `steps` steps.
Reference RunReference(const ParamLayout& layout, const Group& group, int steps,
                       double max_norm) {
  const size_t p = layout.total_numel();
  Reference ref{InitialParams(p), {}, std::make_unique<AdamW>(layout, AdamWConfig{})};
  for (int s = 0; s < steps; ++s) {
    std::vector<float> g = SummedGradient(p, s, group);
    ref.norms.push_back(ClipGradNorm(g.data(), p, max_norm));
    ref.adamw->Step(ref.params.data(), g.data(), kLr[s]);
  }
  return ref;
}

double RelativeError(const std::vector<float>& got, const std::vector<float>& want) {
  return test::RelativeError(got, test::ToDouble(want));
}

bool SameBits(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

class ShardedAdamWTest : public ::testing::TestWithParam<std::tuple<LayoutCase, int>> {
 protected:
  const LayoutCase& layout_case() const { return std::get<0>(GetParam()); }
  int world_size() const { return std::get<1>(GetParam()); }
};

TEST_P(ShardedAdamWTest, MatchesSingleRankWithClipping) {
  const ParamLayout layout(layout_case().config);
  const size_t p = layout.total_numel();
  const int n = world_size();
  const Group group = Group::World(n);
  const double max_norm = MaxNorm(p, group);
  const Reference ref = RunReference(layout, group, kSteps, max_norm);
  const int clipped = static_cast<int>(
      std::count_if(ref.norms.begin(), ref.norms.end(), [&](double x) { return x > max_norm; }));
  ASSERT_GE(clipped, 1) << "clipping must be exercised";
  ASSERT_LT(clipped, kSteps) << "an unclipped step must be exercised";

  std::vector<std::vector<float>> params(static_cast<size_t>(n));
  std::vector<std::vector<double>> norms(static_cast<size_t>(n));
  std::vector<size_t> begins(static_cast<size_t>(n)), ends(static_cast<size_t>(n));
  const absl::Status status = RunRanks(LocalRuntime(n), [&](Communicator& comm) -> absl::Status {
    omp_set_num_threads(1);
    const size_t r = static_cast<size_t>(comm.rank());
    absl::StatusOr<std::unique_ptr<ShardedAdamW>> opt =
        ShardedAdamW::Create(comm, group, layout, AdamWConfig{});
    if (!opt.ok()) return opt.status();
    begins[r] = (*opt)->shard_begin();
    ends[r] = (*opt)->shard_end();
    params[r] = InitialParams(p);
    for (int s = 0; s < kSteps; ++s) {
      std::vector<float> g = Contribution(p, s, comm.rank());
      absl::StatusOr<double> norm = (*opt)->Step(params[r].data(), g.data(), kLr[s], max_norm);
      if (!norm.ok()) return norm.status();
      norms[r].push_back(*norm);
    }
    if ((*opt)->step() != kSteps) return absl::InternalError("step count");
    return absl::OkStatus();
  });
  ASSERT_TRUE(status.ok()) << status;

  // The shards tile [0, P) in group order and differ in size by at most one element.
  size_t smallest = p, largest = 0;
  for (int i = 0; i < n; ++i) {
    const size_t r = static_cast<size_t>(i);
    EXPECT_EQ(begins[r], i == 0 ? 0 : ends[r - 1]) << "rank " << i;
    smallest = std::min(smallest, ends[r] - begins[r]);
    largest = std::max(largest, ends[r] - begins[r]);
  }
  EXPECT_EQ(ends.back(), p);
  EXPECT_LE(largest - smallest, 1u);

  double worst_params = 0.0, worst_norm = 0.0;
  for (int i = 0; i < n; ++i) {
    const size_t r = static_cast<size_t>(i);
    EXPECT_TRUE(SameBits(params[r], params[0])) << "rank " << i << " holds another model";
    ASSERT_EQ(norms[r].size(), static_cast<size_t>(kSteps));
    for (int s = 0; s < kSteps; ++s) {
      const double got = norms[r][static_cast<size_t>(s)];
      const double want = ref.norms[static_cast<size_t>(s)];
      EXPECT_EQ(got, norms[0][static_cast<size_t>(s)]) << "rank " << i << " step " << s;
      EXPECT_LE(std::abs(got - want), kNormTolerance * want) << "rank " << i << " step " << s;
      worst_norm = std::max(worst_norm, std::abs(got - want) / want);
    }
  }
  worst_params = RelativeError(params[0], ref.params);
  EXPECT_LE(worst_params, kParamTolerance);
  EXPECT_GT(RelativeError(ref.params, InitialParams(p)), 1e-4) << "the reference must move";
  std::printf("[%s, %d ranks, %zu params] params rel err %.2e, norm rel err %.2e\n",
              layout_case().name, n, p, worst_params, worst_norm);
}

TEST_P(ShardedAdamWTest, GatheredStateResumes) {
  const ParamLayout layout(layout_case().config);
  const size_t p = layout.total_numel();
  const int n = world_size();
  const Group group = Group::World(n);
  std::vector<int> reversed;
  for (int i = n - 1; i >= 0; --i) reversed.push_back(i);
  const Group permuted = *Group::Make(reversed);
  const double max_norm = MaxNorm(p, group);
  const Reference ref2 = RunReference(layout, group, kSteps - 1, max_norm);
  const Reference ref3 = RunReference(layout, group, kSteps, max_norm);

  struct RankResult {
    std::vector<float> m, v;
    int64_t gathered_step = 0, loaded_step = 0, final_step = 0;
    std::vector<float> continued, resumed, resharded;
    double continued_norm = 0.0, resumed_norm = 0.0;
  };
  std::vector<RankResult> results(static_cast<size_t>(n));
  const absl::Status status = RunRanks(LocalRuntime(n), [&](Communicator& comm) -> absl::Status {
    omp_set_num_threads(1);
    RankResult& out = results[static_cast<size_t>(comm.rank())];
    absl::StatusOr<std::unique_ptr<ShardedAdamW>> opt =
        ShardedAdamW::Create(comm, group, layout, AdamWConfig{});
    if (!opt.ok()) return opt.status();
    std::vector<float> params = InitialParams(p);
    for (int s = 0; s < kSteps - 1; ++s) {
      std::vector<float> g = Contribution(p, s, comm.rank());
      if (absl::StatusOr<double> norm = (*opt)->Step(params.data(), g.data(), kLr[s], max_norm);
          !norm.ok()) {
        return norm.status();
      }
    }
    AdamW full(layout, AdamWConfig{});
    if (absl::Status s = (*opt)->GatherState(full); !s.ok()) return s;
    out.m.assign(full.m().data(), full.m().data() + p);
    out.v.assign(full.v().data(), full.v().data() + p);
    out.gathered_step = full.step();

    // The same group from the checkpoint, and the reversed group, which moves every shard.
    absl::StatusOr<std::unique_ptr<ShardedAdamW>> resumed =
        ShardedAdamW::Create(comm, group, layout, AdamWConfig{});
    absl::StatusOr<std::unique_ptr<ShardedAdamW>> resharded =
        ShardedAdamW::Create(comm, permuted, layout, AdamWConfig{});
    if (!resumed.ok()) return resumed.status();
    if (!resharded.ok()) return resharded.status();
    if (absl::Status s = (*resumed)->LoadState(full); !s.ok()) return s;
    if (absl::Status s = (*resharded)->LoadState(full); !s.ok()) return s;
    out.loaded_step = (*resumed)->step();

    const int last = kSteps - 1;
    out.continued = out.resumed = out.resharded = params;
    std::vector<float> g = Contribution(p, last, comm.rank());
    absl::StatusOr<double> norm = (*opt)->Step(out.continued.data(), g.data(), kLr[last], max_norm);
    if (!norm.ok()) return norm.status();
    out.continued_norm = *norm;
    g = Contribution(p, last, comm.rank());
    norm = (*resumed)->Step(out.resumed.data(), g.data(), kLr[last], max_norm);
    if (!norm.ok()) return norm.status();
    out.resumed_norm = *norm;
    g = Contribution(p, last, comm.rank());
    norm = (*resharded)->Step(out.resharded.data(), g.data(), kLr[last], max_norm);
    if (!norm.ok()) return norm.status();
    out.final_step = (*resharded)->step();
    return absl::OkStatus();
  });
  ASSERT_TRUE(status.ok()) << status;

  double worst_resharded = 0.0;
  for (int i = 0; i < n; ++i) {
    const RankResult& r = results[static_cast<size_t>(i)];
    SCOPED_TRACE(testing::Message() << "rank " << i);
    EXPECT_EQ(r.gathered_step, kSteps - 1);
    EXPECT_EQ(r.loaded_step, kSteps - 1);
    EXPECT_EQ(r.final_step, kSteps);
    EXPECT_TRUE(SameBits(r.m, results[0].m)) << "every member gathers the same m";
    EXPECT_TRUE(SameBits(r.v, results[0].v)) << "every member gathers the same v";
    EXPECT_TRUE(SameBits(r.resumed, r.continued)) << "resuming changed the trajectory";
    EXPECT_EQ(r.resumed_norm, r.continued_norm);
    const double err = RelativeError(r.resharded, ref3.params);
    EXPECT_LE(err, kParamTolerance) << "resumed on the reversed group";
    worst_resharded = std::max(worst_resharded, err);
  }
  const AdamW& want = *ref2.adamw;
  EXPECT_LE(RelativeError(results[0].m, std::vector<float>(want.m().data(), want.m().data() + p)),
            kParamTolerance);
  EXPECT_LE(RelativeError(results[0].v, std::vector<float>(want.v().data(), want.v().data() + p)),
            kParamTolerance);
  std::printf("[%s, %d ranks] resharded resume rel err %.2e\n", layout_case().name, n,
              worst_resharded);
}

INSTANTIATE_TEST_SUITE_P(
    LayoutsAndWorlds, ShardedAdamWTest,
    ::testing::Combine(::testing::Values(SmallModel(), OddModel(), TinyModel()),
                       ::testing::Values(1, 2, 3, 5, 8)),
    [](const auto& info) {
      return std::string(std::get<0>(info.param).name) + "_" +
             std::to_string(std::get<1>(info.param)) + "ranks";
    });

// Runs `body` on every rank of a local world and returns each rank's own status.
std::vector<absl::Status> StatusPerRank(
    int n, const std::function<absl::Status(Communicator&)>& body) {
  std::vector<absl::Status> statuses(static_cast<size_t>(n));
  const absl::Status run = RunRanks(LocalRuntime(n), [&](Communicator& comm) -> absl::Status {
    statuses[static_cast<size_t>(comm.rank())] = body(comm);
    return absl::OkStatus();
  });
  EXPECT_TRUE(run.ok()) << run;
  return statuses;
}

TEST(ShardedAdamWErrors, RankOutsideTheGroup) {
  const ParamLayout layout(SmallModel().config);
  const Group group = *Group::Make({0, 1});
  const std::vector<absl::Status> statuses = StatusPerRank(3, [&](Communicator& comm) {
    return ShardedAdamW::Create(comm, group, layout, AdamWConfig{}).status();
  });
  EXPECT_TRUE(statuses[0].ok()) << statuses[0];
  EXPECT_TRUE(statuses[1].ok()) << statuses[1];
  EXPECT_EQ(statuses[2].code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(absl::StrContains(statuses[2].message(), "rank 2 is not a member of ZeRO group [0 1]"))
      << statuses[2];
}

TEST(ShardedAdamWErrors, GroupOutsideTheWorld) {
  const ParamLayout layout(SmallModel().config);
  const Group group = *Group::Make({0, 3});
  const std::vector<absl::Status> statuses = StatusPerRank(2, [&](Communicator& comm) {
    return ShardedAdamW::Create(comm, group, layout, AdamWConfig{}).status();
  });
  EXPECT_EQ(statuses[0].code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(absl::StrContains(statuses[0].message(), "rank 3 outside the world of 2"))
      << statuses[0];
}

TEST(ShardedAdamWErrors, BadStepArguments) {
  const ParamLayout layout(OddModel().config);
  const size_t p = layout.total_numel();
  const std::vector<absl::Status> statuses = StatusPerRank(1, [&](Communicator& comm) {
    std::unique_ptr<ShardedAdamW> opt =
        *ShardedAdamW::Create(comm, comm.world_group(), layout, AdamWConfig{});
    const std::vector<float> init = InitialParams(p);
    std::vector<float> params = init, g = Contribution(p, 0, 0);
    struct BadCall {
      float* params;
      float* grads;
      float lr;
      double max_norm;
      const char* message;
    } calls[] = {{nullptr, g.data(), 1e-3f, 1.0, "null parameter buffer"},
                 {params.data(), nullptr, 1e-3f, 1.0, "null gradient buffer"},
                 {params.data(), g.data(), NAN, 1.0, "learning rate nan"},
                 {params.data(), g.data(), INFINITY, 1.0, "learning rate inf"},
                 {params.data(), g.data(), 1e-3f, NAN, "max_norm nan"}};
    for (const BadCall& c : calls) {
      const absl::Status s = opt->Step(c.params, c.grads, c.lr, c.max_norm).status();
      EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << c.message;
      EXPECT_TRUE(absl::StrContains(s.message(), c.message)) << s;
    }
    EXPECT_EQ(opt->step(), 0);
    EXPECT_TRUE(SameBits(params, init)) << "a rejected step changed the parameters";
    return absl::OkStatus();
  });
  EXPECT_TRUE(statuses[0].ok()) << statuses[0];
}

TEST(ShardedAdamWErrors, StateOfAnotherLayoutOrAShard) {
  const ParamLayout layout(SmallModel().config);
  const ParamLayout tiny(TinyModel().config);
  const std::vector<absl::Status> statuses = StatusPerRank(2, [&](Communicator& comm) {
    std::unique_ptr<ShardedAdamW> opt =
        *ShardedAdamW::Create(comm, comm.world_group(), layout, AdamWConfig{});
    AdamW other(tiny, AdamWConfig{});
    absl::Status s = opt->GatherState(other);
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
    EXPECT_TRUE(absl::StrContains(s.message(), "covers parameters [0, 3), not all 17888")) << s;
    const AdamW shard(layout, AdamWConfig{}, 1, layout.total_numel());
    s = opt->LoadState(shard);
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
    EXPECT_TRUE(absl::StrContains(s.message(), "covers parameters [1, 17888)")) << s;
    return absl::OkStatus();
  });
  for (const absl::Status& s : statuses) EXPECT_TRUE(s.ok()) << s;
}

// Members that disagree on the layout: the communicator's complaint comes back with context.
TEST(ShardedAdamWErrors, CommunicatorFailureNamesTheStage) {
  const ParamLayout small(SmallModel().config);
  const ParamLayout tiny(TinyModel().config);
  const std::vector<absl::Status> statuses = StatusPerRank(2, [&](Communicator& comm) {
    const ParamLayout& layout = comm.rank() == 0 ? small : tiny;
    const size_t p = layout.total_numel();
    std::unique_ptr<ShardedAdamW> opt =
        *ShardedAdamW::Create(comm, comm.world_group(), layout, AdamWConfig{});
    std::vector<float> params = InitialParams(p), g = Contribution(p, 0, comm.rank());
    return opt->Step(params.data(), g.data(), 1e-3f, 1.0).status();
  });
  for (const absl::Status& s : statuses) {
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
    EXPECT_TRUE(absl::StrContains(s.message(), "reduce-scattering gradients: ")) << s;
  }
}

}  // namespace
}  // namespace loom
