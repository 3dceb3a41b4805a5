#include "src/kernels/rmsnorm.h"

#include <omp.h>

#include <cmath>
#include <cstdint>
#include <vector>

namespace loom {

void RmsNormForward(float* out, float* rstd, const float* inp, const float* weight, int T, int C,
                    float eps) {
#pragma omp parallel for schedule(static)
  for (int t = 0; t < T; ++t) {
    const float* x = inp + static_cast<int64_t>(t) * C;
    float* y = out + static_cast<int64_t>(t) * C;
    float sum_sq = 0.0f;
#pragma omp simd reduction(+ : sum_sq)
    for (int c = 0; c < C; ++c) sum_sq += x[c] * x[c];
    const float r = 1.0f / std::sqrt(sum_sq / static_cast<float>(C) + eps);
#pragma omp simd
    for (int c = 0; c < C; ++c) y[c] = x[c] * r * weight[c];
    rstd[t] = r;
  }
}

// With y = x * r * w and r = (mean(x^2) + eps)^(-1/2):
//   dx_c = r * w_c * dy_c - x_c * r^3 / C * sum_k(dy_k * w_k * x_k)
//   dw_c = sum_t dy_tc * x_tc * r_t
// dweight sums over rows, so each thread keeps its own partial row and the partials are added in
// thread order afterwards: no atomics, and the same bits on every run with the same thread count.
void RmsNormBackward(float* dinp, float* dweight, const float* dout, const float* inp,
                     const float* weight, const float* rstd, int T, int C) {
  const int max_threads = omp_get_max_threads();
  std::vector<float> partial(static_cast<size_t>(max_threads) * C, 0.0f);
  int n_threads = 1;
#pragma omp parallel
  {
#pragma omp single
    n_threads = omp_get_num_threads();
    float* dw = partial.data() + static_cast<int64_t>(omp_get_thread_num()) * C;
#pragma omp for schedule(static)
    for (int t = 0; t < T; ++t) {
      const float* x = inp + static_cast<int64_t>(t) * C;
      const float* dy = dout + static_cast<int64_t>(t) * C;
      float* dx = dinp + static_cast<int64_t>(t) * C;
      const float r = rstd[t];
      float dot = 0.0f;
#pragma omp simd reduction(+ : dot)
      for (int c = 0; c < C; ++c) dot += dy[c] * weight[c] * x[c];
      const float coeff = dot * r * r * r / static_cast<float>(C);
#pragma omp simd
      for (int c = 0; c < C; ++c) {
        dx[c] += r * weight[c] * dy[c] - coeff * x[c];
        dw[c] += dy[c] * x[c] * r;
      }
    }
#pragma omp for schedule(static)
    for (int c = 0; c < C; ++c) {
      float sum = 0.0f;
      for (int i = 0; i < n_threads; ++i) sum += partial[static_cast<int64_t>(i) * C + c];
      dweight[c] += sum;
    }
  }
}

}  // namespace loom
