// Typed device memory owned by a DeviceAllocator, and copies between host and device. Storage is
// fp32 or bf16; the host side is always fp32 (bf16 is converted on the way), so tests and the
// trainer exchange plain float arrays with the GPU path.
#ifndef LOOM_SRC_CUDA_DEVICE_BUFFER_H_
#define LOOM_SRC_CUDA_DEVICE_BUFFER_H_

#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"
#include "src/cuda/device_allocator.h"

namespace loom::gpu {

enum class DType { kF32, kBF16, kI32, kF64 };
size_t DTypeBytes(DType dtype);
const char* DTypeName(DType dtype);

class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  // `numel` elements of `dtype`, zero-filled on `stream`.
  static absl::StatusOr<DeviceBuffer> Create(DeviceAllocator* allocator, DType dtype, size_t numel,
                                             cudaStream_t stream);
  ~DeviceBuffer();
  DeviceBuffer(DeviceBuffer&& other) noexcept;
  DeviceBuffer& operator=(DeviceBuffer&& other) noexcept;
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;

  void* data() const { return data_; }
  template <typename T>
  T* as() const { return static_cast<T*>(data_); }
  DType dtype() const { return dtype_; }
  size_t numel() const { return numel_; }
  size_t bytes() const { return numel_ * DTypeBytes(dtype_); }

  // Host fp32 <-> device (converted to or from bf16 when the buffer is bf16); `n` elements from
  // element 0. Synchronous with respect to the host: they return when the copy is done.
  absl::Status CopyFromHost(const float* host, size_t n, cudaStream_t stream);
  absl::Status CopyToHost(float* host, size_t n, cudaStream_t stream) const;
  // int32 buffers (token ids, targets, document ids, positions).
  absl::Status CopyFromHostI32(const int32_t* host, size_t n, cudaStream_t stream);
  absl::Status Zero(cudaStream_t stream);

 private:
  void Release();
  DeviceAllocator* allocator_ = nullptr;
  void* data_ = nullptr;
  DType dtype_ = DType::kF32;
  size_t numel_ = 0;
};

// Convenience for tests: a device buffer holding `host` (fp32 values, stored as `dtype`), and the
// fp32 contents of a device buffer.
absl::StatusOr<DeviceBuffer> ToDevice(DeviceAllocator* allocator, const std::vector<float>& host,
                                      DType dtype, cudaStream_t stream);
absl::StatusOr<DeviceBuffer> ToDeviceI32(DeviceAllocator* allocator,
                                         const std::vector<int32_t>& host, cudaStream_t stream);
absl::StatusOr<std::vector<float>> ToHost(const DeviceBuffer& buffer, cudaStream_t stream);

}  // namespace loom::gpu

#endif  // LOOM_SRC_CUDA_DEVICE_BUFFER_H_
