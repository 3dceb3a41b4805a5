// Element types and reductions the runtime moves and combines. The runtime knows no tensors: a
// buffer is memory plus an element type and count, so src/ and runtime/ stay independent.
#ifndef LOOM_RUNTIME_DTYPE_H_
#define LOOM_RUNTIME_DTYPE_H_

#include <cstddef>
#include <cstdint>
#include <cstring>

#include "absl/strings/string_view.h"

namespace loom {

enum class DataType { kFloat32, kBFloat16, kInt32, kInt64 };

// bfloat16 as its 16 bits: the upper half of an IEEE fp32. Arithmetic goes through float.
struct BFloat16 {
  uint16_t bits = 0;
  friend bool operator==(BFloat16 a, BFloat16 b) { return a.bits == b.bits; }
};

inline float BFloat16ToFloat(BFloat16 value) {
  const uint32_t bits = static_cast<uint32_t>(value.bits) << 16;
  float out;
  std::memcpy(&out, &bits, sizeof(out));
  return out;
}

// Round to nearest, ties to even (what PyTorch and CUDA do); NaN stays a quiet NaN.
inline BFloat16 FloatToBFloat16(float value) {
  uint32_t bits;
  std::memcpy(&bits, &value, sizeof(bits));
  if ((bits & 0x7f800000u) == 0x7f800000u && (bits & 0x007fffffu) != 0) {
    return BFloat16{static_cast<uint16_t>((bits >> 16) | 0x0040u)};
  }
  const uint32_t rounding = 0x7fffu + ((bits >> 16) & 1u);
  return BFloat16{static_cast<uint16_t>((bits + rounding) >> 16)};
}

size_t DataTypeSize(DataType type);
absl::string_view DataTypeName(DataType type);  // "fp32", "bf16", "int32", "int64"

// The C++ element type behind each DataType, for typed views of buffers.
template <typename T>
struct DataTypeOf;
template <>
struct DataTypeOf<float> {
  static constexpr DataType value = DataType::kFloat32;
};
template <>
struct DataTypeOf<BFloat16> {
  static constexpr DataType value = DataType::kBFloat16;
};
template <>
struct DataTypeOf<int32_t> {
  static constexpr DataType value = DataType::kInt32;
};
template <>
struct DataTypeOf<int64_t> {
  static constexpr DataType value = DataType::kInt64;
};

// kAvg is the sum divided by the number of ranks; integers divide with truncation toward zero.
// Integer sums wrap on overflow, as in NCCL.
enum class ReduceOp { kSum, kAvg, kMax };

absl::string_view ReduceOpName(ReduceOp op);  // "sum", "avg", "max"

}  // namespace loom

#endif  // LOOM_RUNTIME_DTYPE_H_
