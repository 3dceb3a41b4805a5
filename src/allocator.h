// Byte accounting for numeric buffers. Every Buffer draws from an Allocator, which tracks the
// bytes currently held and the peak since the last reset; the trainer and the planners report
// activation memory from these figures.
#ifndef LOOM_SRC_ALLOCATOR_H_
#define LOOM_SRC_ALLOCATOR_H_

#include <atomic>
#include <cstddef>

namespace loom {

class Allocator {
 public:
  Allocator() = default;
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

 private:
  std::atomic<size_t> current_{0};
  std::atomic<size_t> peak_{0};
};

}  // namespace loom

#endif  // LOOM_SRC_ALLOCATOR_H_
