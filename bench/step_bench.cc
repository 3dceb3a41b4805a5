// `step`: one training step (forward, backward, clipping, AdamW) of the benchmark model on a
// packed batch, with the sgemm rate of the same run as the yardstick.
#include <cstdio>
#include <memory>

#include "bench/bench.h"
#include "bench/bench_model.h"
#include "src/adamw.h"
#include "src/grad_clip.h"
#include "src/model.h"

namespace loom::bench {
namespace {

struct StepResult {
  double step_s;
  double loss;  // mean token loss of the last step
  size_t peak_bytes;
};

StepResult TimeSteps(const BenchOptions& o) {
  Allocator alloc;
  const ModelConfig config = BenchModelConfig();
  auto model = std::move(Model::Create(config, &alloc)).value();
  model->InitWeights(1);
  AdamW adamw(model->layout(), AdamWConfig{}, &alloc);
  const TokenBatch batch = BenchBatch(config, o.quick);
  const float scale = 1.0f / static_cast<float>(batch.num_targets());
  double loss = 0;
  auto step = [&] {
    model->ZeroGrads();
    loss = model->ForwardBackward(batch, scale);
    ClipGradNorm(model->grads(), model->num_params(), 1.0);
    adamw.Step(model->params(), model->grads(), 1e-4f);
  };
  step();  // warm-up: first touches of memory, OpenMP thread start
  alloc.ResetPeak();
  std::vector<double> times;
  for (int r = 0; r < o.repeats; ++r) times.push_back(TimeSeconds(step));
  return StepResult{Median(times), loss / static_cast<double>(batch.num_targets()),
                    alloc.peak_bytes()};
}

nlohmann::json RunStep(const BenchOptions& o) {
  const ModelConfig config = BenchModelConfig();
  const std::vector<int> lengths = BenchDocumentLengths(o.quick);
  int tokens = 0;
  for (int l : lengths) tokens += l;
  const double sgemm = MeasureSgemmGflops(1024, o.repeats);
  const StepResult r = TimeSteps(o);
  const double gflops = TrainingStepFlops(config, lengths) / r.step_s / 1e9;
  std::printf("step: d_model %d, %d layers, %d heads, ffn %d, vocab %d, %d tokens in %zu documents\n",
              config.d_model, config.n_layers, config.n_heads, config.ffn_dim, config.vocab_size,
              tokens, lengths.size());
  std::printf("  %-22s %10.4f s (median of %d)\n", "step time", r.step_s, o.repeats);
  std::printf("  %-22s %10.0f\n", "tokens/s", tokens / r.step_s);
  std::printf("  %-22s %10.1f\n", "achieved GFLOP/s", gflops);
  std::printf("  %-22s %10.1f\n", "sgemm GFLOP/s", sgemm);
  std::printf("  %-22s %10.3f\n", "gemm_fraction", gflops / sgemm);
  std::printf("  %-22s %10.1f MiB\n", "peak memory", r.peak_bytes / 1048576.0);
  return {{"tokens_per_s", tokens / r.step_s}, {"gflops", gflops},
          {"sgemm_gflops", sgemm},            {"gemm_fraction", gflops / sgemm},
          {"step_s", r.step_s},                {"tokens", tokens},
          {"peak_bytes", r.peak_bytes},        {"loss", r.loss}};
}

// One process, one measurement: the vs_torch driver alternates this with the PyTorch peer and
// reads the process's peak RSS itself.
nlohmann::json RunStepOnly(const BenchOptions& o) {
  const StepResult r = TimeSteps(o);
  std::printf("loom step %.4f s, loss %.6f\n", r.step_s, r.loss);
  return {{"step_s", r.step_s}, {"loss", r.loss}, {"allocator_peak_bytes", r.peak_bytes}};
}

Registrar reg_step("step", RunStep);
Registrar reg_step_only("step_only", RunStepOnly);

}  // namespace
}  // namespace loom::bench
