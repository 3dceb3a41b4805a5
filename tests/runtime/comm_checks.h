// Checks of Communicator operations that any backend must pass, shared by the local tests (ranks
// as threads) and the MPI tests (ranks as processes under mpirun). Each check runs on one rank and
// returns a status naming the operation, the rank and the first wrong element.
//
// Inputs are small integers, so every sum over up to 8 ranks is exact in fp32 and bf16 and the
// expected results are exact too, whatever order a backend reduces in.
#ifndef LOOM_TESTS_RUNTIME_COMM_CHECKS_H_
#define LOOM_TESTS_RUNTIME_COMM_CHECKS_H_

#include <algorithm>
#include <cstdint>
#include <numeric>
#include <optional>
#include <span>
#include <string>
#include <thread>
#include <type_traits>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "runtime/communicator.h"

namespace loom::comm_checks {

// Value at element i of rank r's input: an integer in [-8, 8].
inline int Pattern(int rank, size_t i, int salt = 0) {
  return static_cast<int>(
             (static_cast<size_t>(rank + 1) * 7 + i * 13 + static_cast<size_t>(salt) * 5) % 17) -
         8;
}

template <typename T>
T FromInt(int v) {
  if constexpr (std::is_same_v<T, BFloat16>) {
    return FloatToBFloat16(static_cast<float>(v));
  } else {
    return static_cast<T>(v);
  }
}

template <typename T>
std::string Show(T v) {
  if constexpr (std::is_same_v<T, BFloat16>) {
    return absl::StrCat(BFloat16ToFloat(v));
  } else {
    return absl::StrCat(v);
  }
}

// Pattern repeats every 17 elements: inputs and expected results are built from one period.
inline constexpr size_t kPeriod = 17;

template <typename T>
std::vector<T> Periodic(size_t count, const T* period) {
  std::vector<T> v(count);
  for (size_t i = 0; i < count; ++i) v[i] = period[i % kPeriod];
  return v;
}

template <typename T>
std::vector<T> Input(int rank, size_t count, int salt = 0) {
  T period[kPeriod];
  for (size_t i = 0; i < kPeriod; ++i) period[i] = FromInt<T>(Pattern(rank, i, salt));
  return Periodic(count, period);
}

// The exact result of `op` over the members' Pattern values at element i.
template <typename T>
T ExpectedAt(const Group& group, ReduceOp op, size_t i, int salt = 0) {
  int64_t sum = 0;
  int max = -1000;
  for (int r : group.ranks()) {
    sum += Pattern(r, i, salt);
    max = std::max(max, Pattern(r, i, salt));
  }
  switch (op) {
    case ReduceOp::kSum:
      return FromInt<T>(static_cast<int>(sum));
    case ReduceOp::kMax:
      return FromInt<T>(max);
    case ReduceOp::kAvg:
      if constexpr (std::is_same_v<T, BFloat16>) {
        return FloatToBFloat16(static_cast<float>(sum) / static_cast<float>(group.size()));
      } else if constexpr (std::is_floating_point_v<T>) {
        return static_cast<T>(sum) / static_cast<T>(group.size());
      } else {
        return static_cast<T>(sum / group.size());
      }
  }
  return T{};
}

// ExpectedAt for elements [begin, begin + count).
template <typename T>
std::vector<T> Expected(const Group& group, ReduceOp op, size_t begin, size_t count) {
  T period[kPeriod];
  for (size_t i = 0; i < kPeriod; ++i) period[i] = ExpectedAt<T>(group, op, begin + i);
  return Periodic(count, period);
}

template <typename T>
absl::Status Compare(const std::string& what, const std::vector<T>& got,
                     const std::vector<T>& want) {
  if (got.size() != want.size()) {
    return absl::InternalError(
        absl::StrCat(what, ": ", got.size(), " elements, expected ", want.size()));
  }
  for (size_t i = 0; i < got.size(); ++i) {
    if (!(got[i] == want[i])) {
      return absl::InternalError(
          absl::StrCat(what, ": element ", i, " is ", Show(got[i]), ", expected ", Show(want[i])));
    }
  }
  return absl::OkStatus();
}

inline std::string Label(const Communicator& comm, absl::string_view op, const Group& group,
                         DataType type, size_t count) {
  return absl::StrFormat("%s %s x %d over %s on rank %d (%s backend)", op, DataTypeName(type),
                         count, group.ToString(), comm.rank(), BackendName(comm.backend()));
}

template <typename T>
absl::Status AllReduceT(Communicator& comm, const Group& group, ReduceOp op, size_t count) {
  const std::string what =
      Label(comm, absl::StrCat("AllReduce/", ReduceOpName(op)), group, DataTypeOf<T>::value, count);
  std::vector<T> data = Input<T>(comm.rank(), count);
  absl::Status status = comm.AllReduce(group, data, op);
  if (!status.ok()) return status;
  return Compare(what, data, Expected<T>(group, op, 0, count));
}

template <typename T>
absl::Status AllGatherT(Communicator& comm, const Group& group, size_t count, bool in_place) {
  const std::string what = Label(comm, in_place ? "AllGather(in place)" : "AllGather", group,
                                 DataTypeOf<T>::value, count);
  const size_t n = static_cast<size_t>(group.size());
  const size_t me = static_cast<size_t>(*group.IndexOf(comm.rank()));
  std::vector<T> send = Input<T>(comm.rank(), count);
  std::vector<T> recv(count * n, FromInt<T>(99));
  absl::Status status;
  if (in_place) {
    std::copy(send.begin(), send.end(), recv.begin() + static_cast<ptrdiff_t>(me * count));
    status = comm.AllGather(group, BufferView(recv).Slice(me * count, count), recv);
  } else {
    status = comm.AllGather(group, send, recv);
  }
  if (!status.ok()) return status;
  std::vector<T> want;
  for (int r : group.ranks()) {
    std::vector<T> part = Input<T>(r, count);
    want.insert(want.end(), part.begin(), part.end());
  }
  return Compare(what, recv, want);
}

// Member i contributes (i * 3 + count) % 7 elements when count > 0 (some members none at all).
inline std::vector<size_t> VariableCounts(int members, size_t count) {
  std::vector<size_t> counts(static_cast<size_t>(members));
  for (int i = 0; i < members; ++i) {
    counts[static_cast<size_t>(i)] =
        count == 0 ? 0 : (static_cast<size_t>(i) * 3 + count) % 7 + (i == 0 ? count : 0);
  }
  return counts;
}

template <typename T>
absl::Status AllGatherVT(Communicator& comm, const Group& group, size_t count) {
  const std::vector<size_t> counts = VariableCounts(group.size(), count);
  const size_t total = std::accumulate(counts.begin(), counts.end(), size_t{0});
  const std::string what = Label(comm, "AllGatherV", group, DataTypeOf<T>::value, total);
  const int me = *group.IndexOf(comm.rank());
  std::vector<T> send = Input<T>(comm.rank(), counts[static_cast<size_t>(me)]);
  std::vector<T> recv(total, FromInt<T>(99));
  absl::Status status = comm.AllGatherV(group, send, recv, counts);
  if (!status.ok()) return status;
  std::vector<T> want;
  for (int i = 0; i < group.size(); ++i) {
    std::vector<T> part = Input<T>(group.world_rank(i), counts[static_cast<size_t>(i)]);
    want.insert(want.end(), part.begin(), part.end());
  }
  return Compare(what, recv, want);
}

template <typename T>
absl::Status ReduceScatterT(Communicator& comm, const Group& group, ReduceOp op, size_t block,
                            bool in_place) {
  const std::string what = Label(
      comm,
      absl::StrCat(in_place ? "ReduceScatter(in place)/" : "ReduceScatter/", ReduceOpName(op)),
      group, DataTypeOf<T>::value, block);
  const size_t n = static_cast<size_t>(group.size());
  const size_t me = static_cast<size_t>(*group.IndexOf(comm.rank()));
  std::vector<T> send = Input<T>(comm.rank(), block * n);
  std::vector<T> recv(block, FromInt<T>(99));
  absl::Status status;
  if (in_place) {
    status = comm.ReduceScatter(group, send, BufferView(send).Slice(me * block, block), op);
    std::copy(send.begin() + static_cast<ptrdiff_t>(me * block),
              send.begin() + static_cast<ptrdiff_t>((me + 1) * block), recv.begin());
  } else {
    status = comm.ReduceScatter(group, send, recv, op);
  }
  if (!status.ok()) return status;
  return Compare(what, recv, Expected<T>(group, op, me * block, block));
}

template <typename T>
absl::Status BroadcastT(Communicator& comm, const Group& group, size_t count, int root) {
  const std::string what =
      Label(comm, absl::StrCat("Broadcast from ", root), group, DataTypeOf<T>::value, count);
  std::vector<T> data =
      comm.rank() == root ? Input<T>(root, count) : std::vector<T>(count, FromInt<T>(99));
  absl::Status status = comm.Broadcast(group, data, root);
  if (!status.ok()) return status;
  return Compare(what, data, Input<T>(root, count));
}

// Each member sends to the next member of the ring and receives from the previous one with
// ISend/IRecv, or all at once with Exchange.
template <typename T>
absl::Status RingT(Communicator& comm, const Group& ring, size_t count, int tag,
                   bool use_exchange) {
  const std::string what = Label(comm, use_exchange ? "ring Exchange" : "ring ISend/IRecv", ring,
                                 DataTypeOf<T>::value, count);
  const int me = *ring.IndexOf(comm.rank());
  const int next = ring.NextOf(me);
  const int prev = ring.PrevOf(me);
  std::vector<T> send = Input<T>(comm.rank(), count, tag);
  std::vector<T> recv(count, FromInt<T>(99));
  absl::Status status;
  if (use_exchange) {
    const SendSpec sends[] = {{send, next, tag}};
    const RecvSpec recvs[] = {{recv, prev, tag}};
    status = comm.Exchange(sends, recvs);
  } else {
    absl::StatusOr<std::unique_ptr<Request>> r = comm.IRecv(recv, prev, tag);
    if (!r.ok()) return r.status();
    absl::StatusOr<std::unique_ptr<Request>> s = comm.ISend(send, next, tag);
    if (!s.ok()) return s.status();
    // Exercise Test() before waiting: it must never block.
    const absl::Time give_up = absl::Now() + comm.timeout();
    while (!(*r)->Test() && absl::Now() < give_up) std::this_thread::yield();
    status = (*r)->Wait();
    absl::Status sent = (*s)->Wait();
    if (status.ok()) status = sent;
  }
  if (!status.ok()) return status;
  return Compare(what, recv, Input<T>(prev, count, tag));
}

// Blocking Send/Recv between pairs (0,1), (2,3), ...: the lower rank sends first.
template <typename T>
absl::Status PairSendRecvT(Communicator& comm, size_t count) {
  const int partner = comm.rank() ^ 1;
  if (partner >= comm.size()) return absl::OkStatus();
  const std::string what =
      Label(comm, "Send/Recv pair", comm.world_group(), DataTypeOf<T>::value, count);
  std::vector<T> mine = Input<T>(comm.rank(), count);
  std::vector<T> theirs(count, FromInt<T>(99));
  absl::Status status;
  if (comm.rank() < partner) {
    status = comm.Send(mine, partner, 3);
    if (status.ok()) status = comm.Recv(theirs, partner, 4);
  } else {
    status = comm.Recv(theirs, partner, 3);
    if (status.ok()) status = comm.Send(mine, partner, 4);
  }
  if (!status.ok()) return status;
  return Compare(what, theirs, Input<T>(partner, count));
}

// Calls fn.template operator()<T>() with the element type of `type`.
template <typename Fn>
absl::Status ForType(DataType type, Fn&& fn) {
  switch (type) {
    case DataType::kFloat32:
      return fn.template operator()<float>();
    case DataType::kBFloat16:
      return fn.template operator()<BFloat16>();
    case DataType::kInt32:
      return fn.template operator()<int32_t>();
    case DataType::kInt64:
      return fn.template operator()<int64_t>();
  }
  return absl::InternalError("unknown type");
}

inline constexpr DataType kAllTypes[] = {DataType::kFloat32, DataType::kBFloat16, DataType::kInt32,
                                         DataType::kInt64};
inline constexpr ReduceOp kAllOps[] = {ReduceOp::kSum, ReduceOp::kAvg, ReduceOp::kMax};

// The groups collectives are checked over: the world, the world in reverse order, and (with 3 or
// more ranks) every other rank in a shuffled order, whose non-members sit the call out.
inline std::vector<Group> CheckedGroups(int world_size) {
  std::vector<Group> groups = {Group::World(world_size)};
  if (world_size > 1) {
    std::vector<int> reversed(static_cast<size_t>(world_size));
    std::iota(reversed.rbegin(), reversed.rend(), 0);
    groups.push_back(*Group::Make(reversed));
  }
  if (world_size > 2) {
    std::vector<int> odd_out;
    for (int r = world_size - 1; r >= 0; r -= 2) odd_out.push_back(r);
    std::rotate(odd_out.begin(), odd_out.begin() + 1, odd_out.end());
    groups.push_back(*Group::Make(odd_out));
  }
  return groups;
}

// One operation of the suite, for every type (and op) over every checked group this rank belongs
// to, at one size.
enum class Operation {
  kSendRecv,
  kIsendIrecv,
  kExchange,
  kAllReduce,
  kAllGather,
  kAllGatherV,
  kReduceScatter,
  kBroadcast,
  kBarrier,
};

inline absl::string_view OperationName(Operation op) {
  switch (op) {
    case Operation::kSendRecv:
      return "SendRecv";
    case Operation::kIsendIrecv:
      return "IsendIrecv";
    case Operation::kExchange:
      return "Exchange";
    case Operation::kAllReduce:
      return "AllReduce";
    case Operation::kAllGather:
      return "AllGather";
    case Operation::kAllGatherV:
      return "AllGatherV";
    case Operation::kReduceScatter:
      return "ReduceScatter";
    case Operation::kBroadcast:
      return "Broadcast";
    case Operation::kBarrier:
      return "Barrier";
  }
  return "?";
}

// `count` is the size of the buffer each member ends up with; AllGather and ReduceScatter use
// blocks of count / members (at least one element when count > 0).
inline absl::Status CheckOperation(Communicator& comm, Operation operation, size_t count,
                                   std::span<const DataType> types) {
  for (const Group& group : CheckedGroups(comm.size())) {
    if (!group.Contains(comm.rank())) continue;
    const size_t block =
        count == 0 ? 0 : std::max<size_t>(1, count / static_cast<size_t>(group.size()));
    for (DataType type : types) {
      absl::Status status = ForType(type, [&]<typename T>() -> absl::Status {
        switch (operation) {
          case Operation::kSendRecv:
            // Pairs are fixed by world rank: once, with the world group.
            if (group.size() != comm.size() || group.world_rank(0) != 0) return absl::OkStatus();
            return PairSendRecvT<T>(comm, count);
          case Operation::kIsendIrecv:
            return RingT<T>(comm, group, count, 11, /*use_exchange=*/false);
          case Operation::kExchange:
            return RingT<T>(comm, group, count, 12, /*use_exchange=*/true);
          case Operation::kAllReduce:
            for (ReduceOp op : kAllOps) {
              absl::Status s = AllReduceT<T>(comm, group, op, count);
              if (!s.ok()) return s;
            }
            return absl::OkStatus();
          case Operation::kAllGather:
            for (bool in_place : {false, true}) {
              absl::Status s = AllGatherT<T>(comm, group, block, in_place);
              if (!s.ok()) return s;
            }
            return absl::OkStatus();
          case Operation::kAllGatherV:
            return AllGatherVT<T>(comm, group, count);
          case Operation::kReduceScatter:
            for (ReduceOp op : kAllOps) {
              for (bool in_place : {false, true}) {
                absl::Status s = ReduceScatterT<T>(comm, group, op, block, in_place);
                if (!s.ok()) return s;
              }
            }
            return absl::OkStatus();
          case Operation::kBroadcast:
            // Roots at both ends of the group.
            for (int root : {group.world_rank(0), group.world_rank(group.size() - 1)}) {
              absl::Status s = BroadcastT<T>(comm, group, count, root);
              if (!s.ok()) return s;
            }
            return absl::OkStatus();
          case Operation::kBarrier:
            return comm.Barrier(group);
        }
        return absl::InternalError("unknown operation");
      });
      if (!status.ok()) return status;
      if (operation == Operation::kBarrier) break;  // no data: once per group
    }
  }
  return absl::OkStatus();
}

// Several rings at once over a shuffled world: ring A takes the first half of a permutation,
// ring B the rest (a ring of one sends to itself), and with 4 or more ranks ring C crosses both,
// so some ranks take part in two rings in one Exchange, told apart by tag. Each ring rotates its
// blocks through all members, checking each step.
inline absl::Status CheckConcurrentRings(Communicator& comm, size_t count) {
  const int n = comm.size();
  std::vector<int> perm(static_cast<size_t>(n));
  std::iota(perm.begin(), perm.end(), 0);
  for (size_t i = 1; i < perm.size(); ++i) std::swap(perm[i], perm[(i * 5 + 3) % (i + 1)]);
  const size_t half = std::max<size_t>(1, perm.size() / 2);
  std::vector<Group> rings = {
      *Group::Make({perm.begin(), perm.begin() + static_cast<ptrdiff_t>(half)})};
  if (half < perm.size())
    rings.push_back(*Group::Make({perm.begin() + static_cast<ptrdiff_t>(half), perm.end()}));
  if (n >= 4) rings.push_back(*Group::Make({perm[half - 1], perm[n - 1], perm[0]}));

  struct Member {
    int ring = 0;
    const Group* group = nullptr;
    int index = 0;
    std::vector<float> block, incoming;
  };
  std::vector<Member> mine;
  for (size_t k = 0; k < rings.size(); ++k) {
    std::optional<int> index = rings[k].IndexOf(comm.rank());
    if (!index.has_value()) continue;
    mine.push_back({static_cast<int>(k), &rings[k], *index,
                    Input<float>(comm.rank(), count, static_cast<int>(k)),
                    std::vector<float>(count)});
  }
  int steps = 0;
  for (const Group& g : rings) steps = std::max(steps, g.size());
  for (int step = 1; step < steps; ++step) {
    std::vector<SendSpec> sends;
    std::vector<RecvSpec> recvs;
    for (Member& m : mine) {
      if (step >= m.group->size()) continue;
      const int tag = 100 + m.ring;
      sends.push_back({m.block, m.group->NextOf(m.index), tag});
      recvs.push_back({m.incoming, m.group->PrevOf(m.index), tag});
    }
    absl::Status status = comm.Exchange(sends, recvs);
    if (!status.ok()) return status;
    for (Member& m : mine) {
      if (step >= m.group->size()) continue;
      std::swap(m.block, m.incoming);
      const int size = m.group->size();
      const int origin = m.group->world_rank((m.index - step % size + size) % size);
      absl::Status s = Compare(absl::StrFormat("ring %d %s step %d on rank %d", m.ring,
                                               m.group->ToString(), step, comm.rank()),
                               m.block, Input<float>(origin, count, m.ring));
      if (!s.ok()) return s;
    }
  }
  return absl::OkStatus();
}

}  // namespace loom::comm_checks

#endif  // LOOM_TESTS_RUNTIME_COMM_CHECKS_H_
