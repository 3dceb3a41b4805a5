// The GPU path's device context, caching allocator and buffers. Needs a CUDA device; skipped
// visibly without one.
#include <gtest/gtest.h>

#include <cstdint>
#include <vector>

#include "tests/src/cuda_test_util.h"
#include "tests/src/test_util.h"

#ifdef LOOM_HAVE_CUDA
#include "src/cuda/device_allocator.h"
#include "src/cuda/device_buffer.h"
#include "src/cuda/device_context.h"
#endif

namespace loom {
namespace {

#ifdef LOOM_HAVE_CUDA
using gpu::DeviceBuffer;
using gpu::DType;
#endif

TEST(CudaMemory, SizeClassesRoundUp) {
#ifndef LOOM_HAVE_CUDA
  LOOM_GPU_SKIP_WITHOUT_CUDA();
#else
  // Pure arithmetic: runs without a device.
  EXPECT_EQ(gpu::DeviceAllocator::RoundUp(1), 512u);
  EXPECT_EQ(gpu::DeviceAllocator::RoundUp(512), 512u);
  EXPECT_EQ(gpu::DeviceAllocator::RoundUp(513), 1024u);
  EXPECT_EQ(gpu::DeviceAllocator::RoundUp((1u << 20) - 1), 1u << 20);
  EXPECT_EQ(gpu::DeviceAllocator::RoundUp((1u << 20) + 1), 2u << 20);
  EXPECT_EQ(gpu::DeviceAllocator::RoundUp(5u << 20), 6u << 20);
#endif
}

TEST(CudaMemory, ContextNeedsADevice) {
#ifndef LOOM_HAVE_CUDA
  LOOM_GPU_SKIP_WITHOUT_CUDA();
#else
  absl::StatusOr<int> count = CudaDeviceCount();
  ASSERT_TRUE(count.ok()) << count.status();
  EXPECT_FALSE(gpu::DeviceContext::Create(-1).ok());
  if (*count > 0) GTEST_SKIP() << "a CUDA device is visible: the no-device error cannot be shown";
  absl::StatusOr<std::unique_ptr<gpu::DeviceContext>> ctx = gpu::DeviceContext::Create(3);
  ASSERT_FALSE(ctx.ok());
  EXPECT_EQ(ctx.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(ctx.status().message().find("local rank 3"), std::string::npos) << ctx.status();
#endif
}

TEST(CudaMemory, RankToDeviceIsLocalRankModuloDevices) {
#ifndef LOOM_HAVE_CUDA
  LOOM_GPU_SKIP_WITHOUT_CUDA();
#else
  LOOM_GPU_CONTEXT_OR_SKIP(ctx0);
  absl::StatusOr<int> count = CudaDeviceCount();
  ASSERT_TRUE(count.ok());
  for (int local_rank : {1, 5, 8}) {
    auto ctx = gpu::DeviceContext::Create(local_rank);
    ASSERT_TRUE(ctx.ok()) << ctx.status();
    EXPECT_EQ((*ctx)->device(), local_rank % *count);
  }
#endif
}

TEST(CudaMemory, AllocatorTracksPeakAndReusesBlocks) {
#ifndef LOOM_HAVE_CUDA
  LOOM_GPU_SKIP_WITHOUT_CUDA();
#else
  LOOM_GPU_CONTEXT_OR_SKIP(ctx);
  gpu::DeviceAllocator alloc(ctx->device());
  absl::StatusOr<void*> a = alloc.Allocate(1000);
  ASSERT_TRUE(a.ok()) << a.status();
  absl::StatusOr<void*> b = alloc.Allocate(3u << 20);
  ASSERT_TRUE(b.ok()) << b.status();
  EXPECT_EQ(alloc.current_bytes(), 1024u + (4u << 20));
  EXPECT_EQ(alloc.peak_bytes(), alloc.current_bytes());
  alloc.Free(*b);
  EXPECT_EQ(alloc.current_bytes(), 1024u);
  EXPECT_EQ(alloc.cached_bytes(), 4u << 20);
  EXPECT_EQ(alloc.peak_bytes(), 1024u + (4u << 20));
  absl::StatusOr<void*> c = alloc.Allocate((3u << 20) + 7);  // same size class: the cached block
  ASSERT_TRUE(c.ok());
  EXPECT_EQ(*c, *b);
  EXPECT_EQ(alloc.cached_bytes(), 0u);
  alloc.ResetPeak();
  EXPECT_EQ(alloc.peak_bytes(), alloc.current_bytes());
  alloc.Free(*a);
  alloc.Free(*c);
  alloc.ReleaseCached();
  EXPECT_EQ(alloc.current_bytes(), 0u);
  EXPECT_EQ(alloc.cached_bytes(), 0u);
  absl::StatusOr<void*> zero = alloc.Allocate(0);
  ASSERT_TRUE(zero.ok());
  EXPECT_EQ(*zero, nullptr);
#endif
}

TEST(CudaMemory, OutOfMemoryIsAStatusNamingTheRequest) {
#ifndef LOOM_HAVE_CUDA
  LOOM_GPU_SKIP_WITHOUT_CUDA();
#else
  LOOM_GPU_CONTEXT_OR_SKIP(ctx);
  gpu::DeviceAllocator alloc(ctx->device());
  absl::StatusOr<void*> huge = alloc.Allocate(size_t{1} << 50);  // 1 PiB
  ASSERT_FALSE(huge.ok());
  EXPECT_EQ(huge.status().code(), absl::StatusCode::kResourceExhausted) << huge.status();
  EXPECT_NE(huge.status().message().find("cudaMalloc"), std::string::npos) << huge.status();
  // The device is still usable afterwards.
  absl::StatusOr<void*> small = alloc.Allocate(4096);
  ASSERT_TRUE(small.ok()) << small.status();
  alloc.Free(*small);
#endif
}

TEST(CudaMemory, BuffersRoundTripFp32Bf16AndInt32) {
#ifndef LOOM_HAVE_CUDA
  LOOM_GPU_SKIP_WITHOUT_CUDA();
#else
  LOOM_GPU_CONTEXT_OR_SKIP(ctx);
  const std::vector<float> host = test::RandomVector(1001, 7);
  auto f32 = gpu::ToDevice(ctx->allocator(), host, DType::kF32, ctx->compute());
  ASSERT_TRUE(f32.ok()) << f32.status();
  auto back = gpu::ToHost(*f32, ctx->compute());
  ASSERT_TRUE(back.ok());
  EXPECT_EQ(*back, host);

  auto bf16 = gpu::ToDevice(ctx->allocator(), host, DType::kBF16, ctx->compute());
  ASSERT_TRUE(bf16.ok()) << bf16.status();
  EXPECT_EQ(bf16->bytes(), 2 * host.size());
  auto rounded = gpu::ToHost(*bf16, ctx->compute());
  ASSERT_TRUE(rounded.ok());
  // bf16 keeps 8 significant bits: relative rounding error at most 2^-8 per element.
  for (size_t i = 0; i < host.size(); ++i) {
    EXPECT_NEAR((*rounded)[i], host[i], std::abs(host[i]) * (1.0 / 256) + 1e-30) << i;
  }
  const std::vector<int32_t> ids = {0, 5, -1, 70000, 3};
  auto i32 = gpu::ToDeviceI32(ctx->allocator(), ids, ctx->compute());
  ASSERT_TRUE(i32.ok()) << i32.status();
  std::vector<int32_t> ids_back(ids.size());
  ASSERT_EQ(cudaMemcpy(ids_back.data(), i32->data(), ids.size() * 4, cudaMemcpyDeviceToHost),
            cudaSuccess);
  EXPECT_EQ(ids_back, ids);
  // Wrong sizes and types are errors, not overruns.
  EXPECT_FALSE(f32->CopyFromHost(host.data(), host.size() + 1, ctx->compute()).ok());
  EXPECT_FALSE(i32->CopyFromHost(host.data(), 2, ctx->compute()).ok());
  EXPECT_FALSE(f32->CopyFromHostI32(ids.data(), 2, ctx->compute()).ok());
  // Buffers give their memory back to the context's allocator when they go.
  const size_t held = ctx->allocator()->current_bytes();
  { DeviceBuffer tmp = std::move(*f32); }
  EXPECT_LT(ctx->allocator()->current_bytes(), held);
#endif
}

TEST(CudaMemory, StreamsOrderedByEvents) {
#ifndef LOOM_HAVE_CUDA
  LOOM_GPU_SKIP_WITHOUT_CUDA();
#else
  LOOM_GPU_CONTEXT_OR_SKIP(ctx);
  // A copy on the compute stream, then one on the communication stream that reads its result.
  const std::vector<float> host = test::RandomVector(1 << 20, 3);
  auto src = gpu::ToDevice(ctx->allocator(), host, DType::kF32, ctx->compute());
  ASSERT_TRUE(src.ok());
  auto mid = DeviceBuffer::Create(ctx->allocator(), DType::kF32, host.size(), ctx->compute());
  auto dst = DeviceBuffer::Create(ctx->allocator(), DType::kF32, host.size(), ctx->compute());
  ASSERT_TRUE(mid.ok() && dst.ok());
  ASSERT_TRUE(ctx->Synchronize().ok());
  ASSERT_EQ(cudaMemcpyAsync(mid->data(), src->data(), src->bytes(), cudaMemcpyDeviceToDevice,
                            ctx->compute()),
            cudaSuccess);
  ASSERT_TRUE(ctx->CommWaitsForCompute().ok());
  ASSERT_EQ(cudaMemcpyAsync(dst->data(), mid->data(), mid->bytes(), cudaMemcpyDeviceToDevice,
                            ctx->comm()),
            cudaSuccess);
  ASSERT_TRUE(ctx->ComputeWaitsForComm().ok());
  ASSERT_TRUE(ctx->Synchronize().ok());
  auto got = gpu::ToHost(*dst, ctx->compute());
  ASSERT_TRUE(got.ok());
  EXPECT_EQ(*got, host);
#endif
}

}  // namespace
}  // namespace loom
