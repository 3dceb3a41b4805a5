// Runtime configuration and the RunRanks entry point.
#include "runtime/run_ranks.h"

#include <gtest/gtest.h>

#include <atomic>

#include "absl/strings/match.h"

namespace loom {
namespace {

TEST(RuntimeConfig, ParsesBackendNames) {
  EXPECT_EQ(*ParseBackend("local"), Backend::kLocal);
  EXPECT_EQ(*ParseBackend("mpi"), Backend::kMpi);
  EXPECT_EQ(*ParseBackend("nccl"), Backend::kNccl);
  absl::Status bad = ParseBackend("gloo").status();
  EXPECT_EQ(bad.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(absl::StrContains(bad.message(), "'gloo'")) << bad;
}

TEST(RuntimeConfig, ValidatesSizesAndTimeout) {
  RuntimeConfig config;
  EXPECT_TRUE(ValidateRuntimeConfig(config).ok());
  config.local_world_size = 0;
  EXPECT_EQ(ValidateRuntimeConfig(config).code(), absl::StatusCode::kInvalidArgument);
  config.local_world_size = 2;
  config.timeout = absl::ZeroDuration();
  EXPECT_EQ(ValidateRuntimeConfig(config).code(), absl::StatusCode::kInvalidArgument);
}

TEST(RuntimeConfig, NcclIsAvailableExactlyInNcclBuilds) {
  RuntimeConfig config;
  config.backend = Backend::kNccl;
#ifdef LOOM_HAVE_NCCL
  EXPECT_TRUE(BackendAvailable(Backend::kNccl));
  EXPECT_TRUE(ValidateRuntimeConfig(config).ok());
#else
  EXPECT_FALSE(BackendAvailable(Backend::kNccl));
  EXPECT_EQ(ValidateRuntimeConfig(config).code(), absl::StatusCode::kUnimplemented);
#endif
}

TEST(RunRanks, LocalRunsOneThreadPerRank) {
  RuntimeConfig config;
  config.local_world_size = 5;
  std::atomic<int> rank_sum = 0;
  absl::Status status = RunRanks(config, [&](Communicator& comm) {
    rank_sum += comm.rank();
    std::vector<int32_t> one = {1};
    absl::Status s = comm.AllReduce(comm.world_group(), one, ReduceOp::kSum);
    if (s.ok() && one[0] != comm.size()) return absl::InternalError("wrong sum");
    return s;
  });
  EXPECT_TRUE(status.ok()) << status;
  EXPECT_EQ(rank_sum, 0 + 1 + 2 + 3 + 4);
}

// Outside mpirun the mpi backend is a world of one (MPI singleton).
TEST(RunRanks, MpiSingletonIsAWorldOfOne) {
  RuntimeConfig config;
  config.backend = Backend::kMpi;
  config.timeout = absl::Seconds(30);
  int calls = 0;
  absl::Status status = RunRanks(config, [&](Communicator& comm) {
    ++calls;
    if (comm.backend() != Backend::kMpi || comm.size() != 1 || comm.rank() != 0) {
      return absl::InternalError("not a world of one");
    }
    std::vector<float> data = {2.5f};
    absl::Status s = comm.AllReduce(comm.world_group(), data, ReduceOp::kAvg);
    if (s.ok() && data[0] != 2.5f) return absl::InternalError("wrong average");
    std::vector<float> echo(1);
    const SendSpec sends[] = {{data, 0, 1}};
    const RecvSpec recvs[] = {{echo, 0, 1}};
    if (s.ok()) s = comm.Exchange(sends, recvs);
    if (s.ok() && echo[0] != 2.5f) return absl::InternalError("self message lost");
    return s;
  });
  EXPECT_TRUE(status.ok()) << status;
  EXPECT_EQ(calls, 1);
}

}  // namespace
}  // namespace loom
