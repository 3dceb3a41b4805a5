// What the CUDA runtime sees: used by GPU tests to skip visibly on machines without a GPU.
#ifndef LOOM_SRC_CUDA_CUDA_DEVICE_H_
#define LOOM_SRC_CUDA_CUDA_DEVICE_H_

#include <string>

#include "absl/status/statusor.h"

namespace loom {

// Number of visible CUDA devices; 0 where the driver reports none (not an error).
absl::StatusOr<int> CudaDeviceCount();
// "NAME (sm_XY, N GiB)" of a device.
absl::StatusOr<std::string> CudaDeviceName(int device);

}  // namespace loom

#endif  // LOOM_SRC_CUDA_CUDA_DEVICE_H_
