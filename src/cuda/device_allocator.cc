#include "src/cuda/device_allocator.h"

#include <cuda_runtime_api.h>

#include <algorithm>

#include "absl/status/status.h"
#include "absl/strings/str_format.h"
#include "src/cuda/cuda_check.h"

namespace loom::gpu {
namespace {

constexpr size_t kSmallClass = 512;
constexpr size_t kLargeClass = size_t{2} << 20;
constexpr size_t kSmallLimit = size_t{1} << 20;

}  // namespace

size_t DeviceAllocator::RoundUp(size_t bytes) {
  const size_t unit = bytes < kSmallLimit ? kSmallClass : kLargeClass;
  return (bytes + unit - 1) / unit * unit;
}

DeviceAllocator::~DeviceAllocator() {
  std::lock_guard<std::mutex> lock(mu_);
  ReleaseCachedLocked();
  // Blocks still live at destruction belong to buffers that outlive their allocator, a bug in the
  // caller; their memory goes back with the process.
}

absl::StatusOr<void*> DeviceAllocator::Allocate(size_t bytes) {
  if (bytes == 0) return nullptr;
  const size_t size = RoundUp(bytes);
  std::lock_guard<std::mutex> lock(mu_);
  void* ptr = nullptr;
  if (auto it = cache_.find(size); it != cache_.end()) {
    ptr = it->second;
    cache_.erase(it);
    cached_ -= size;
  } else {
    cudaError_t err = cudaMalloc(&ptr, size);
    if (err == cudaErrorMemoryAllocation) {
      // Give the cache back and try once more before reporting.
      (void)cudaGetLastError();
      ReleaseCachedLocked();
      err = cudaMalloc(&ptr, size);
    }
    if (err != cudaSuccess) {
      (void)cudaGetLastError();
      return CudaStatus(err, absl::StrFormat("cudaMalloc of %d bytes on device %d (%d held)",
                                             size, device_, current_));
    }
  }
  live_[ptr] = size;
  current_ += size;
  peak_ = std::max(peak_, current_);
  return ptr;
}

void DeviceAllocator::Free(void* ptr) {
  if (ptr == nullptr) return;
  std::lock_guard<std::mutex> lock(mu_);
  auto it = live_.find(ptr);
  if (it == live_.end()) return;  // not ours: ignoring it is safer than freeing it
  const size_t size = it->second;
  live_.erase(it);
  current_ -= size;
  cache_.emplace(size, ptr);
  cached_ += size;
}

size_t DeviceAllocator::current_bytes() const {
  std::lock_guard<std::mutex> lock(mu_);
  return current_;
}

size_t DeviceAllocator::peak_bytes() const {
  std::lock_guard<std::mutex> lock(mu_);
  return peak_;
}

void DeviceAllocator::ResetPeak() {
  std::lock_guard<std::mutex> lock(mu_);
  peak_ = current_;
}

size_t DeviceAllocator::cached_bytes() const {
  std::lock_guard<std::mutex> lock(mu_);
  return cached_;
}

void DeviceAllocator::ReleaseCached() {
  std::lock_guard<std::mutex> lock(mu_);
  ReleaseCachedLocked();
}

void DeviceAllocator::ReleaseCachedLocked() {
  for (auto& [size, ptr] : cache_) (void)cudaFree(ptr);
  cache_.clear();
  cached_ = 0;
}

}  // namespace loom::gpu
