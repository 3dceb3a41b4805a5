// Shared by the executor's tests on the local backend and under mpirun: randomized global batches
// drawn from the published length presets (scaled down to fit a test), the single-rank reference,
// and the comparison of a rank's loss and gradients with it (DESIGN.md section 4).
#ifndef LOOM_TESTS_PARALLEL_PLAN_EQUIVALENCE_H_
#define LOOM_TESTS_PARALLEL_PLAN_EQUIVALENCE_H_

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "data/length_distribution.h"
#include "data/packed_batch.h"
#include "parallel/batch_conversion.h"
#include "parallel/step_plan.h"
#include "src/model.h"
#include "tests/src/test_util.h"

namespace loom::test {

inline ModelConfig PlanTestModel() {
  ModelConfig c;
  c.vocab_size = 61;
  c.d_model = 32;
  c.n_layers = 2;
  c.n_heads = 4;
  c.n_kv_heads = 2;
  c.ffn_dim = 40;
  return c;
}

// Four layers, so that pipelines of 2, 3 and 4 stages (and 2 x 2 interleaved) all have layers to
// split.
inline ModelConfig PipelineTestModel() {
  ModelConfig c = PlanTestModel();
  c.n_layers = 4;
  return c;
}

// Lengths drawn from `preset`, divided by `scale` (rounded up) and capped at `longest`, until the
// batch holds about `tokens`: the preset's shape (many short sequences, a few that fill rings) at
// a size a 2-core test runs in milliseconds.
inline std::vector<SequenceSpec> PresetBatch(const std::string& preset, int64_t scale,
                                             int64_t longest, int64_t tokens, uint64_t seed) {
  const LengthDistribution dist = *LengthDistribution::Preset(preset);
  std::vector<SequenceSpec> batch;
  int64_t total = 0;
  for (const int64_t length : dist.Sample(4096, seed)) {
    const int64_t l = std::min(longest, (length + scale - 1) / scale);
    batch.push_back({static_cast<int64_t>(batch.size()), l});
    total += l;
    if (total >= tokens) break;
  }
  return batch;
}

// Random tokens for every sequence, packed as the data layer packs a global batch.
inline PackedBatch RandomPackedBatch(const std::vector<SequenceSpec>& sequences, int vocab,
                                     uint64_t seed) {
  PackedBatch b;
  b.sequence_starts.push_back(0);
  for (const SequenceSpec& s : sequences) {
    const std::vector<int32_t> tokens =
        RandomTokens(static_cast<size_t>(s.length), seed * 7919 + static_cast<uint64_t>(s.id),
                     vocab);
    for (int64_t i = 0; i < s.length; ++i) {
      b.tokens.push_back(tokens[static_cast<size_t>(i)]);
      b.targets.push_back(i + 1 < s.length ? tokens[static_cast<size_t>(i + 1)] : kNoTarget);
      b.positions.push_back(static_cast<int32_t>(i));
      b.sequence_ids.push_back(static_cast<int32_t>(s.id));
    }
    b.num_targets += s.length - 1;
    b.sequence_starts.push_back(static_cast<int64_t>(b.tokens.size()));
  }
  return b;
}

struct Reference {
  double loss_sum = 0.0;
  std::vector<float> grads;
  std::vector<ParamEntry> entries;
};

// Single-rank training on the whole batch: the sum of token losses and the gradient of the mean.
inline Reference SingleRank(const ModelConfig& config, uint64_t weight_seed,
                            const PackedBatch& batch) {
  std::unique_ptr<Model> model = *Model::Create(config);
  model->InitWeights(weight_seed);
  model->ZeroGrads();
  Reference r;
  r.loss_sum = model->ForwardBackward(ToTokenBatch(batch),
                                      1.0f / static_cast<float>(batch.num_targets));
  r.grads.assign(model->grads(), model->grads() + model->num_params());
  r.entries = model->layout().entries();
  return r;
}

// Loss relative <= 1e-6 and every parameter's gradient relative <= 1e-5 (fp32 reassociation).
inline void ExpectMatches(const Reference& want, double loss_sum, const float* grads,
                          const std::string& who) {
  EXPECT_LE(std::abs(loss_sum - want.loss_sum), 1e-6 * std::abs(want.loss_sum)) << who;
  for (const ParamEntry& e : want.entries) {
    const std::vector<float> got(grads + e.offset, grads + e.offset + e.numel);
    const std::vector<float> ref(want.grads.begin() + static_cast<ptrdiff_t>(e.offset),
                                 want.grads.begin() + static_cast<ptrdiff_t>(e.offset + e.numel));
    EXPECT_LE(RelativeError(got, ToDouble(ref)), kFp32Tolerance) << who << ": " << e.name;
  }
}

}  // namespace loom::test

#endif  // LOOM_TESTS_PARALLEL_PLAN_EQUIVALENCE_H_
