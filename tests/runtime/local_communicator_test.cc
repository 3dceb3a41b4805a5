// The local backend: every operation for world sizes 1..8 and sizes 0, 1, odd and ~1M elements,
// concurrent rings, timeouts, mismatches and bitwise reproducibility.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>

#include "absl/strings/match.h"
#include "runtime/local_world.h"
#include "tests/runtime/comm_checks.h"

namespace loom {
namespace {

using comm_checks::Operation;

// Long enough for 8 ranks on 2 cores; a failing rank makes its peers wait this long.
constexpr absl::Duration kTimeout = absl::Seconds(10);
constexpr absl::Duration kShortTimeout = absl::Milliseconds(300);

std::unique_ptr<LocalWorld> MakeWorld(int size, absl::Duration timeout = kTimeout) {
  absl::StatusOr<std::unique_ptr<LocalWorld>> world = LocalWorld::Create(size, timeout);
  EXPECT_TRUE(world.ok()) << world.status();
  return *std::move(world);
}

struct OperationCase {
  int world_size;
  Operation operation;
  friend void PrintTo(const OperationCase& c, std::ostream* os) {
    *os << comm_checks::OperationName(c.operation) << " on " << c.world_size << " ranks";
  }
};

class LocalOperationTest : public ::testing::TestWithParam<OperationCase> {};

// Every type at sizes 0, 1 and odd; the ~1M-element size in fp32 and bf16 (the two types
// training moves in bulk; integer paths share the code and are covered at the smaller sizes).
TEST_P(LocalOperationTest, AllTypesAndSizes) {
  const auto [world_size, operation] = GetParam();
  auto world = MakeWorld(world_size);
  for (size_t count : {size_t{0}, size_t{1}, size_t{1001}}) {
    absl::Status status = world->Run([&](Communicator& comm) {
      return comm_checks::CheckOperation(comm, operation, count, comm_checks::kAllTypes);
    });
    EXPECT_TRUE(status.ok()) << status;
  }
  const DataType bulk[] = {DataType::kFloat32, DataType::kBFloat16};
  absl::Status status = world->Run([&](Communicator& comm) {
    return comm_checks::CheckOperation(comm, operation, (size_t{1} << 20) + 3, bulk);
  });
  EXPECT_TRUE(status.ok()) << status;
}

std::vector<OperationCase> AllCases() {
  std::vector<OperationCase> cases;
  for (int n : {1, 2, 3, 4, 5, 8}) {
    for (Operation op : {Operation::kSendRecv, Operation::kIsendIrecv, Operation::kExchange,
                         Operation::kAllReduce, Operation::kAllGather, Operation::kAllGatherV,
                         Operation::kReduceScatter, Operation::kBroadcast, Operation::kBarrier}) {
      cases.push_back({n, op});
    }
  }
  return cases;
}

INSTANTIATE_TEST_SUITE_P(Worlds, LocalOperationTest, ::testing::ValuesIn(AllCases()),
                         [](const ::testing::TestParamInfo<OperationCase>& info) {
                           return absl::StrCat(comm_checks::OperationName(info.param.operation),
                                               "_World", info.param.world_size);
                         });

class LocalRingsTest : public ::testing::TestWithParam<int> {};

TEST_P(LocalRingsTest, ConcurrentRingsOverPermutedSubsets) {
  auto world = MakeWorld(GetParam());
  for (size_t count : {size_t{0}, size_t{1}, size_t{1001}}) {
    absl::Status status = world->Run(
        [&](Communicator& comm) { return comm_checks::CheckConcurrentRings(comm, count); });
    EXPECT_TRUE(status.ok()) << status;
  }
}

INSTANTIATE_TEST_SUITE_P(Worlds, LocalRingsTest, ::testing::Values(1, 2, 3, 4, 5, 8),
                         [](const ::testing::TestParamInfo<int>& info) {
                           return absl::StrCat("World", info.param);
                         });

TEST(LocalCommunicator, RecvFromSilentPeerTimesOutNamingPeerAndTag) {
  auto world = MakeWorld(2, kShortTimeout);
  std::vector<float> buffer(4);
  const absl::Time start = absl::Now();
  absl::Status status = world->communicator(0).Recv(buffer, 1, 77);
  const absl::Duration waited = absl::Now() - start;
  EXPECT_EQ(status.code(), absl::StatusCode::kDeadlineExceeded) << status;
  EXPECT_TRUE(absl::StrContains(status.message(), "from rank 1")) << status;
  EXPECT_TRUE(absl::StrContains(status.message(), "tag 77")) << status;
  EXPECT_TRUE(absl::StrContains(status.message(), "on rank 0")) << status;
  EXPECT_GE(waited, kShortTimeout);
  EXPECT_LT(waited, kShortTimeout + absl::Seconds(2));
}

TEST(LocalCommunicator, SendToSilentPeerTimesOut) {
  auto world = MakeWorld(3, kShortTimeout);
  std::vector<int32_t> buffer(4, 1);
  absl::Status status = world->communicator(2).Send(buffer, 0, 5);
  EXPECT_EQ(status.code(), absl::StatusCode::kDeadlineExceeded) << status;
  EXPECT_TRUE(absl::StrContains(status.message(), "to rank 0, tag 5")) << status;
}

TEST(LocalCommunicator, WithdrawnReceiveIsNeverWritten) {
  auto world = MakeWorld(2, kShortTimeout);
  std::vector<float> late(3, 0.0f);
  {
    auto request = world->communicator(1).IRecv(late, 0, 9);
    ASSERT_TRUE(request.ok());
    EXPECT_EQ((*request)->WaitUntil(absl::Now() + absl::Milliseconds(20)).code(),
              absl::StatusCode::kDeadlineExceeded);
    EXPECT_TRUE((*request)->Test()) << "a timed-out request is complete";
  }
  {
    // Destroyed without waiting: withdrawn as well.
    auto request = world->communicator(1).IRecv(late, 0, 9);
    ASSERT_TRUE(request.ok());
  }
  const std::vector<float> data = {1, 2, 3};
  EXPECT_EQ(world->communicator(0).Send(data, 1, 9).code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_EQ(late, std::vector<float>(3, 0.0f));
}

TEST(LocalCommunicator, SizeMismatchIsAnErrorOnBothSides) {
  auto world = MakeWorld(2);
  absl::Status status = world->Run([](Communicator& comm) -> absl::Status {
    if (comm.rank() == 0) {
      std::vector<float> data(10, 1.0f);
      absl::Status s = comm.Send(data, 1, 4);
      if (s.code() != absl::StatusCode::kInvalidArgument ||
          !absl::StrContains(s.message(), "posted a receive for fp32 x 12")) {
        return absl::InternalError(absl::StrCat("sender got: ", s.ToString()));
      }
    } else {
      std::vector<float> data(12, 7.0f);
      absl::Status s = comm.Recv(data, 0, 4);
      if (s.code() != absl::StatusCode::kInvalidArgument ||
          !absl::StrContains(s.message(), "rank 0 sent fp32 x 10")) {
        return absl::InternalError(absl::StrCat("receiver got: ", s.ToString()));
      }
      if (data != std::vector<float>(12, 7.0f)) return absl::InternalError("buffer was written");
    }
    return absl::OkStatus();
  });
  EXPECT_TRUE(status.ok()) << status;
}

TEST(LocalCommunicator, TypeMismatchIsAnError) {
  auto world = MakeWorld(2);
  absl::Status status = world->Run([](Communicator& comm) -> absl::Status {
    absl::Status s;
    if (comm.rank() == 0) {
      std::vector<float> data(4);
      s = comm.Send(data, 1, 0);
    } else {
      std::vector<int32_t> data(4);
      s = comm.Recv(data, 0, 0);
    }
    if (s.code() != absl::StatusCode::kInvalidArgument) {
      return absl::InternalError(absl::StrCat("got: ", s.ToString()));
    }
    return absl::OkStatus();
  });
  EXPECT_TRUE(status.ok()) << status;
}

TEST(LocalCommunicator, SameTagMessagesArriveInOrderAndTagsSeparateStreams) {
  auto world = MakeWorld(2);
  absl::Status status = world->Run([](Communicator& comm) -> absl::Status {
    std::vector<std::vector<int64_t>> buffers = {{1}, {2}, {3}, {4}};
    std::vector<std::unique_ptr<Request>> requests;
    if (comm.rank() == 0) {
      // Tag 1 twice, then tag 2 twice.
      for (int i = 0; i < 4; ++i) {
        auto r = comm.ISend(buffers[static_cast<size_t>(i)], 1, 1 + i / 2);
        if (!r.ok()) return r.status();
        requests.push_back(*std::move(r));
      }
    } else {
      for (auto& b : buffers) b[0] = 0;
      // Receive tag 2 first: the streams are independent.
      const int tags[] = {2, 2, 1, 1};
      for (int i = 0; i < 4; ++i) {
        auto r = comm.IRecv(buffers[static_cast<size_t>(i)], 0, tags[i]);
        if (!r.ok()) return r.status();
        requests.push_back(*std::move(r));
      }
    }
    absl::Status s = WaitAll(requests, absl::Now() + comm.timeout());
    if (!s.ok()) return s;
    if (comm.rank() == 1) {
      const std::vector<std::vector<int64_t>> want = {{3}, {4}, {1}, {2}};
      if (buffers != want) return absl::InternalError("messages arrived out of order");
    }
    return absl::OkStatus();
  });
  EXPECT_TRUE(status.ok()) << status;
}

TEST(LocalCommunicator, CollectiveWithAbsentRankTimesOutNamingIt) {
  auto world = MakeWorld(3, kShortTimeout);
  absl::Status status = world->Run([](Communicator& comm) -> absl::Status {
    if (comm.rank() == 2) return absl::OkStatus();  // never joins
    std::vector<float> data(8, 1.0f);
    const absl::Time start = absl::Now();
    absl::Status s = comm.AllReduce(comm.world_group(), data, ReduceOp::kSum);
    if (s.code() != absl::StatusCode::kDeadlineExceeded ||
        !absl::StrContains(s.message(), "rank(s) 2 never joined") ||
        !absl::StrContains(s.message(), "AllReduce(sum, fp32 x 8)")) {
      return absl::InternalError(absl::StrCat("got: ", s.ToString()));
    }
    if (absl::Now() - start > kShortTimeout + absl::Seconds(2)) {
      return absl::InternalError("failed long after the timeout");
    }
    return absl::OkStatus();
  });
  EXPECT_TRUE(status.ok()) << status;
}

TEST(LocalCommunicator, LateArrivalAfterTimeoutFailsAtOnce) {
  auto world = MakeWorld(2, kShortTimeout);
  std::vector<float> data(2);
  EXPECT_EQ(world->communicator(0).Barrier(world->communicator(0).world_group()).code(),
            absl::StatusCode::kDeadlineExceeded);
  const absl::Time start = absl::Now();
  absl::Status late = world->communicator(1).Barrier(world->communicator(1).world_group());
  EXPECT_EQ(late.code(), absl::StatusCode::kDeadlineExceeded) << late;
  EXPECT_LT(absl::Now() - start, kShortTimeout / 2);
  // The next collective on the group is a fresh one and works.
  absl::Status next =
      world->Run([&](Communicator& comm) { return comm.Barrier(comm.world_group()); });
  EXPECT_TRUE(next.ok()) << next;
}

TEST(LocalCommunicator, CollectiveArgumentMismatchIsAnError) {
  auto world = MakeWorld(3);
  absl::Status status = world->Run([](Communicator& comm) -> absl::Status {
    std::vector<float> data(comm.rank() == 1 ? 5 : 4, 1.0f);
    absl::Status s = comm.AllReduce(comm.world_group(), data, ReduceOp::kSum);
    if (s.code() != absl::StatusCode::kInvalidArgument ||
        !absl::StrContains(s.message(), "disagree on the element count")) {
      return absl::InternalError(absl::StrCat("got: ", s.ToString()));
    }
    // Different operations on the group are caught too.
    std::vector<float> more(4, 1.0f);
    s = comm.rank() == 0 ? comm.Broadcast(comm.world_group(), more, 0)
                         : comm.AllReduce(comm.world_group(), more, ReduceOp::kMax);
    if (s.code() != absl::StatusCode::kInvalidArgument) {
      return absl::InternalError(absl::StrCat("got: ", s.ToString()));
    }
    return absl::OkStatus();
  });
  EXPECT_TRUE(status.ok()) << status;
}

TEST(LocalCommunicator, AllReduceIsBitwiseReproducibleInGroupOrder) {
  constexpr int kRanks = 5;
  constexpr size_t kCount = 100003;
  std::vector<std::vector<float>> inputs(kRanks, std::vector<float>(kCount));
  std::mt19937 rng(7);
  std::uniform_real_distribution<float> dist(-1e3f, 1e3f);
  for (auto& input : inputs) {
    for (float& x : input) x = dist(rng) * std::pow(10.0f, static_cast<float>(rng() % 7) - 3);
  }
  // The reference: members added one after another in group order.
  const std::vector<int> order = {3, 0, 4, 1, 2};
  std::vector<float> reference(kCount);
  for (size_t i = 0; i < kCount; ++i) {
    float acc = inputs[static_cast<size_t>(order[0])][i];
    for (size_t k = 1; k < order.size(); ++k) acc += inputs[static_cast<size_t>(order[k])][i];
    reference[i] = acc;
  }
  const Group group = *Group::Make(order);
  auto world = MakeWorld(kRanks);
  for (int run = 0; run < 4; ++run) {
    std::vector<std::vector<float>> data = inputs;
    absl::Status status = world->Run([&](Communicator& comm) {
      return comm.AllReduce(group, data[static_cast<size_t>(comm.rank())], ReduceOp::kSum);
    });
    ASSERT_TRUE(status.ok()) << status;
    for (int r = 0; r < kRanks; ++r) {
      ASSERT_EQ(std::memcmp(data[static_cast<size_t>(r)].data(), reference.data(),
                            kCount * sizeof(float)),
                0)
          << "run " << run << " rank " << r;
    }
  }
}

TEST(LocalCommunicator, DisjointGroupsRunCollectivesConcurrently) {
  auto world = MakeWorld(4);
  const Group evens = *Group::Make({2, 0});
  const Group odds = *Group::Make({1, 3});
  absl::Status status = world->Run([&](Communicator& comm) -> absl::Status {
    const Group& mine = comm.rank() % 2 == 0 ? evens : odds;
    for (int i = 0; i < 50; ++i) {
      std::vector<int64_t> v = {comm.rank(), i};
      absl::Status s = comm.AllReduce(mine, v, ReduceOp::kSum);
      if (!s.ok()) return s;
      const int64_t want = comm.rank() % 2 == 0 ? 2 : 4;
      if (v[0] != want || v[1] != 2 * i) return absl::InternalError("wrong sum");
    }
    return absl::OkStatus();
  });
  EXPECT_TRUE(status.ok()) << status;
}

TEST(LocalCommunicator, RejectsInvalidArguments) {
  auto world = MakeWorld(3);
  Communicator& comm = world->communicator(0);
  std::vector<float> four(4), eight(8);
  EXPECT_EQ(comm.ISend(four, 3, 0).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(comm.IRecv(four, -1, 0).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(comm.ISend(four, 1, -2).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(comm.ISend(ConstBufferView(nullptr, 3, DataType::kFloat32), 1, 0).status().code(),
            absl::StatusCode::kInvalidArgument);
  const Group others = *Group::Make({1, 2});
  absl::Status s = comm.AllReduce(others, four, ReduceOp::kSum);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(absl::StrContains(s.message(), "not a member")) << s;
  const Group too_big = *Group::Make({0, 5});
  EXPECT_EQ(comm.Barrier(too_big).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(comm.AllGather(comm.world_group(), four, eight).code(),
            absl::StatusCode::kInvalidArgument);
  std::vector<int32_t> ints(12);
  EXPECT_EQ(comm.AllGather(comm.world_group(), four, ints).code(),
            absl::StatusCode::kInvalidArgument);
  std::vector<float> twelve(12);
  // Send overlapping recv other than as this rank's slot.
  EXPECT_EQ(comm.AllGather(comm.world_group(), BufferView(twelve).Slice(2, 4), twelve).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(comm.ReduceScatter(comm.world_group(), twelve, eight, ReduceOp::kSum).code(),
            absl::StatusCode::kInvalidArgument);
  const size_t counts[] = {4, 4};
  EXPECT_EQ(comm.AllGatherV(comm.world_group(), four, eight, counts).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(comm.Broadcast(comm.world_group(), four, 7).code(), absl::StatusCode::kInvalidArgument);
}

TEST(LocalWorld, RunReportsTheLowestFailingRank) {
  auto world = MakeWorld(4);
  absl::Status status = world->Run([](Communicator& comm) -> absl::Status {
    if (comm.rank() >= 2) return absl::NotFoundError(absl::StrCat("missing ", comm.rank()));
    return absl::OkStatus();
  });
  EXPECT_EQ(status.code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(status.message(), "rank 2: missing 2");
  EXPECT_FALSE(LocalWorld::Create(0, kTimeout).ok());
  EXPECT_FALSE(LocalWorld::Create(2, absl::ZeroDuration()).ok());
}

TEST(LocalWorld, CommunicatorsDescribeTheirRank) {
  auto world = MakeWorld(3);
  for (int r = 0; r < 3; ++r) {
    const WorldInfo& info = world->communicator(r).world();
    EXPECT_EQ(info.rank, r);
    EXPECT_EQ(info.size, 3);
    EXPECT_EQ(info.local_rank, r);
    EXPECT_EQ(info.node, 0);
    EXPECT_EQ(info.source, "local");
    EXPECT_EQ(world->communicator(r).backend(), Backend::kLocal);
  }
}

}  // namespace
}  // namespace loom
