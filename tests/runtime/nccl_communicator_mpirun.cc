// The nccl backend under `mpirun -np 2`, one GPU per rank: every operation (through host-to-GPU
// staging, so the host-memory checks apply unchanged), concurrent rings, and the errors the MPI
// headers catch. Every test skips, visibly, where fewer GPUs than ranks are visible.
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <memory>

#include "absl/strings/match.h"
#include "runtime/nccl_communicator.h"
#include "tests/runtime/comm_checks.h"
#include "tests/runtime/device_staging.h"
#include "tests/runtime/gpu_per_rank.h"

namespace loom {
namespace {

using comm_checks::Operation;

constexpr absl::Duration kTimeout = absl::Seconds(60);

class NcclEnvironment : public ::testing::Environment {
 public:
  void SetUp() override {
    skip_reason = test::GpuPerRankSkipReason();
    if (!skip_reason.empty()) return;
    absl::StatusOr<std::unique_ptr<Communicator>> comm = MakeNcclCommunicator(kTimeout);
    ASSERT_TRUE(comm.ok()) << comm.status();
    gpu = *std::move(comm);
    staged = std::make_unique<DeviceStagingCommunicator>(*gpu);
  }
  void TearDown() override {
    staged.reset();
    gpu.reset();
  }

  static inline std::string skip_reason;
  static inline std::unique_ptr<Communicator> gpu;
  static inline std::unique_ptr<Communicator> staged;
};

[[maybe_unused]] ::testing::Environment* const kEnvironment =
    ::testing::AddGlobalTestEnvironment(new NcclEnvironment);

#define LOOM_REQUIRE_GPUS()                                                          \
  if (NcclEnvironment::gpu == nullptr) GTEST_SKIP() << NcclEnvironment::skip_reason; \
  Communicator& comm = *NcclEnvironment::staged

class NcclOperationTest : public ::testing::TestWithParam<Operation> {};

TEST_P(NcclOperationTest, AllTypesAndSizes) {
  LOOM_REQUIRE_GPUS();
  for (size_t count : {size_t{0}, size_t{1}, size_t{1001}, (size_t{1} << 20) + 3}) {
    absl::Status status =
        comm_checks::CheckOperation(comm, GetParam(), count, comm_checks::kAllTypes);
    EXPECT_TRUE(status.ok()) << status;
  }
}

INSTANTIATE_TEST_SUITE_P(Operations, NcclOperationTest,
                         ::testing::Values(Operation::kIsendIrecv, Operation::kExchange,
                                           Operation::kAllReduce, Operation::kAllGather,
                                           Operation::kAllGatherV, Operation::kReduceScatter,
                                           Operation::kBroadcast, Operation::kBarrier),
                         [](const ::testing::TestParamInfo<Operation>& info) {
                           return std::string(comm_checks::OperationName(info.param));
                         });

TEST(NcclCommunicator, ConcurrentRingsOverPermutedSubsets) {
  LOOM_REQUIRE_GPUS();
  for (size_t count : {size_t{1}, size_t{1001}}) {
    absl::Status status = comm_checks::CheckConcurrentRings(comm, count);
    EXPECT_TRUE(status.ok()) << status;
  }
}

TEST(NcclCommunicator, HostBuffersAreRejected) {
  LOOM_REQUIRE_GPUS();
  std::vector<float> host(4);
  absl::Status status = NcclEnvironment::gpu->AllReduce(comm.world_group(), host, ReduceOp::kSum);
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << status;
  EXPECT_TRUE(absl::StrContains(status.message(), "needs GPU memory")) << status;
}

// Last in the file (tests run in order): a mismatch leaves the communicator unusable by design.
// The receiver refuses the message, so the sender's launch never completes and times out.
TEST(NcclCommunicator, SizeMismatchIsAnErrorNotCorruption) {
  LOOM_REQUIRE_GPUS();
  if (comm.rank() == 0) {
    std::vector<float> ten(10, 1.0f);
    auto request = comm.ISend(ten, 1, 3);
    ASSERT_TRUE(request.ok()) << request.status();
    absl::Status status = (*request)->WaitUntil(absl::Now() + absl::Seconds(2));
    EXPECT_EQ(status.code(), absl::StatusCode::kDeadlineExceeded) << status;
  } else if (comm.rank() == 1) {
    std::vector<float> twelve(12, 2.0f);
    absl::Status status = comm.Recv(twelve, 0, 3);
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << status;
    EXPECT_EQ(twelve, std::vector<float>(12, 2.0f));
  }
}

}  // namespace
}  // namespace loom
