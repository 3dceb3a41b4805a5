// The CUDA path: built when LOOM_CUDA finds nvcc; its checks need a visible GPU and say so when
// there is none.
#include <gtest/gtest.h>

#ifdef LOOM_HAVE_CUDA
#include "src/cuda/cuda_device.h"
#endif

namespace loom {
namespace {

TEST(CudaDevice, ReportsVisibleDevices) {
#ifndef LOOM_HAVE_CUDA
  GTEST_SKIP() << "built with LOOM_CUDA=OFF: no CUDA path to check";
#else
  absl::StatusOr<int> count = CudaDeviceCount();
  ASSERT_TRUE(count.ok()) << count.status();
  if (*count == 0) GTEST_SKIP() << "no CUDA device visible on this machine";
  for (int d = 0; d < *count; ++d) {
    absl::StatusOr<std::string> name = CudaDeviceName(d);
    ASSERT_TRUE(name.ok()) << name.status();
    EXPECT_FALSE(name->empty());
  }
  EXPECT_FALSE(CudaDeviceName(*count).ok()) << "an out-of-range device must be an error";
#endif
}

}  // namespace
}  // namespace loom
