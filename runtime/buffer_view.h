// Non-owning, type-erased views of the memory a message or collective reads and writes: a pointer,
// an element count and an element type. Views build implicitly from any contiguous range of a
// supported element type (std::vector<float>, std::span<BFloat16>, ...).
#ifndef LOOM_RUNTIME_BUFFER_VIEW_H_
#define LOOM_RUNTIME_BUFFER_VIEW_H_

#include <cstddef>
#include <ranges>
#include <type_traits>

#include "runtime/dtype.h"

namespace loom {

template <typename T>
concept CommElement = requires {
  DataTypeOf<std::remove_cv_t<T>>::value;
};

// Contiguous ranges of a supported element type, and those whose elements can be written.
template <typename R>
concept ElementRange = std::ranges::contiguous_range<R> && std::ranges::sized_range<R> &&
    CommElement<std::ranges::range_value_t<R>>;
template <typename R>
concept WritableElementRange =
    ElementRange<R> && !std::is_const_v<std::remove_reference_t<std::ranges::range_reference_t<R>>>;

class BufferView {
 public:
  BufferView() = default;
  BufferView(void* data, size_t count, DataType type) : data_(data), count_(count), type_(type) {}
  template <WritableElementRange R>
  BufferView(R&& range)  // NOLINT(google-explicit-constructor): views convert like spans
      : data_(std::ranges::data(range)),
        count_(std::ranges::size(range)),
        type_(DataTypeOf<std::ranges::range_value_t<R>>::value) {}

  void* data() const { return data_; }
  size_t count() const { return count_; }
  DataType type() const { return type_; }
  size_t bytes() const { return count_ * DataTypeSize(type_); }
  // Elements [begin, begin + count) of this view.
  BufferView Slice(size_t begin, size_t count) const {
    return BufferView(static_cast<char*>(data_) + begin * DataTypeSize(type_), count, type_);
  }

 private:
  void* data_ = nullptr;
  size_t count_ = 0;
  DataType type_ = DataType::kFloat32;
};

class ConstBufferView {
 public:
  ConstBufferView() = default;
  ConstBufferView(const void* data, size_t count, DataType type)
      : data_(data), count_(count), type_(type) {}
  ConstBufferView(const BufferView& view)  // NOLINT(google-explicit-constructor)
      : data_(view.data()), count_(view.count()), type_(view.type()) {}
  template <ElementRange R>
  ConstBufferView(R&& range)  // NOLINT(google-explicit-constructor)
      : data_(std::ranges::data(range)),
        count_(std::ranges::size(range)),
        type_(DataTypeOf<std::ranges::range_value_t<R>>::value) {}

  const void* data() const { return data_; }
  size_t count() const { return count_; }
  DataType type() const { return type_; }
  size_t bytes() const { return count_ * DataTypeSize(type_); }
  ConstBufferView Slice(size_t begin, size_t count) const {
    return ConstBufferView(static_cast<const char*>(data_) + begin * DataTypeSize(type_), count,
                           type_);
  }

 private:
  const void* data_ = nullptr;
  size_t count_ = 0;
  DataType type_ = DataType::kFloat32;
};

}  // namespace loom

#endif  // LOOM_RUNTIME_BUFFER_VIEW_H_
