#include "src/kernels/embedding.h"

#include <omp.h>

#include <algorithm>
#include <cstring>

namespace loom {
namespace {

// Channel slices handed to threads start on 64-byte boundaries, so two threads never write the
// same cache line of a table row.
constexpr int kChannelAlign = 16;

}  // namespace

void EmbeddingForward(float* out, const int32_t* tokens, const float* table, int T, int C) {
  const size_t row_bytes = static_cast<size_t>(C) * sizeof(float);
#pragma omp parallel for schedule(static)
  for (int t = 0; t < T; ++t) {
    std::memcpy(out + static_cast<int64_t>(t) * C, table + static_cast<int64_t>(tokens[t]) * C,
                row_bytes);
  }
}

// A token may repeat, so splitting the rows over threads would race on dtable. Each thread owns a
// slice of the channels instead and walks every token in order, which is race-free and gives the
// same sum order (hence the same bits) whatever the thread count.
void EmbeddingBackward(float* dtable, const int32_t* tokens, const float* dout, int T, int C) {
#pragma omp parallel
  {
    const int n_threads = omp_get_num_threads();
    const int blocks = (C + kChannelAlign - 1) / kChannelAlign;
    const int per_thread = (blocks + n_threads - 1) / n_threads;
    const int thread = omp_get_thread_num();
    const int c0 = std::min(C, thread * per_thread * kChannelAlign);
    const int c1 = std::min(C, (thread + 1) * per_thread * kChannelAlign);
    for (int t = 0; t < T && c0 < c1; ++t) {
      float* dst = dtable + static_cast<int64_t>(tokens[t]) * C;
      const float* src = dout + static_cast<int64_t>(t) * C;
#pragma omp simd
      for (int c = c0; c < c1; ++c) dst[c] += src[c];
    }
  }
}

}  // namespace loom
