// attention: causal grouped-query attention forward + backward on one long document, as a fraction
// of the sgemm rate measured in the same run.
//
// FLOPs are counted for the visible half of the score matrix only (T * T / 2 pairs per head) and
// for the matrix products only: the forward does two (S = Q K^T, O = P V), the backward five
// (S = Q K^T recomputed, dV = P^T dO, dP = dO V^T, dQ = dS K, dK = dS^T Q), each 2 * head_dim
// FLOPs per pair. Work on the masked half of diagonal blocks, the exponentials and the other
// elementwise steps are not counted.
#include <algorithm>
#include <cstdio>
#include <random>
#include <vector>

#include "bench/bench.h"
#include "src/kernels/attention.h"

namespace loom::bench {
namespace {

std::vector<float> RandomValues(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> dist(-1.0f, 1.0f);
  std::vector<float> v(n);
  for (float& x : v) x = dist(rng);
  return v;
}

nlohmann::json AttentionBench(const BenchOptions& options) {
  const int T = options.quick ? 1024 : 4096;
  const AttentionShape shape{.n_heads = 8, .n_kv_heads = 8, .head_dim = 64};
  const int H = shape.n_heads;
  const int D = shape.head_dim;

  const PackedDocs docs = PackedDocsFromCuSeqlens({0, T});
  const TokenSpans spans = docs.spans();
  const size_t q_size = static_cast<size_t>(T) * H * D;
  const size_t kv_size = static_cast<size_t>(T) * shape.n_kv_heads * D;
  const std::vector<float> q = RandomValues(q_size, 1);
  const std::vector<float> k = RandomValues(kv_size, 2);
  const std::vector<float> v = RandomValues(kv_size, 3);
  const std::vector<float> dout = RandomValues(q_size, 4);
  std::vector<float> out(q_size), lse(static_cast<size_t>(T) * H), delta(lse.size());
  std::vector<float> dq(q_size), dk(kv_size), dv(kv_size);

  auto forward = [&] {
    AttentionForward(out.data(), lse.data(), q.data(), k.data(), v.data(), spans, spans, shape,
                     /*causal=*/true);
  };
  auto backward = [&] {
    AttentionBackwardDelta(delta.data(), dout.data(), out.data(), T, shape);
    AttentionBackward(dq.data(), dk.data(), dv.data(), dout.data(), q.data(), k.data(), v.data(),
                      lse.data(), delta.data(), spans, spans, shape, /*causal=*/true);
  };
  auto zero_grads = [&] {
    std::fill(dq.begin(), dq.end(), 0.0f);
    std::fill(dk.begin(), dk.end(), 0.0f);
    std::fill(dv.begin(), dv.end(), 0.0f);
  };
  forward();  // warm-up
  zero_grads();
  backward();

  // Other processes may share the machine: measuring the sgemm yardstick right before each
  // repeat, rather than once, lets each repeat's fraction compare rates taken under the same load.
  const double pair_flops = static_cast<double>(H) * T * T / 2.0 * 2.0 * D;  // one matmul
  const double fwd_flops = 2.0 * pair_flops;
  const double bwd_flops = 5.0 * pair_flops;
  const int sgemm_n = 1024;  // large enough for sgemm's full rate, short enough to repeat
  std::printf("attention: causal, T=%d, %d heads (%d kv), head_dim %d, %d threads\n", T, H,
              shape.n_kv_heads, D, options.threads);
  std::printf("  %-7s %9s %9s %9s %10s %10s %10s %9s\n", "repeat", "fwd s", "bwd s", "total s",
              "fwd GF/s", "bwd GF/s", "GFLOP/s", "sgemm");
  std::vector<double> sgemm_rates, fwd_s, bwd_s, total_s, fractions;
  for (int r = 0; r < options.repeats; ++r) {
    sgemm_rates.push_back(MeasureSgemmGflops(sgemm_n, 3));
    fwd_s.push_back(TimeSeconds(forward));
    zero_grads();
    bwd_s.push_back(TimeSeconds(backward));
    total_s.push_back(fwd_s.back() + bwd_s.back());
    const double rate = (fwd_flops + bwd_flops) / total_s.back() / 1e9;
    fractions.push_back(rate / sgemm_rates.back());
    std::printf("  %-7d %9.4f %9.4f %9.4f %10.1f %10.1f %10.1f %9.1f\n", r, fwd_s.back(),
                bwd_s.back(), total_s.back(), fwd_flops / fwd_s.back() / 1e9,
                bwd_flops / bwd_s.back() / 1e9, rate, sgemm_rates.back());
  }
  const double sgemm_gflops = Median(sgemm_rates);
  const double fwd = Median(fwd_s);
  const double bwd = Median(bwd_s);
  const double total = Median(total_s);
  const double gflops = (fwd_flops + bwd_flops) / total / 1e9;
  const double fraction = Median(fractions);
  std::printf("  %-7s %9.4f %9.4f %9.4f %10.1f %10.1f %10.1f %9.1f\n", "median", fwd, bwd, total,
              fwd_flops / fwd / 1e9, bwd_flops / bwd / 1e9, gflops, sgemm_gflops);
  // Under load the medians move with it; the fastest repeat of each is the least disturbed
  // estimate of both rates, so their ratio is reported beside the median.
  const double best_total = *std::min_element(total_s.begin(), total_s.end());
  const double best_gflops = (fwd_flops + bwd_flops) / best_total / 1e9;
  const double best_sgemm = *std::max_element(sgemm_rates.begin(), sgemm_rates.end());
  std::printf("  %-7s %29.4f %32.1f %9.1f\n", "best", best_total, best_gflops, best_sgemm);
  std::printf("  attention / sgemm: median over repeats %.3f, best over best %.3f\n", fraction,
              best_gflops / best_sgemm);
  return {{"gflops", gflops},
          {"gemm_fraction", fraction},
          {"sgemm_gflops", sgemm_gflops},
          {"fwd_s", fwd},
          {"bwd_s", bwd},
          {"total_s", total},
          {"fwd_gflops", fwd_flops / fwd / 1e9},
          {"bwd_gflops", bwd_flops / bwd / 1e9},
          {"T", T},
          {"head_dim", D},
          {"n_heads", H},
          {"n_kv_heads", shape.n_kv_heads},
          {"best_gflops", best_gflops},
          {"best_sgemm_gflops", best_sgemm},
          {"best_gemm_fraction", best_gflops / best_sgemm}};
}

Registrar reg("attention", AttentionBench);

}  // namespace
}  // namespace loom::bench
