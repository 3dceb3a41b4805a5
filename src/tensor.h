// fp32 tensors: a Buffer owns contiguous memory drawn from an Allocator; a Tensor is a shaped,
// non-owning view into a Buffer (or any float memory). Parameters and gradients are each one
// Buffer carved into named Tensor views, so gradient sync is a single flat buffer.
#ifndef LOOM_SRC_TENSOR_H_
#define LOOM_SRC_TENSOR_H_

#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <string>
#include <vector>

#include "src/allocator.h"

namespace loom {

class Buffer {
 public:
  Buffer() = default;
  explicit Buffer(size_t numel, Allocator* allocator = &Allocator::Global());
  ~Buffer();
  Buffer(Buffer&& other) noexcept;
  Buffer& operator=(Buffer&& other) noexcept;
  Buffer(const Buffer&) = delete;
  Buffer& operator=(const Buffer&) = delete;

  float* data() { return data_; }
  const float* data() const { return data_; }
  size_t numel() const { return numel_; }
  size_t bytes() const { return numel_ * sizeof(float); }
  void Zero();

 private:
  void Release();
  float* data_ = nullptr;
  size_t numel_ = 0;
  Allocator* allocator_ = nullptr;
};

class Tensor {
 public:
  Tensor() = default;
  Tensor(float* data, std::vector<int64_t> shape);

  float* data() const { return data_; }
  const std::vector<int64_t>& shape() const { return shape_; }
  int64_t dim(int i) const { return shape_[static_cast<size_t>(i)]; }
  int rank() const { return static_cast<int>(shape_.size()); }
  int64_t numel() const;
  size_t bytes() const { return static_cast<size_t>(numel()) * sizeof(float); }
  // A view of the same memory with another shape of equal element count.
  Tensor Reshape(std::vector<int64_t> shape) const;
  // Rows [begin, end) of the leading dimension.
  Tensor Slice(int64_t begin, int64_t end) const;
  std::string ShapeString() const;

 private:
  float* data_ = nullptr;
  std::vector<int64_t> shape_;
};

int64_t NumElements(const std::vector<int64_t>& shape);

}  // namespace loom

#endif  // LOOM_SRC_TENSOR_H_
