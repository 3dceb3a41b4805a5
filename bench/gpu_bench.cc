// GPU benchmarks (built only with CUDA):
//   gpu_gemm:      bf16 GEMM TFLOP/s through loom's Gemm (and pedantic fp32 for reference).
//   gpu_attention: fused causal attention forward + backward in bf16, as TFLOP/s and as a
//                  fraction of the bf16 GEMM rate measured in the same run.
//   gpu_step:      one bf16 training step of a ~1B-parameter LLaMA-style model: tokens/s and
//                  model FLOPs utilisation.
// Device work is timed with CUDA events on the compute stream (GEMM, attention) or, for the
// training step whose calls return only when their results are ready, with the host clock.
#ifdef LOOM_HAVE_CUDA

#include <cuda_bf16.h>
#include <cuda_runtime_api.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "bench/bench.h"
#include "bench/bench_model.h"
#include "src/adamw.h"
#include "src/cuda/cuda_check.h"
#include "src/cuda/device_buffer.h"
#include "src/cuda/device_context.h"
#include "src/cuda/flash_attention.h"
#include "src/cuda/gemm.h"
#include "src/cuda/gpu_model.h"
#include "src/model_config.h"
#include "src/param_layout.h"
#include "src/random.h"
#include "src/status_macros.h"
#include "src/token_batch.h"

namespace loom::bench {
namespace {

using gpu::DeviceBuffer;
using gpu::DeviceContext;
using gpu::DType;
using gpu::Precision;

// n values uniform in [-scale, scale), the same for the same seed.
std::vector<float> HostRandom(size_t n, uint64_t seed, float scale = 1.0f) {
  Random rng(seed);
  std::vector<float> v(n);
  for (float& x : v) x = static_cast<float>((2.0 * rng.Uniform() - 1.0) * scale);
  return v;
}

absl::StatusOr<DeviceBuffer> Upload(DeviceContext& ctx, size_t n, uint64_t seed, DType dtype) {
  return gpu::ToDevice(ctx.allocator(), HostRandom(n, seed), dtype, ctx.compute());
}

// Events recorded on a stream, destroyed with the object.
class Events {
 public:
  Events() = default;
  Events(const Events&) = delete;
  Events& operator=(const Events&) = delete;
  ~Events() {
    for (cudaEvent_t e : events_) (void)cudaEventDestroy(e);
  }
  absl::Status Create(int n) {
    for (int i = 0; i < n; ++i) {
      cudaEvent_t e = nullptr;
      LOOM_CUDA_RETURN_IF_ERROR(cudaEventCreate(&e));
      events_.push_back(e);
    }
    return absl::OkStatus();
  }
  absl::Status Record(int i, cudaStream_t stream) {
    LOOM_CUDA_RETURN_IF_ERROR(cudaEventRecord(events_[static_cast<size_t>(i)], stream));
    return absl::OkStatus();
  }
  // Seconds from event `from` to event `to`, once `to` has completed.
  absl::StatusOr<double> Seconds(int from, int to) {
    LOOM_CUDA_RETURN_IF_ERROR(cudaEventSynchronize(events_[static_cast<size_t>(to)]));
    float ms = 0.0f;
    LOOM_CUDA_RETURN_IF_ERROR(cudaEventElapsedTime(&ms, events_[static_cast<size_t>(from)],
                                                   events_[static_cast<size_t>(to)]));
    return ms / 1e3;
  }

 private:
  std::vector<cudaEvent_t> events_;
};

nlohmann::json ErrorJson(const char* bench, const absl::Status& status) {
  std::printf("%s: %s\n", bench, status.ToString().c_str());
  return {{"error", status.ToString()}};
}

// ---------------------------------------------------------------------------------------------
// GEMM

// TFLOP/s of a square n^3 Gemm in `precision`, with D of the operand type and B transposed (the
// linear layer's forward): median over `repeats` of `iters` back-to-back calls each.
absl::StatusOr<double> MeasureGemmTflops(DeviceContext& ctx, Precision precision, int n,
                                         int repeats, int iters) {
  const DType operand = gpu::OperandType(precision);
  const size_t nn = static_cast<size_t>(n) * n;
  LOOM_ASSIGN_OR_RETURN(DeviceBuffer a, Upload(ctx, nn, 11, operand));
  LOOM_ASSIGN_OR_RETURN(DeviceBuffer b, Upload(ctx, nn, 12, operand));
  LOOM_ASSIGN_OR_RETURN(DeviceBuffer d,
                        DeviceBuffer::Create(ctx.allocator(), operand, nn, ctx.compute()));
  auto run = [&]() -> absl::Status {
    return gpu::Gemm(ctx, precision, /*trans_a=*/false, /*trans_b=*/true, n, n, n, 1.0f, a.data(),
                     b.data(), 0.0f, d.data(), operand);
  };
  // Warm-up: the first call chooses and caches the algorithm, and clocks ramp up.
  for (int i = 0; i < 3; ++i) LOOM_RETURN_IF_ERROR(run());
  LOOM_RETURN_IF_ERROR(ctx.Synchronize());
  Events ev;
  LOOM_RETURN_IF_ERROR(ev.Create(2));
  std::vector<double> seconds;
  for (int r = 0; r < repeats; ++r) {
    LOOM_RETURN_IF_ERROR(ev.Record(0, ctx.compute()));
    for (int i = 0; i < iters; ++i) LOOM_RETURN_IF_ERROR(run());
    LOOM_RETURN_IF_ERROR(ev.Record(1, ctx.compute()));
    LOOM_ASSIGN_OR_RETURN(const double s, ev.Seconds(0, 1));
    seconds.push_back(s / iters);
  }
  LOOM_RETURN_IF_ERROR(ctx.Synchronize());
  return 2.0 * n * static_cast<double>(n) * n / Median(seconds) / 1e12;
}

int GemmSide(const BenchOptions& o) { return o.quick ? 2048 : 8192; }

absl::StatusOr<nlohmann::json> RunGpuGemm(const BenchOptions& o) {
  LOOM_ASSIGN_OR_RETURN(std::unique_ptr<DeviceContext> ctx, DeviceContext::Create(0));
  const int bf16_n = GemmSide(o);
  const int fp32_n = o.quick ? 1024 : 4096;
  LOOM_ASSIGN_OR_RETURN(const double bf16,
                        MeasureGemmTflops(*ctx, Precision::kBf16, bf16_n, o.repeats, 10));
  LOOM_ASSIGN_OR_RETURN(const double fp32,
                        MeasureGemmTflops(*ctx, Precision::kFp32, fp32_n, o.repeats, 3));
  std::printf("gpu_gemm on %s: D = A B^T through cuBLASLt, median of %d repeats\n",
              ctx->device_name().c_str(), o.repeats);
  std::printf("  %-34s %6d^3 %9.1f TFLOP/s\n", "bf16 operands, fp32 accumulate, D bf16", bf16_n,
              bf16);
  std::printf("  %-34s %6d^3 %9.1f TFLOP/s\n", "fp32 pedantic (no TF32)", fp32_n, fp32);
  return nlohmann::json{{"gemm_bf16_tflops", bf16},
                        {"gemm_fp32_tflops", fp32},
                        {"gemm_bf16_n", bf16_n},
                        {"gemm_fp32_n", fp32_n},
                        {"device", ctx->device_name()}};
}

// ---------------------------------------------------------------------------------------------
// Attention

struct AttentionTiming {
  double fwd_s, bwd_s;  // medians
};

// Causal bf16 attention over one document of T tokens: forward, then delta + backward (the
// gradients zeroed before each repeat, outside the timed span).
absl::StatusOr<AttentionTiming> MeasureAttention(DeviceContext& ctx, int T,
                                                 const AttentionShape& shape, int repeats) {
  using bf16 = __nv_bfloat16;
  const size_t q_size = static_cast<size_t>(T) * shape.n_heads * shape.head_dim;
  const size_t kv_size = static_cast<size_t>(T) * shape.n_kv_heads * shape.head_dim;
  const size_t rows = static_cast<size_t>(T) * shape.n_heads;
  LOOM_ASSIGN_OR_RETURN(DeviceBuffer q, Upload(ctx, q_size, 21, DType::kBF16));
  LOOM_ASSIGN_OR_RETURN(DeviceBuffer k, Upload(ctx, kv_size, 22, DType::kBF16));
  LOOM_ASSIGN_OR_RETURN(DeviceBuffer v, Upload(ctx, kv_size, 23, DType::kBF16));
  LOOM_ASSIGN_OR_RETURN(DeviceBuffer dout, Upload(ctx, q_size, 24, DType::kF32));
  auto create = [&](DType t, size_t n) {
    return DeviceBuffer::Create(ctx.allocator(), t, n, ctx.compute());
  };
  LOOM_ASSIGN_OR_RETURN(DeviceBuffer out, create(DType::kBF16, q_size));
  LOOM_ASSIGN_OR_RETURN(DeviceBuffer lse, create(DType::kF32, rows));
  LOOM_ASSIGN_OR_RETURN(DeviceBuffer delta, create(DType::kF32, rows));
  LOOM_ASSIGN_OR_RETURN(DeviceBuffer dq, create(DType::kF32, q_size));
  LOOM_ASSIGN_OR_RETURN(DeviceBuffer dk, create(DType::kF32, kv_size));
  LOOM_ASSIGN_OR_RETURN(DeviceBuffer dv, create(DType::kF32, kv_size));
  std::vector<int32_t> doc(static_cast<size_t>(T), 0), pos(static_cast<size_t>(T));
  for (int t = 0; t < T; ++t) pos[static_cast<size_t>(t)] = t;
  LOOM_ASSIGN_OR_RETURN(DeviceBuffer doc_dev,
                        gpu::ToDeviceI32(ctx.allocator(), doc, ctx.compute()));
  LOOM_ASSIGN_OR_RETURN(DeviceBuffer pos_dev,
                        gpu::ToDeviceI32(ctx.allocator(), pos, ctx.compute()));
  const gpu::DeviceSpans spans{doc_dev.as<int32_t>(), pos_dev.as<int32_t>(), T};
  const cudaStream_t stream = ctx.compute();

  auto forward = [&]() -> absl::Status {
    return gpu::CudaStatus(gpu::FlashAttentionForward<bf16>(
                               out.as<bf16>(), lse.as<float>(), q.as<bf16>(), k.as<bf16>(),
                               v.as<bf16>(), spans, spans, shape, /*causal=*/true, stream),
                           "FlashAttentionForward");
  };
  auto backward = [&]() -> absl::Status {
    LOOM_RETURN_IF_ERROR(
        gpu::CudaStatus(gpu::FlashAttentionDelta<bf16>(delta.as<float>(), dout.as<float>(),
                                                       out.as<bf16>(), T, shape, stream),
                        "FlashAttentionDelta"));
    return gpu::CudaStatus(gpu::FlashAttentionBackward<bf16>(
                               dq.as<float>(), dk.as<float>(), dv.as<float>(), dout.as<float>(),
                               q.as<bf16>(), k.as<bf16>(), v.as<bf16>(), lse.as<float>(),
                               delta.as<float>(), spans, spans, shape, /*causal=*/true, stream),
                           "FlashAttentionBackward");
  };
  auto zero_grads = [&]() -> absl::Status {
    LOOM_RETURN_IF_ERROR(dq.Zero(stream));
    LOOM_RETURN_IF_ERROR(dk.Zero(stream));
    return dv.Zero(stream);
  };

  LOOM_RETURN_IF_ERROR(forward());  // warm-up
  LOOM_RETURN_IF_ERROR(zero_grads());
  LOOM_RETURN_IF_ERROR(backward());
  LOOM_RETURN_IF_ERROR(ctx.Synchronize());
  Events ev;
  LOOM_RETURN_IF_ERROR(ev.Create(3));
  std::vector<double> fwd_s, bwd_s;
  for (int r = 0; r < repeats; ++r) {
    LOOM_RETURN_IF_ERROR(zero_grads());
    LOOM_RETURN_IF_ERROR(ev.Record(0, stream));
    LOOM_RETURN_IF_ERROR(forward());
    LOOM_RETURN_IF_ERROR(ev.Record(1, stream));
    LOOM_RETURN_IF_ERROR(backward());
    LOOM_RETURN_IF_ERROR(ev.Record(2, stream));
    LOOM_ASSIGN_OR_RETURN(const double f, ev.Seconds(0, 1));
    LOOM_ASSIGN_OR_RETURN(const double b, ev.Seconds(1, 2));
    fwd_s.push_back(f);
    bwd_s.push_back(b);
  }
  // Kernel faults surface here rather than as a plausible-looking time.
  LOOM_RETURN_IF_ERROR(ctx.Synchronize());
  return AttentionTiming{Median(fwd_s), Median(bwd_s)};
}

absl::StatusOr<nlohmann::json> RunGpuAttention(const BenchOptions& o) {
  LOOM_ASSIGN_OR_RETURN(std::unique_ptr<DeviceContext> ctx, DeviceContext::Create(0));
  const AttentionShape shape{.n_heads = 16, .n_kv_heads = 16, .head_dim = 128};
  const int H = shape.n_heads, D = shape.head_dim;
  const int sizes[2] = {o.quick ? 1024 : 8192, o.quick ? 2048 : 32768};
  const int gemm_n = GemmSide(o);
  LOOM_ASSIGN_OR_RETURN(const double gemm,
                        MeasureGemmTflops(*ctx, Precision::kBf16, gemm_n, o.repeats, 10));
  std::printf(
      "gpu_attention on %s: bf16 q/k/v, causal, one document, %d heads (%d kv), "
      "head_dim %d, median of %d repeats\n",
      ctx->device_name().c_str(), H, shape.n_kv_heads, D, o.repeats);
  std::printf(
      "  FLOPs counted for the visible half of the scores: forward 4*T^2*D*H/2 (two "
      "matmuls), backward 2.5x forward (five matmuls)\n");
  std::printf("  bf16 GEMM yardstick (%d^3): %.1f TFLOP/s\n", gemm_n, gemm);
  std::printf("  %7s %9s %9s %9s %9s %9s %9s\n", "T", "fwd ms", "bwd ms", "fwd TF/s", "bwd TF/s",
              "TFLOP/s", "/ gemm");
  double tflops[2] = {0, 0};
  nlohmann::json detail = nlohmann::json::array();
  for (int i = 0; i < 2; ++i) {
    const int T = sizes[i];
    LOOM_ASSIGN_OR_RETURN(const AttentionTiming t, MeasureAttention(*ctx, T, shape, o.repeats));
    const double fwd_flops = 4.0 * static_cast<double>(T) * T * D * H / 2.0;
    const double bwd_flops = 2.5 * fwd_flops;
    tflops[i] = (fwd_flops + bwd_flops) / (t.fwd_s + t.bwd_s) / 1e12;
    std::printf("  %7d %9.3f %9.3f %9.1f %9.1f %9.1f %9.3f\n", T, t.fwd_s * 1e3, t.bwd_s * 1e3,
                fwd_flops / t.fwd_s / 1e12, bwd_flops / t.bwd_s / 1e12, tflops[i],
                tflops[i] / gemm);
    detail.push_back({{"T", T},
                      {"fwd_s", t.fwd_s},
                      {"bwd_s", t.bwd_s},
                      {"fwd_tflops", fwd_flops / t.fwd_s / 1e12},
                      {"bwd_tflops", bwd_flops / t.bwd_s / 1e12}});
  }
  return nlohmann::json{{"attention_8k_tflops", tflops[0]},
                        {"attention_32k_tflops", tflops[1]},
                        {"attention_8k_over_gemm", tflops[0] / gemm},
                        {"attention_32k_over_gemm", tflops[1] / gemm},
                        {"gemm_bf16_tflops", gemm},
                        {"sizes", detail},
                        {"quick", o.quick},
                        {"device", ctx->device_name()}};
}

// ---------------------------------------------------------------------------------------------
// Training step

// Dense bf16 tensor-core peak of the device named `name` (CudaDeviceName's "NAME (sm_XY, N GiB)"),
// from the vendors' data sheets; 0 with `why` set when the table has no figure for it.
double PeakBf16Flops(const std::string& name, std::string* why) {
  auto has = [&](const char* s) { return name.find(s) != std::string::npos; };
  // The NVL (PCIe card) parts run at lower clocks and power than the SXM figure.
  if (has("H200") && !has("NVL")) return 989e12;
  if (has("H100")) {
    if (has("PCIe")) return 756e12;
    if (has("SXM") || has("HBM3")) return 989e12;
  }
  if (has("A100")) return 312e12;
  *why = "no dense bf16 peak for '" + name + "' in the table (H200 SXM, H100 SXM/PCIe, A100)";
  return 0.0;
}

ModelConfig StepModelConfig(bool quick) {
  ModelConfig c;
  c.vocab_size = 32000;
  c.d_model = quick ? 512 : 2048;
  c.n_layers = quick ? 2 : 16;
  c.n_heads = quick ? 8 : 16;
  c.n_kv_heads = quick ? 4 : 8;
  c.ffn_dim = quick ? 1408 : 5632;
  c.tied_embeddings = false;
  return c;
}

// Parameters that take part in a matmul: every projection and the output head (the embedding is
// a lookup, the RMSNorm gains elementwise).
double MatmulParams(const ModelConfig& c) {
  const double C = c.d_model, Q = c.q_dim(), KV = c.kv_dim(), F = c.ffn_dim, V = c.vocab_size;
  return c.n_layers * (C * Q + 2 * C * KV + Q * C + 3 * C * F) + V * C;
}

// Small random weights (uniform, std ~0.012) and unit RMSNorm gains: activations stay in range
// for bf16, and the loss starts near log(vocab).
std::vector<float> InitialParams(const ParamLayout& layout) {
  std::vector<float> p = HostRandom(layout.total_numel(), 31, 0.02f);
  for (const ParamEntry& e : layout.entries()) {
    if (e.shape.size() == 1) std::fill(p.begin() + e.offset, p.begin() + e.offset + e.numel, 1.0f);
  }
  return p;
}

absl::StatusOr<nlohmann::json> RunGpuStep(const BenchOptions& o) {
  LOOM_ASSIGN_OR_RETURN(std::unique_ptr<DeviceContext> ctx, DeviceContext::Create(0));
  const ModelConfig config = StepModelConfig(o.quick);
  LOOM_RETURN_IF_ERROR(config.Validate());
  const std::vector<int> lengths(4, o.quick ? 512 : 2048);
  Random rng(2025);
  std::vector<std::vector<int32_t>> docs;
  int tokens = 0;
  for (int len : lengths) {
    std::vector<int32_t> d(static_cast<size_t>(len));
    for (int32_t& t : d) {
      t = static_cast<int32_t>(rng.NextU64() % static_cast<uint64_t>(config.vocab_size));
    }
    docs.push_back(std::move(d));
    tokens += len;
  }
  const TokenBatch batch = TokenBatch::FromDocuments(docs);
  const float scale = 1.0f / static_cast<float>(batch.num_targets());

  LOOM_ASSIGN_OR_RETURN(std::unique_ptr<gpu::GpuModel> model,
                        gpu::GpuModel::Create(config, Precision::kBf16, ctx.get()));
  const size_t params = model->num_params();
  {
    const std::vector<float> host = InitialParams(model->layout());
    LOOM_RETURN_IF_ERROR(model->LoadParams(host.data()));
  }

  double loss_sum = 0.0;
  auto step = [&]() -> absl::Status {
    LOOM_RETURN_IF_ERROR(model->ZeroGrads());
    LOOM_ASSIGN_OR_RETURN(loss_sum, model->ForwardBackward(batch, scale));
    LOOM_ASSIGN_OR_RETURN(const double grad_norm,
                          model->OptimizerStep(AdamWConfig{}, 1e-4f, /*max_grad_norm=*/1.0f));
    (void)grad_norm;
    return ctx->Synchronize();
  };
  // Warm-up: GEMM plans, the allocator's cache and the clocks.
  for (int i = 0; i < 2; ++i) LOOM_RETURN_IF_ERROR(step());
  model->ResetPeakMemory();
  std::vector<double> times;
  for (int r = 0; r < o.repeats; ++r) {
    absl::Status status;
    times.push_back(TimeSeconds([&] { status = step(); }));
    LOOM_RETURN_IF_ERROR(status);
  }
  const double step_s = Median(times);
  const double flops = TrainingStepFlops(config, lengths);
  const double achieved = flops / step_s;
  std::string why;
  const double peak = PeakBf16Flops(ctx->device_name(), &why);
  const double matmul_params = MatmulParams(config);

  std::printf("gpu_step on %s: bf16, d_model %d, %d layers, %d heads (%d kv), ffn %d, vocab %d\n",
              ctx->device_name().c_str(), config.d_model, config.n_layers, config.n_heads,
              config.n_kv_heads, config.ffn_dim, config.vocab_size);
  std::printf("  %-22s %14zu (%.3f B; %.0f in matmuls)\n", "parameters", params, params / 1e9,
              matmul_params);
  std::printf("  %-22s %14d (%zu documents of %d)\n", "tokens", tokens, lengths.size(), lengths[0]);
  std::printf(
      "  model FLOPs = 3 x forward, forward = 2 x matmul params x tokens + per layer "
      "4 x (causal pairs = sum L^2/2) x head_dim x heads = %.4g\n",
      flops);
  std::printf("  %-22s %14.4f s (median of %d: zero grads, forward+backward, AdamW)\n", "step time",
              step_s, o.repeats);
  std::printf("  %-22s %14.0f\n", "tokens/s", tokens / step_s);
  std::printf("  %-22s %14.1f\n", "model TFLOP/s", achieved / 1e12);
  if (peak > 0) {
    std::printf("  %-22s %14.3f (of %.0f TFLOP/s dense bf16)\n", "MFU", achieved / peak,
                peak / 1e12);
  } else {
    std::printf("  %-22s %14s (%s)\n", "MFU", "n/a", why.c_str());
  }
  std::printf("  %-22s %14.1f MiB\n", "GPU peak memory", model->peak_bytes() / 1048576.0);
  std::printf("  %-22s %14.4f\n", "mean loss (last step)",
              loss_sum / static_cast<double>(batch.num_targets()));
  nlohmann::json result{{"step_tokens_per_s", tokens / step_s},
                        {"step_s", step_s},
                        {"step_model_tflops", achieved / 1e12},
                        {"params", params},
                        {"matmul_params", matmul_params},
                        {"tokens", tokens},
                        {"model_flops", flops},
                        {"gpu_peak_bytes", model->peak_bytes()},
                        {"loss", loss_sum / static_cast<double>(batch.num_targets())},
                        {"device", ctx->device_name()}};
  if (peak > 0) {
    result["step_mfu"] = achieved / peak;
    result["peak_flops"] = peak;
  } else {
    result["step_mfu"] = nullptr;
    result["peak_flops"] = nullptr;
    result["mfu_note"] = why;
  }
  return result;
}

// The harness wants a JSON object either way: a failure (no device, out of memory, a kernel
// error) becomes {"error": ...}.
BenchFn Wrap(const char* name, absl::StatusOr<nlohmann::json> (*fn)(const BenchOptions&)) {
  return [name, fn](const BenchOptions& o) -> nlohmann::json {
    BenchOptions options = o;
    options.repeats = std::max(1, o.repeats);  // a median needs a sample
    absl::StatusOr<nlohmann::json> r = fn(options);
    if (!r.ok()) return ErrorJson(name, r.status());
    return *std::move(r);
  };
}

Registrar reg_gpu_gemm("gpu_gemm", Wrap("gpu_gemm", RunGpuGemm));
Registrar reg_gpu_attention("gpu_attention", Wrap("gpu_attention", RunGpuAttention));
Registrar reg_gpu_step("gpu_step", Wrap("gpu_step", RunGpuStep));

}  // namespace
}  // namespace loom::bench

#endif  // LOOM_HAVE_CUDA
