// Element types and the CPU reductions behind the local and mpi backends.
#include "runtime/reduce.h"

#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <vector>

#include "runtime/buffer_view.h"

namespace loom {
namespace {

TEST(BFloat16, RoundsToNearestEven) {
  EXPECT_EQ(BFloat16ToFloat(FloatToBFloat16(1.0f)), 1.0f);
  EXPECT_EQ(BFloat16ToFloat(FloatToBFloat16(-3.5f)), -3.5f);
  // 1 + 2^-8 lies halfway between 1 and 1 + 2^-7: ties go to the even mantissa, 1.
  EXPECT_EQ(BFloat16ToFloat(FloatToBFloat16(1.0f + std::ldexp(1.0f, -8))), 1.0f);
  // Just above halfway rounds up.
  EXPECT_EQ(BFloat16ToFloat(FloatToBFloat16(1.0f + std::ldexp(1.0f, -8) + std::ldexp(1.0f, -12))),
            1.0f + std::ldexp(1.0f, -7));
  EXPECT_TRUE(
      std::isnan(BFloat16ToFloat(FloatToBFloat16(std::numeric_limits<float>::quiet_NaN()))));
  EXPECT_TRUE(std::isinf(BFloat16ToFloat(FloatToBFloat16(std::numeric_limits<float>::infinity()))));
}

TEST(DataType, SizesAndNames) {
  EXPECT_EQ(DataTypeSize(DataType::kFloat32), 4u);
  EXPECT_EQ(DataTypeSize(DataType::kBFloat16), 2u);
  EXPECT_EQ(DataTypeSize(DataType::kInt32), 4u);
  EXPECT_EQ(DataTypeSize(DataType::kInt64), 8u);
  EXPECT_EQ(DataTypeName(DataType::kBFloat16), "bf16");
  EXPECT_EQ(ReduceOpName(ReduceOp::kAvg), "avg");
}

TEST(BufferView, BuildsFromContiguousRanges) {
  std::vector<BFloat16> halves(6);
  const BufferView view(halves);
  EXPECT_EQ(view.type(), DataType::kBFloat16);
  EXPECT_EQ(view.count(), 6u);
  EXPECT_EQ(view.bytes(), 12u);
  EXPECT_EQ(view.Slice(2, 3).data(), static_cast<void*>(halves.data() + 2));
  const std::vector<int64_t> longs(3);
  const ConstBufferView read_only(longs);
  EXPECT_EQ(read_only.type(), DataType::kInt64);
  EXPECT_EQ(ConstBufferView(view).count(), 6u);
}

TEST(ReduceInOrder, AddsInputsInIndexOrder) {
  // 1e8 + 1 - 1e8 is 0 in fp32 when added left to right, 1 in another order: the order is fixed.
  const std::vector<float> a = {1e8f, 2.0f}, b = {1.0f, 3.0f}, c = {-1e8f, 4.0f};
  const void* inputs[] = {a.data(), b.data(), c.data()};
  std::vector<float> out(2);
  ReduceInOrder(DataType::kFloat32, ReduceOp::kSum, inputs, out.data(), 0, 2);
  EXPECT_EQ(out, (std::vector<float>{0.0f, 9.0f}));
  ReduceInOrder(DataType::kFloat32, ReduceOp::kAvg, inputs, out.data(), 1, 2);
  EXPECT_EQ(out[1], 3.0f);
  ReduceInOrder(DataType::kFloat32, ReduceOp::kMax, inputs, out.data(), 0, 2);
  EXPECT_EQ(out, (std::vector<float>{1e8f, 4.0f}));
}

TEST(ReduceInOrder, Bf16AccumulatesInFp32AndRoundsOnce) {
  // 256 + 1 + 1 = 258 exactly in fp32, representable in bf16; rounding to bf16 after each
  // addition would lose each 1 (257 rounds back to 256).
  const std::vector<BFloat16> a = {FloatToBFloat16(256.0f)}, b = {FloatToBFloat16(1.0f)};
  const void* inputs[] = {a.data(), b.data(), b.data()};
  std::vector<BFloat16> out(1);
  ReduceInOrder(DataType::kBFloat16, ReduceOp::kSum, inputs, out.data(), 0, 1);
  EXPECT_EQ(BFloat16ToFloat(out[0]), 258.0f);
  EXPECT_EQ(BFloat16ToFloat(FloatToBFloat16(257.0f)), 256.0f);
}

TEST(ReduceInOrder, IntegersWrapAndAverageTruncates) {
  const std::vector<int32_t> a = {std::numeric_limits<int32_t>::max(), 7, -7};
  const std::vector<int32_t> b = {1, 0, 0};
  const void* inputs[] = {a.data(), b.data()};
  std::vector<int32_t> out(3);
  ReduceInOrder(DataType::kInt32, ReduceOp::kSum, inputs, out.data(), 0, 3);
  EXPECT_EQ(out[0], std::numeric_limits<int32_t>::min());
  ReduceInOrder(DataType::kInt32, ReduceOp::kAvg, inputs, out.data(), 1, 3);
  EXPECT_EQ(out[1], 3);
  EXPECT_EQ(out[2], -3);
  const std::vector<int64_t> c = {-9, 10}, zeros = {0, 0};
  const void* longs[] = {c.data(), zeros.data(), zeros.data(), zeros.data()};
  std::vector<int64_t> mean(2);
  ReduceInOrder(DataType::kInt64, ReduceOp::kAvg, longs, mean.data(), 0, 2);
  EXPECT_EQ(mean, (std::vector<int64_t>{-2, 2}));
}

TEST(ReduceInOrder, OutputMayBeAnInput) {
  std::vector<float> a(3000, 1.0f), b(3000, 2.0f);
  const void* inputs[] = {a.data(), b.data()};
  ReduceInOrder(DataType::kFloat32, ReduceOp::kSum, inputs, a.data(), 0, a.size());
  EXPECT_EQ(a, std::vector<float>(3000, 3.0f));
}

}  // namespace
}  // namespace loom
