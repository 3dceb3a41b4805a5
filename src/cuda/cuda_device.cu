#include "src/cuda/cuda_device.h"

#include <cuda_runtime.h>

#include "absl/status/status.h"
#include "absl/strings/str_format.h"

namespace loom {

absl::StatusOr<int> CudaDeviceCount() {
  int count = 0;
  const cudaError_t err = cudaGetDeviceCount(&count);
  // No driver or no device simply means "none here".
  if (err == cudaErrorNoDevice || err == cudaErrorInsufficientDriver) return 0;
  if (err != cudaSuccess) {
    return absl::UnavailableError(
        absl::StrFormat("cudaGetDeviceCount: %s", cudaGetErrorString(err)));
  }
  return count;
}

absl::StatusOr<std::string> CudaDeviceName(int device) {
  cudaDeviceProp prop;
  const cudaError_t err = cudaGetDeviceProperties(&prop, device);
  if (err != cudaSuccess) {
    return absl::InvalidArgumentError(absl::StrFormat("cudaGetDeviceProperties(%d): %s", device,
                                                      cudaGetErrorString(err)));
  }
  return absl::StrFormat("%s (sm_%d%d, %.0f GiB)", prop.name, prop.major, prop.minor,
                         static_cast<double>(prop.totalGlobalMem) / (1ull << 30));
}

}  // namespace loom
