#include "runtime/reduce.h"

#include <algorithm>
#include <cstdint>
#include <type_traits>

namespace loom {
namespace {

// How each element type is loaded into an accumulator, combined and stored back.
template <typename T>
struct Arith {
  using Acc = T;
  static Acc Load(T x) { return x; }
  static T Store(Acc a) { return a; }
  static Acc Add(Acc a, Acc b) {
    if constexpr (std::is_integral_v<T>) {
      // Wrapping addition (unsigned arithmetic), as MPI and NCCL behave, without signed overflow.
      using U = std::make_unsigned_t<T>;
      return static_cast<T>(static_cast<U>(a) + static_cast<U>(b));
    } else {
      return a + b;
    }
  }
  static Acc Max(Acc a, Acc b) { return b > a ? b : a; }
  static T Divide(Acc a, int n) { return static_cast<T>(a / static_cast<Acc>(n)); }
};

template <>
struct Arith<BFloat16> {
  using Acc = float;
  static Acc Load(BFloat16 x) { return BFloat16ToFloat(x); }
  static BFloat16 Store(Acc a) { return FloatToBFloat16(a); }
  static Acc Add(Acc a, Acc b) { return a + b; }
  static Acc Max(Acc a, Acc b) { return b > a ? b : a; }
  static BFloat16 Divide(Acc a, int n) { return FloatToBFloat16(a / static_cast<float>(n)); }
};

template <typename T>
void ReduceTyped(ReduceOp op, std::span<const void* const> inputs, void* out_data, size_t begin,
                 size_t end) {
  using A = Arith<T>;
  using Acc = typename A::Acc;
  // Blocks keep the accumulators in cache while each input streams through once.
  constexpr size_t kBlock = 1024;
  Acc acc[kBlock];
  T* out = static_cast<T*>(out_data);
  const int n = static_cast<int>(inputs.size());
  for (size_t b = begin; b < end; b += kBlock) {
    const size_t len = std::min(kBlock, end - b);
    const T* first = static_cast<const T*>(inputs[0]) + b;
    for (size_t j = 0; j < len; ++j) acc[j] = A::Load(first[j]);
    for (int k = 1; k < n; ++k) {
      const T* in = static_cast<const T*>(inputs[static_cast<size_t>(k)]) + b;
      if (op == ReduceOp::kMax) {
        for (size_t j = 0; j < len; ++j) acc[j] = A::Max(acc[j], A::Load(in[j]));
      } else {
        for (size_t j = 0; j < len; ++j) acc[j] = A::Add(acc[j], A::Load(in[j]));
      }
    }
    if (op == ReduceOp::kAvg) {
      for (size_t j = 0; j < len; ++j) out[b + j] = A::Divide(acc[j], n);
    } else {
      for (size_t j = 0; j < len; ++j) out[b + j] = A::Store(acc[j]);
    }
  }
}

// Calls fn.template operator()<T>() for the element type of `type`.
template <typename Fn>
void DispatchType(DataType type, Fn&& fn) {
  switch (type) {
    case DataType::kFloat32:
      fn.template operator()<float>();
      return;
    case DataType::kBFloat16:
      fn.template operator()<BFloat16>();
      return;
    case DataType::kInt32:
      fn.template operator()<int32_t>();
      return;
    case DataType::kInt64:
      fn.template operator()<int64_t>();
      return;
  }
}

}  // namespace

void ReduceInOrder(DataType type, ReduceOp op, std::span<const void* const> inputs, void* out,
                   size_t begin, size_t end) {
  if (inputs.empty() || begin >= end) return;
  DispatchType(type, [&]<typename T>() { ReduceTyped<T>(op, inputs, out, begin, end); });
}

}  // namespace loom
