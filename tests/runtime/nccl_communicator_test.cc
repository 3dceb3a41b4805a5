// The nccl backend in one process (a world of one GPU): every operation through host-to-GPU
// staging. Skipped, visibly, without a CUDA device or in builds without NCCL; the multi-rank
// checks are in nccl_communicator_mpirun.cc.
#include <gtest/gtest.h>

#include <memory>

#ifdef LOOM_HAVE_NCCL
#include <cuda_runtime.h>

#include "runtime/nccl_communicator.h"
#include "tests/runtime/comm_checks.h"
#include "tests/runtime/device_staging.h"
#endif

namespace loom {
namespace {

TEST(NcclCommunicator, EveryOperationOnOneGpu) {
#ifndef LOOM_HAVE_NCCL
  GTEST_SKIP() << "built without NCCL (LOOM_CUDA=OFF or no nccl.h): no nccl backend to check";
#else
  int devices = 0;
  if (cudaGetDeviceCount(&devices) != cudaSuccess || devices == 0) {
    GTEST_SKIP() << "no CUDA device visible";
  }
  absl::StatusOr<std::unique_ptr<Communicator> > gpu = MakeNcclCommunicator(absl::Seconds(60));
  ASSERT_TRUE(gpu.ok()) << gpu.status();
  EXPECT_EQ((*gpu)->backend(), Backend::kNccl);
  DeviceStagingCommunicator comm(**gpu);
  using comm_checks::Operation;
  for (Operation op : {Operation::kSendRecv, Operation::kIsendIrecv, Operation::kExchange,
                       Operation::kAllReduce, Operation::kAllGather, Operation::kAllGatherV,
                       Operation::kReduceScatter, Operation::kBroadcast, Operation::kBarrier}) {
    for (size_t count : {size_t{0}, size_t{1}, size_t{1001}, (size_t{1} << 20) + 3}) {
      absl::Status status = comm_checks::CheckOperation(comm, op, count, comm_checks::kAllTypes);
      EXPECT_TRUE(status.ok()) << status;
    }
  }
#endif
}

}  // namespace
}  // namespace loom
