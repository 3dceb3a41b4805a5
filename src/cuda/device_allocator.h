// A caching allocator for GPU memory with the same accounting as the host Allocator: bytes held
// now, the peak since the last reset, and freed blocks kept for reuse (cudaMalloc and cudaFree
// synchronize the device, so a training step must not call them every time it needs a buffer).
//
// Requests are rounded up to a size class (512 B below 1 MiB, 2 MiB above) and a freed block is
// reused for any later request of the same class. Blocks are not split. Reuse is safe across
// streams only because loom's GPU code orders its streams with events before a buffer is freed;
// the allocator itself does not track streams.
#ifndef LOOM_SRC_CUDA_DEVICE_ALLOCATOR_H_
#define LOOM_SRC_CUDA_DEVICE_ALLOCATOR_H_

#include <cstddef>
#include <map>
#include <mutex>
#include <unordered_map>

#include "absl/status/statusor.h"

namespace loom::gpu {

class DeviceAllocator {
 public:
  // Memory on `device` (the caller makes that device current before calling Allocate).
  explicit DeviceAllocator(int device) : device_(device) {}
  ~DeviceAllocator();
  DeviceAllocator(const DeviceAllocator&) = delete;
  DeviceAllocator& operator=(const DeviceAllocator&) = delete;

  // Uninitialized device memory of at least `bytes` bytes (nullptr for 0). RESOURCE_EXHAUSTED,
  // naming the request, the bytes held and the device, when the device has no room even after
  // the cache is released.
  absl::StatusOr<void*> Allocate(size_t bytes);
  // Returns a block to the cache. `ptr` must come from Allocate (nullptr is ignored).
  void Free(void* ptr);

  int device() const { return device_; }
  size_t current_bytes() const;
  size_t peak_bytes() const;
  void ResetPeak();
  size_t cached_bytes() const;
  // Gives every cached block back to the driver.
  void ReleaseCached();

  // The size class a request of `bytes` is rounded up to.
  static size_t RoundUp(size_t bytes);

 private:
  void ReleaseCachedLocked();

  const int device_;
  mutable std::mutex mu_;
  size_t current_ = 0;
  size_t peak_ = 0;
  size_t cached_ = 0;
  std::multimap<size_t, void*> cache_;       // size class -> free block
  std::unordered_map<void*, size_t> live_;  // block in use -> its size class
};

}  // namespace loom::gpu

#endif  // LOOM_SRC_CUDA_DEVICE_ALLOCATOR_H_
