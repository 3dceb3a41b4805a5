// Shared by the GPU tests: a device context for the test, or a visible skip where this build or
// machine has no CUDA device; and the GPU path's tolerances (norm-wise relative error,
// test_util.h's RelativeError).
#ifndef LOOM_TESTS_SRC_CUDA_TEST_UTIL_H_
#define LOOM_TESTS_SRC_CUDA_TEST_UTIL_H_

#include <gtest/gtest.h>

#ifdef LOOM_HAVE_CUDA
#include <memory>

#include "src/cuda/cuda_device.h"
#include "src/cuda/device_context.h"
#endif

namespace loom::test {

// fp32 mode against the CPU kernels, and bf16 storage with fp32 accumulation (the bounds).
inline constexpr double kGpuFp32Tolerance = 1e-5;
inline constexpr double kGpuBf16Tolerance = 2e-2;

}  // namespace loom::test

// In a TEST body: `LOOM_GPU_CONTEXT_OR_SKIP(ctx);` declares std::unique_ptr<gpu::DeviceContext>
// ctx on device 0, or skips the test, saying why, where no CUDA device is visible. Without CUDA
// in the build the whole body must sit inside #ifdef LOOM_HAVE_CUDA, with
// LOOM_GPU_SKIP_WITHOUT_CUDA() in the #else branch.
#define LOOM_GPU_SKIP_WITHOUT_CUDA() \
  GTEST_SKIP() << "built without CUDA (LOOM_CUDA=OFF or no nvcc): no GPU path to check"

#ifdef LOOM_HAVE_CUDA
#define LOOM_GPU_CONTEXT_OR_SKIP(ctx)                                               \
  std::unique_ptr<::loom::gpu::DeviceContext> ctx;                                  \
  do {                                                                              \
    absl::StatusOr<int> loom_count_ = ::loom::CudaDeviceCount();                    \
    ASSERT_TRUE(loom_count_.ok()) << loom_count_.status();                          \
    if (*loom_count_ == 0) GTEST_SKIP() << "no CUDA device visible on this machine"; \
    auto loom_ctx_ = ::loom::gpu::DeviceContext::Create(0);                         \
    ASSERT_TRUE(loom_ctx_.ok()) << loom_ctx_.status();                              \
    ctx = std::move(*loom_ctx_);                                                    \
  } while (0)
#endif

#endif  // LOOM_TESTS_SRC_CUDA_TEST_UTIL_H_
