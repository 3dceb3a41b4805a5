#include "src/tensor.h"

#include <gtest/gtest.h>

namespace loom {
namespace {

TEST(Allocator, TracksCurrentAndPeakBytes) {
  Allocator alloc;
  {
    Buffer a(100, &alloc);
    EXPECT_EQ(alloc.current_bytes(), 400u);
    {
      Buffer b(50, &alloc);
      EXPECT_EQ(alloc.current_bytes(), 600u);
    }
    EXPECT_EQ(alloc.current_bytes(), 400u);
    EXPECT_EQ(alloc.peak_bytes(), 600u);
    alloc.ResetPeak();
    EXPECT_EQ(alloc.peak_bytes(), 400u);
  }
  EXPECT_EQ(alloc.current_bytes(), 0u);
}

TEST(Allocator, ReusesFreedBlocksZeroFilled) {
  Allocator alloc;
  float* first = nullptr;
  {
    Buffer a(1000, &alloc);
    first = a.data();
    a.data()[7] = 3.0f;
  }
  EXPECT_EQ(alloc.current_bytes(), 0u);
  EXPECT_GE(alloc.cached_bytes(), 4000u);
  Buffer b(900, &alloc);  // fits the freed block
  EXPECT_EQ(b.data(), first);
  EXPECT_EQ(b.data()[7], 0.0f) << "a reused block must be zero-filled again";
  EXPECT_EQ(alloc.cached_bytes(), 0u);
  Buffer c(100, &alloc);  // would waste most of a big block: fresh memory instead
  EXPECT_EQ(alloc.current_bytes(), 4000u);
  alloc.ReleaseCached();
  EXPECT_EQ(alloc.cached_bytes(), 0u);
}

TEST(Buffer, IsZeroFilledAndMovable) {
  Allocator alloc;
  Buffer a(16, &alloc);
  for (size_t i = 0; i < a.numel(); ++i) EXPECT_EQ(a.data()[i], 0.0f);
  a.data()[3] = 2.5f;
  Buffer b = std::move(a);
  EXPECT_EQ(b.data()[3], 2.5f);
  EXPECT_EQ(a.numel(), 0u);
  EXPECT_EQ(alloc.current_bytes(), 64u);
}

TEST(Tensor, ViewsReshapeAndSlice) {
  Buffer buf(24);
  for (int i = 0; i < 24; ++i) buf.data()[i] = static_cast<float>(i);
  Tensor t(buf.data(), {4, 6});
  EXPECT_EQ(t.numel(), 24);
  Tensor s = t.Slice(1, 3);
  EXPECT_EQ(s.ShapeString(), "[2, 6]");
  EXPECT_EQ(s.data()[0], 6.0f);
  Tensor r = t.Reshape({2, 3, 4});
  EXPECT_EQ(r.dim(2), 4);
  EXPECT_EQ(r.data(), t.data());
}

}  // namespace
}  // namespace loom
