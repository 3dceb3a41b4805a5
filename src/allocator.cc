#include "src/allocator.h"

#include <cstdlib>
#include <cstring>
#include <new>

namespace loom {

Allocator& Allocator::Global() {
  static Allocator* global = new Allocator();
  return *global;
}

void* Allocator::Allocate(size_t bytes) {
  if (bytes == 0) return nullptr;
  constexpr size_t kAlign = 64;
  const size_t rounded = (bytes + kAlign - 1) / kAlign * kAlign;
  void* ptr = std::aligned_alloc(kAlign, rounded);
  if (ptr == nullptr) throw std::bad_alloc();
  std::memset(ptr, 0, bytes);
  const size_t now = current_.fetch_add(bytes, std::memory_order_relaxed) + bytes;
  size_t peak = peak_.load(std::memory_order_relaxed);
  while (now > peak && !peak_.compare_exchange_weak(peak, now, std::memory_order_relaxed)) {
  }
  return ptr;
}

void Allocator::Free(void* ptr, size_t bytes) {
  if (ptr == nullptr) return;
  std::free(ptr);
  current_.fetch_sub(bytes, std::memory_order_relaxed);
}

}  // namespace loom
