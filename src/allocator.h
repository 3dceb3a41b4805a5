// Byte accounting for numeric buffers. Every Buffer draws from an Allocator, which tracks the
// bytes currently held and the peak since the last reset; the trainer and the planners report
// activation memory from these figures.
//
// Freed blocks are kept for reuse rather than returned to the system: a training step allocates
// the same large activation buffers every step, and fresh memory from the system costs a page
// fault per 4 KiB on first touch (several percent of a step). Cached blocks do not count as
// held; ReleaseCached() gives them back.
#ifndef LOOM_SRC_ALLOCATOR_H_
#define LOOM_SRC_ALLOCATOR_H_

#include <atomic>
#include <cstddef>
#include <map>
#include <mutex>
#include <unordered_map>

namespace loom {

class Allocator {
 public:
  Allocator() = default;
  ~Allocator();
  Allocator(const Allocator&) = delete;
  Allocator& operator=(const Allocator&) = delete;

  // The process-wide allocator, used when a Buffer is not given one.
  static Allocator& Global();

  // Returns 64-byte aligned, zero-filled memory of `bytes` bytes (nullptr for 0 bytes).
  void* Allocate(size_t bytes);
  void Free(void* ptr, size_t bytes);

  size_t current_bytes() const { return current_.load(std::memory_order_relaxed); }
  size_t peak_bytes() const { return peak_.load(std::memory_order_relaxed); }
  // Starts a new peak measurement from the bytes held now.
  void ResetPeak() { peak_.store(current_bytes(), std::memory_order_relaxed); }
  // Bytes of freed blocks kept for reuse.
  size_t cached_bytes() const;
  void ReleaseCached();

 private:
  std::atomic<size_t> current_{0};
  std::atomic<size_t> peak_{0};
  mutable std::mutex mu_;
  std::multimap<size_t, void*> cache_;         // capacity -> free block
  std::unordered_map<void*, size_t> capacity_;  // live block -> its capacity
  size_t cached_ = 0;
};

}  // namespace loom

#endif  // LOOM_SRC_ALLOCATOR_H_
