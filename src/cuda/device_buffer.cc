#include "src/cuda/device_buffer.h"

#include <cuda_bf16.h>

#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_format.h"
#include "src/cuda/cuda_check.h"
#include "src/status_macros.h"

namespace loom::gpu {

size_t DTypeBytes(DType dtype) {
  switch (dtype) {
    case DType::kF32:
    case DType::kI32:
      return 4;
    case DType::kBF16:
      return 2;
    case DType::kF64:
      return 8;
  }
  return 0;
}

const char* DTypeName(DType dtype) {
  switch (dtype) {
    case DType::kF32:
      return "f32";
    case DType::kBF16:
      return "bf16";
    case DType::kI32:
      return "i32";
    case DType::kF64:
      return "f64";
  }
  return "?";
}

absl::StatusOr<DeviceBuffer> DeviceBuffer::Create(DeviceAllocator* allocator, DType dtype,
                                                  size_t numel, cudaStream_t stream) {
  DeviceBuffer b;
  b.allocator_ = allocator;
  b.dtype_ = dtype;
  LOOM_ASSIGN_OR_RETURN(b.data_, allocator->Allocate(numel * DTypeBytes(dtype)));
  b.numel_ = numel;
  LOOM_RETURN_IF_ERROR(b.Zero(stream));
  return b;
}

DeviceBuffer::~DeviceBuffer() { Release(); }

DeviceBuffer::DeviceBuffer(DeviceBuffer&& other) noexcept
    : allocator_(std::exchange(other.allocator_, nullptr)),
      data_(std::exchange(other.data_, nullptr)),
      dtype_(other.dtype_),
      numel_(std::exchange(other.numel_, 0)) {}

DeviceBuffer& DeviceBuffer::operator=(DeviceBuffer&& other) noexcept {
  if (this != &other) {
    Release();
    allocator_ = std::exchange(other.allocator_, nullptr);
    data_ = std::exchange(other.data_, nullptr);
    dtype_ = other.dtype_;
    numel_ = std::exchange(other.numel_, 0);
  }
  return *this;
}

void DeviceBuffer::Release() {
  if (allocator_ != nullptr && data_ != nullptr) allocator_->Free(data_);
  data_ = nullptr;
  numel_ = 0;
}

absl::Status DeviceBuffer::Zero(cudaStream_t stream) {
  if (bytes() == 0) return absl::OkStatus();
  LOOM_CUDA_RETURN_IF_ERROR(cudaMemsetAsync(data_, 0, bytes(), stream));
  return absl::OkStatus();
}

absl::Status DeviceBuffer::CopyFromHost(const float* host, size_t n, cudaStream_t stream) {
  if (n > numel_) {
    return absl::InvalidArgumentError(
        absl::StrFormat("copy of %d elements into a device buffer of %d", n, numel_));
  }
  if (dtype_ == DType::kF32) {
    LOOM_CUDA_RETURN_IF_ERROR(
        cudaMemcpyAsync(data_, host, n * sizeof(float), cudaMemcpyHostToDevice, stream));
  } else if (dtype_ == DType::kBF16) {
    std::vector<__nv_bfloat16> staged(n);
    for (size_t i = 0; i < n; ++i) staged[i] = __float2bfloat16(host[i]);
    LOOM_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(data_, staged.data(), n * sizeof(__nv_bfloat16),
                                              cudaMemcpyHostToDevice, stream));
  } else {
    return absl::InvalidArgumentError(
        absl::StrFormat("float copy into a %s device buffer", DTypeName(dtype_)));
  }
  // The host array (and the staged bf16 copy) must live until the copy is done.
  LOOM_CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(stream));
  return absl::OkStatus();
}

absl::Status DeviceBuffer::CopyToHost(float* host, size_t n, cudaStream_t stream) const {
  if (n > numel_) {
    return absl::InvalidArgumentError(
        absl::StrFormat("copy of %d elements out of a device buffer of %d", n, numel_));
  }
  if (dtype_ == DType::kF32) {
    LOOM_CUDA_RETURN_IF_ERROR(
        cudaMemcpyAsync(host, data_, n * sizeof(float), cudaMemcpyDeviceToHost, stream));
    LOOM_CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(stream));
  } else if (dtype_ == DType::kBF16) {
    std::vector<__nv_bfloat16> staged(n);
    LOOM_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(staged.data(), data_, n * sizeof(__nv_bfloat16),
                                              cudaMemcpyDeviceToHost, stream));
    LOOM_CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(stream));
    for (size_t i = 0; i < n; ++i) host[i] = __bfloat162float(staged[i]);
  } else {
    return absl::InvalidArgumentError(
        absl::StrFormat("float copy out of a %s device buffer", DTypeName(dtype_)));
  }
  return absl::OkStatus();
}

absl::Status DeviceBuffer::CopyFromHostI32(const int32_t* host, size_t n, cudaStream_t stream) {
  if (dtype_ != DType::kI32 || n > numel_) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "int32 copy of %d elements into a %s device buffer of %d", n, DTypeName(dtype_), numel_));
  }
  LOOM_CUDA_RETURN_IF_ERROR(
      cudaMemcpyAsync(data_, host, n * sizeof(int32_t), cudaMemcpyHostToDevice, stream));
  LOOM_CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(stream));
  return absl::OkStatus();
}

absl::StatusOr<DeviceBuffer> ToDevice(DeviceAllocator* allocator, const std::vector<float>& host,
                                      DType dtype, cudaStream_t stream) {
  LOOM_ASSIGN_OR_RETURN(DeviceBuffer b, DeviceBuffer::Create(allocator, dtype, host.size(), stream));
  LOOM_RETURN_IF_ERROR(b.CopyFromHost(host.data(), host.size(), stream));
  return b;
}

absl::StatusOr<DeviceBuffer> ToDeviceI32(DeviceAllocator* allocator,
                                         const std::vector<int32_t>& host, cudaStream_t stream) {
  LOOM_ASSIGN_OR_RETURN(DeviceBuffer b,
                        DeviceBuffer::Create(allocator, DType::kI32, host.size(), stream));
  LOOM_RETURN_IF_ERROR(b.CopyFromHostI32(host.data(), host.size(), stream));
  return b;
}

absl::StatusOr<std::vector<float>> ToHost(const DeviceBuffer& buffer, cudaStream_t stream) {
  std::vector<float> host(buffer.numel());
  LOOM_RETURN_IF_ERROR(buffer.CopyToHost(host.data(), host.size(), stream));
  return host;
}

}  // namespace loom::gpu
