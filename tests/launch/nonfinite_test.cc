// optimizer.on_nonfinite through `loom train --resume`: a checkpoint is planted with NaN in the
// embedding row of one byte ('Z') that a single document holds, so exactly the steps whose batch
// holds that document see a NaN loss and gradient. `skip` must leave weights, moments and the
// AdamW step count of those steps bit for bit as they were (every step is checkpointed to
// compare) and train on; `stop` must fail naming the first such step and leave a checkpoint equal
// to the skipping run's state just before it. Without the guard, the NaN gradient reaches every
// weight through AdamW and the checks on finite weights fail.
#include <cmath>
#include <cstring>
#include <set>

#include <gtest/gtest.h>

#include "launch/checkpoint.h"
#include "launch/trainer.h"
#include "parallel/sharded_adamw.h"
#include "runtime/run_ranks.h"
#include "tests/launch/launch_test_util.h"

namespace loom {
namespace {
using namespace loom::testing_util;

constexpr int kPoisonToken = 'Z';

// Everything a checkpoint says about the optimisation state.
struct Snapshot {
  std::vector<float> params, m, v;
  int64_t adamw_step = 0;
  TrainingState state;
};

Snapshot Load(const std::string& dir, const ExperimentConfig& c) {
  Snapshot s;
  auto model = Model::Create(c.model);
  EXPECT_TRUE(model.ok()) << model.status();
  EXPECT_TRUE(ReadCheckpointWeights(dir, **model).ok()) << dir;
  AdamW adamw((*model)->layout(), c.optimizer.adamw);
  absl::StatusOr<TrainingState> state = ReadCheckpointState(dir, adamw);
  EXPECT_TRUE(state.ok()) << state.status();
  s.params.assign((*model)->params(), (*model)->params() + (*model)->num_params());
  s.m.assign(adamw.m().data(), adamw.m().data() + adamw.m().numel());
  s.v.assign(adamw.v().data(), adamw.v().data() + adamw.v().numel());
  s.adamw_step = adamw.step();
  if (state.ok()) s.state = *state;
  return s;
}

// Bitwise, so that NaN equals the same NaN.
bool SameBits(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

std::string CheckpointDir(const fs::path& run, int64_t step) {
  return (run / "checkpoints" / absl::StrFormat("step-%08d", step)).string();
}

class NonFiniteTest : public testing::Test {
 protected:
  void SetUp() override {
    ASSERT_FALSE(scratch_.path().empty());
    // Only document 3 holds the byte 'Z'.
    ASSERT_TRUE(PrepareCorpus(root(), 12, [](int d) { return d == 3 ? " Z." : ""; }));
  }
  const fs::path& root() const { return scratch_.path(); }

  ExperimentConfig Config(const std::string& run, const std::string& policy) const {
    ExperimentConfig c = TinyConfig(root(), run);
    c.parallel.world_size = 2;
    c.schedule.total_steps = 14;
    c.optimizer.on_nonfinite = policy;
    return c;
  }

  // Two healthy steps, then the checkpoint of step 2 rewritten with NaN in 'Z''s embedding row
  // and the full run's config, ready for --resume.
  void PlantPoisonedCheckpoint(const ExperimentConfig& c) {
    ExperimentConfig first = c;
    first.schedule.total_steps = 2;
    const absl::Status trained = RunTraining(first, false, nullptr);
    ASSERT_TRUE(trained.ok()) << trained;
    const std::string dir = CheckpointDir(c.logging.run_dir, 2);
    auto model = Model::Create(c.model);
    ASSERT_TRUE(model.ok());
    ASSERT_TRUE(ReadCheckpointWeights(dir, **model).ok());
    AdamW adamw((*model)->layout(), c.optimizer.adamw);
    absl::StatusOr<TrainingState> state = ReadCheckpointState(dir, adamw);
    ASSERT_TRUE(state.ok()) << state.status();
    const ParamEntry* embed = nullptr;
    for (const ParamEntry& e : (*model)->layout().entries()) {
      if (e.name == "model.embed_tokens.weight") embed = &e;
    }
    ASSERT_NE(embed, nullptr);
    float* row = (*model)->params() + embed->offset + kPoisonToken * c.model.d_model;
    std::fill(row, row + c.model.d_model, std::nanf(""));
    absl::StatusOr<std::string> written =
        WriteCheckpoint(c.logging.run_dir, **model, adamw, *state, c, c.checkpoint.keep_last);
    ASSERT_TRUE(written.ok()) << written.status();
  }

  ScratchDir scratch_{"loom_nonfinite"};
};

TEST_F(NonFiniteTest, SkipLeavesTheStateUntouchedAndStopKeepsTheLastGoodOne) {
  // skip, with a checkpoint after every step to compare states around the skipped ones.
  ExperimentConfig skip = Config("skip", "skip");
  skip.checkpoint.every = 1;
  skip.checkpoint.keep_last = 20;
  ASSERT_NO_FATAL_FAILURE(PlantPoisonedCheckpoint(skip));
  const Result skipped_run = RunShell(kLoom + " train --resume " + skip.logging.run_dir);
  ASSERT_EQ(skipped_run.exit_code, 0) << skipped_run.output;

  const std::vector<nlohmann::json> metrics = Metrics(skip.logging.run_dir);
  ASSERT_EQ(metrics.size(), 14u) << skipped_run.output;
  std::set<int64_t> skipped;
  for (const nlohmann::json& r : metrics) {
    const int64_t step = r["step"].get<int64_t>();
    if (r.value("skipped", false)) {
      skipped.insert(step);
      // JSON has no NaN: the non-finite value is written as null.
      EXPECT_TRUE(r["loss"].is_null() || r["grad_norm"].is_null()) << r.dump();
      EXPECT_NE(skipped_run.output.find(absl::StrFormat(
                    "step %d: non-finite loss (nan) or gradient norm", step)),
                std::string::npos)
          << skipped_run.output;
    } else {
      EXPECT_TRUE(r["loss"].is_number() && std::isfinite(r["loss"].get<double>())) << r.dump();
    }
  }
  ASSERT_FALSE(skipped.empty()) << "no batch held the poisoned document";
  ASSERT_LT(skipped.size(), 12u) << "every step was skipped: the poison spread";
  const int64_t first_bad = *skipped.begin();
  ASSERT_GT(first_bad, 3) << "pick another document: the stop run should write a checkpoint";
  std::printf("skipped steps:");
  for (int64_t s : skipped) std::printf(" %lld", static_cast<long long>(s));
  std::printf("\n");

  for (int64_t step = 3; step <= 14; ++step) {
    SCOPED_TRACE(absl::StrFormat("step %d", step));
    const Snapshot before = Load(CheckpointDir(skip.logging.run_dir, step - 1), skip);
    const Snapshot after = Load(CheckpointDir(skip.logging.run_dir, step), skip);
    if (skipped.contains(step)) {
      EXPECT_TRUE(SameBits(before.params, after.params));
      EXPECT_TRUE(SameBits(before.m, after.m));
      EXPECT_TRUE(SameBits(before.v, after.v));
      EXPECT_EQ(after.adamw_step, before.adamw_step);
    } else {
      EXPECT_FALSE(SameBits(before.params, after.params));
      EXPECT_EQ(after.adamw_step, before.adamw_step + 1);
    }
  }
  // Only the planted row is NaN at the end; moments are finite everywhere.
  const Snapshot last = Load(CheckpointDir(skip.logging.run_dir, 14), skip);
  size_t nonfinite = 0;
  for (float x : last.params) nonfinite += !std::isfinite(x);
  EXPECT_EQ(nonfinite, static_cast<size_t>(skip.model.d_model));
  for (const std::vector<float>* moments : {&last.m, &last.v}) {
    EXPECT_TRUE(std::all_of(moments->begin(), moments->end(), [](float x) {
      return std::isfinite(x);
    }));
  }

  // stop: the same run, checkpointing only at the end, fails at the first bad step and leaves
  // the skipping run's state from just before it, sampler position included (so a resume would
  // draw the bad batch again, now with the data or settings fixed).
  ExperimentConfig stop = Config("stop", "stop");
  ASSERT_NO_FATAL_FAILURE(PlantPoisonedCheckpoint(stop));
  const Result stopped = RunShell(kLoom + " train --resume " + stop.logging.run_dir);
  EXPECT_EQ(stopped.exit_code, 1) << stopped.output;
  EXPECT_NE(stopped.output.find(absl::StrFormat("step %d: non-finite loss (nan)", first_bad)),
            std::string::npos)
      << stopped.output;
  EXPECT_NE(stopped.output.find("optimizer.on_nonfinite is stop"), std::string::npos)
      << stopped.output;
  absl::StatusOr<std::string> latest = LatestCheckpoint(stop.logging.run_dir);
  ASSERT_TRUE(latest.ok()) << latest.status();
  EXPECT_EQ(*latest, CheckpointDir(stop.logging.run_dir, first_bad - 1));
  const Snapshot kept = Load(*latest, stop);
  const Snapshot want = Load(CheckpointDir(skip.logging.run_dir, first_bad - 1), skip);
  EXPECT_EQ(kept.state.step, first_bad - 1);
  EXPECT_TRUE(kept.state.sampler == want.state.sampler);
  EXPECT_TRUE(SameBits(kept.params, want.params));
  EXPECT_TRUE(SameBits(kept.m, want.m));
  EXPECT_TRUE(SameBits(kept.v, want.v));
  EXPECT_EQ(kept.adamw_step, want.adamw_step);
  EXPECT_EQ(Metrics(stop.logging.run_dir).size(), static_cast<size_t>(first_bad - 1));
}

// The ZeRO-1 optimizer makes the same decision itself: its norm is known only after the
// reduce-scatter, so a NaN in one rank's gradient contribution must stop the update on every rank.
TEST(ShardedAdamWNonFiniteTest, ANaNContributionUpdatesNothingOnAnyRank) {
  ModelConfig mc;
  mc.vocab_size = 64;
  mc.d_model = 16;
  mc.n_layers = 1;
  mc.n_heads = 2;
  mc.n_kv_heads = 2;
  mc.ffn_dim = 32;
  const ParamLayout layout(mc);
  const size_t n = layout.total_numel();
  RuntimeConfig rc;
  rc.local_world_size = 3;
  const absl::Status status = RunRanks(rc, [&](Communicator& comm) -> absl::Status {
    auto opt = ShardedAdamW::Create(comm, comm.world_group(), layout, AdamWConfig{});
    if (!opt.ok()) return opt.status();
    std::vector<float> params(n), grads(n, 0.01f);
    for (size_t i = 0; i < n; ++i) params[i] = 0.001f * static_cast<float>(i % 97);
    const std::vector<float> before = params;
    if (comm.rank() == 1) grads[n / 2] = std::nanf("");
    absl::StatusOr<double> norm = (*opt)->Step(params.data(), grads.data(), 1e-2f, 1.0);
    if (!norm.ok()) return norm.status();
    EXPECT_TRUE(std::isnan(*norm)) << "rank " << comm.rank();
    EXPECT_TRUE(SameBits(params, before)) << "rank " << comm.rank();
    EXPECT_EQ((*opt)->step(), 0) << "rank " << comm.rank();
    AdamW full(layout, AdamWConfig{});
    if (absl::Status s = (*opt)->GatherState(full); !s.ok()) return s;
    for (const Buffer* moments : {&full.m(), &full.v()}) {
      EXPECT_TRUE(std::all_of(moments->data(), moments->data() + moments->numel(),
                              [](float x) { return x == 0.0f; }))
          << "rank " << comm.rank();
    }
    // A finite step afterwards is an ordinary first step.
    std::fill(grads.begin(), grads.end(), 0.01f);
    norm = (*opt)->Step(params.data(), grads.data(), 1e-2f, 1.0);
    if (!norm.ok()) return norm.status();
    EXPECT_TRUE(std::isfinite(*norm));
    EXPECT_EQ((*opt)->step(), 1);
    EXPECT_FALSE(SameBits(params, before));
    return absl::OkStatus();
  });
  EXPECT_TRUE(status.ok()) << status;
}

}  // namespace
}  // namespace loom
