#include "src/allocator.h"

#include <cstdlib>
#include <cstring>
#include <new>

namespace loom {

Allocator& Allocator::Global() {
  static Allocator* global = new Allocator();
  return *global;
}

Allocator::~Allocator() { ReleaseCached(); }

void* Allocator::Allocate(size_t bytes) {
  if (bytes == 0) return nullptr;
  constexpr size_t kAlign = 64;
  const size_t rounded = (bytes + kAlign - 1) / kAlign * kAlign;
  void* ptr = nullptr;
  size_t capacity = rounded;
  {
    std::lock_guard<std::mutex> lock(mu_);
    // The smallest cached block that fits, unless it would waste more than half of itself.
    auto it = cache_.lower_bound(rounded);
    if (it != cache_.end() && it->first / 2 <= rounded) {
      capacity = it->first;
      ptr = it->second;
      cached_ -= capacity;
      cache_.erase(it);
    }
  }
  if (ptr == nullptr) {
    ptr = std::aligned_alloc(kAlign, rounded);
    if (ptr == nullptr) throw std::bad_alloc();
  }
  {
    std::lock_guard<std::mutex> lock(mu_);
    capacity_[ptr] = capacity;
  }
  std::memset(ptr, 0, bytes);
  const size_t now = current_.fetch_add(bytes, std::memory_order_relaxed) + bytes;
  size_t peak = peak_.load(std::memory_order_relaxed);
  while (now > peak && !peak_.compare_exchange_weak(peak, now, std::memory_order_relaxed)) {
  }
  return ptr;
}

void Allocator::Free(void* ptr, size_t bytes) {
  if (ptr == nullptr) return;
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = capacity_.find(ptr);
    cache_.emplace(it->second, ptr);
    cached_ += it->second;
    capacity_.erase(it);
  }
  current_.fetch_sub(bytes, std::memory_order_relaxed);
}

size_t Allocator::cached_bytes() const {
  std::lock_guard<std::mutex> lock(mu_);
  return cached_;
}

void Allocator::ReleaseCached() {
  std::lock_guard<std::mutex> lock(mu_);
  for (auto& [capacity, ptr] : cache_) std::free(ptr);
  cache_.clear();
  cached_ = 0;
}

}  // namespace loom
