#include "src/tensor.h"

#include <cassert>
#include <cstring>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace loom {

int64_t NumElements(const std::vector<int64_t>& shape) {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

Buffer::Buffer(size_t numel, Allocator* allocator) : numel_(numel), allocator_(allocator) {
  data_ = static_cast<float*>(allocator_->Allocate(numel * sizeof(float)));
}

Buffer::~Buffer() { Release(); }

Buffer::Buffer(Buffer&& other) noexcept
    : data_(std::exchange(other.data_, nullptr)),
      numel_(std::exchange(other.numel_, 0)),
      allocator_(std::exchange(other.allocator_, nullptr)) {}

Buffer& Buffer::operator=(Buffer&& other) noexcept {
  if (this != &other) {
    Release();
    data_ = std::exchange(other.data_, nullptr);
    numel_ = std::exchange(other.numel_, 0);
    allocator_ = std::exchange(other.allocator_, nullptr);
  }
  return *this;
}

void Buffer::Release() {
  if (allocator_ != nullptr) allocator_->Free(data_, numel_ * sizeof(float));
  data_ = nullptr;
  numel_ = 0;
}

void Buffer::Zero() {
  if (numel_ > 0) std::memset(data_, 0, bytes());
}

Tensor::Tensor(float* data, std::vector<int64_t> shape) : data_(data), shape_(std::move(shape)) {}

int64_t Tensor::numel() const { return NumElements(shape_); }

Tensor Tensor::Reshape(std::vector<int64_t> shape) const {
  assert(NumElements(shape) == numel());
  return Tensor(data_, std::move(shape));
}

Tensor Tensor::Slice(int64_t begin, int64_t end) const {
  assert(rank() >= 1 && 0 <= begin && begin <= end && end <= shape_[0]);
  std::vector<int64_t> shape = shape_;
  shape[0] = end - begin;
  const int64_t row = shape_[0] == 0 ? 0 : numel() / shape_[0];
  return Tensor(data_ + begin * row, std::move(shape));
}

std::string Tensor::ShapeString() const { return absl::StrCat("[", absl::StrJoin(shape_, ", "), "]"); }

}  // namespace loom
