#include "runtime/communicator.h"

#include <numeric>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace loom {
namespace {

bool Overlaps(const void* a, size_t a_bytes, const void* b, size_t b_bytes) {
  const auto a0 = reinterpret_cast<uintptr_t>(a);
  const auto b0 = reinterpret_cast<uintptr_t>(b);
  return a_bytes > 0 && b_bytes > 0 && a0 < b0 + b_bytes && b0 < a0 + a_bytes;
}

}  // namespace

absl::Status WaitAll(std::span<const std::unique_ptr<Request>> requests, absl::Time deadline) {
  absl::Status first;
  for (const std::unique_ptr<Request>& request : requests) {
    absl::Status status = request->WaitUntil(deadline);
    if (first.ok()) first = std::move(status);
  }
  return first;
}

Communicator::Communicator(WorldInfo world, absl::Duration timeout, int max_tag)
    : world_(std::move(world)),
      world_group_(Group::World(world_.size)),
      timeout_(timeout),
      max_tag_(max_tag) {}

std::string Communicator::DescribeP2p(absl::string_view op, DataType type, size_t count, int peer,
                                      int tag) const {
  const bool is_send = op.find("Send") != absl::string_view::npos;
  return absl::StrFormat("%s(%s x %d %s rank %d, tag %d) on rank %d", op, DataTypeName(type), count,
                         is_send ? "to" : "from", peer, tag, rank());
}

absl::Status Communicator::CheckP2p(absl::string_view op, const void* data, size_t count,
                                    DataType type, int peer, int tag) const {
  const std::string what = DescribeP2p(op, type, count, peer, tag);
  if (peer < 0 || peer >= size()) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, ": peer is not a rank of the world of ", size()));
  }
  if (tag < 0 || tag > max_tag_) {
    return absl::InvalidArgumentError(absl::StrCat(
        what, ": tag is outside [0, ", max_tag_, "] of the ", BackendName(backend()), " backend"));
  }
  if (data == nullptr && count > 0) {
    return absl::InvalidArgumentError(absl::StrCat(what, ": null buffer"));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<Request>> Communicator::ISend(ConstBufferView data, int peer,
                                                             int tag) {
  absl::Status status = CheckP2p("ISend", data.data(), data.count(), data.type(), peer, tag);
  if (!status.ok()) return status;
  return PostSend(data, peer, tag);
}

absl::StatusOr<std::unique_ptr<Request>> Communicator::IRecv(BufferView data, int peer, int tag) {
  absl::Status status = CheckP2p("IRecv", data.data(), data.count(), data.type(), peer, tag);
  if (!status.ok()) return status;
  return PostRecv(data, peer, tag);
}

absl::Status Communicator::Send(ConstBufferView data, int peer, int tag) {
  absl::StatusOr<std::unique_ptr<Request>> request = ISend(data, peer, tag);
  if (!request.ok()) return request.status();
  return (*request)->Wait();
}

absl::Status Communicator::Recv(BufferView data, int peer, int tag) {
  absl::StatusOr<std::unique_ptr<Request>> request = IRecv(data, peer, tag);
  if (!request.ok()) return request.status();
  return (*request)->Wait();
}

absl::Status Communicator::Exchange(std::span<const SendSpec> sends,
                                    std::span<const RecvSpec> recvs) {
  for (const SendSpec& s : sends) {
    absl::Status status =
        CheckP2p("Exchange/Send", s.data.data(), s.data.count(), s.data.type(), s.peer, s.tag);
    if (!status.ok()) return status;
  }
  for (const RecvSpec& r : recvs) {
    absl::Status status =
        CheckP2p("Exchange/Recv", r.data.data(), r.data.count(), r.data.type(), r.peer, r.tag);
    if (!status.ok()) return status;
  }
  return RunExchange(sends, recvs);
}

absl::Status Communicator::RunExchange(std::span<const SendSpec> sends,
                                       std::span<const RecvSpec> recvs) {
  const absl::Time deadline = absl::Now() + timeout_;
  std::vector<std::unique_ptr<Request>> requests;
  requests.reserve(sends.size() + recvs.size());
  absl::Status posted;
  // Receives first, so that a peer's synchronous send can match as early as possible.
  for (const RecvSpec& r : recvs) {
    absl::StatusOr<std::unique_ptr<Request>> request = PostRecv(r.data, r.peer, r.tag);
    if (!request.ok()) {
      posted = request.status();
      break;
    }
    requests.push_back(*std::move(request));
  }
  for (size_t i = 0; posted.ok() && i < sends.size(); ++i) {
    absl::StatusOr<std::unique_ptr<Request>> request =
        PostSend(sends[i].data, sends[i].peer, sends[i].tag);
    if (!request.ok()) {
      posted = request.status();
      break;
    }
    requests.push_back(*std::move(request));
  }
  // A failed post leaves the already posted requests to their destructors, which withdraw them.
  if (!posted.ok()) return posted;
  return WaitAll(requests, deadline);
}

absl::Status Communicator::PrepareCall(const Group& group, CollectiveCall& call) const {
  call.group = &group;
  const std::optional<int> index = group.IndexOf(rank());
  call.index = index.value_or(-1);
  std::string args;
  switch (call.kind) {
    case CollectiveKind::kAllReduce:
      args = absl::StrFormat("%s, %s x %d", ReduceOpName(call.op), DataTypeName(call.recv.type()),
                             call.recv.count());
      break;
    case CollectiveKind::kReduceScatter:
      args = absl::StrFormat("%s, %s x %d -> %d", ReduceOpName(call.op),
                             DataTypeName(call.send.type()), call.send.count(), call.recv.count());
      break;
    case CollectiveKind::kAllGather:
    case CollectiveKind::kAllGatherV:
      args = absl::StrFormat("%s x %d -> %d", DataTypeName(call.send.type()), call.send.count(),
                             call.recv.count());
      break;
    case CollectiveKind::kBroadcast:
      args = absl::StrFormat("%s x %d from rank %d", DataTypeName(call.recv.type()),
                             call.recv.count(), call.root);
      break;
    case CollectiveKind::kBarrier:
      break;
  }
  call.what = absl::StrFormat("%s(%s) over group %s on rank %d", CollectiveName(call.kind), args,
                              group.ToString(), rank());
  auto invalid = [&](absl::string_view reason) {
    return absl::InvalidArgumentError(absl::StrCat(call.what, ": ", reason));
  };
  for (int r : group.ranks()) {
    if (r >= size()) return invalid(absl::StrCat("rank ", r, " is outside the world of ", size()));
  }
  if (!index.has_value()) return invalid("this rank is not a member of the group");
  if (call.send.type() != call.recv.type()) {
    return invalid(absl::StrCat("send is ", DataTypeName(call.send.type()), " but recv is ",
                                DataTypeName(call.recv.type())));
  }
  if ((call.send.data() == nullptr && call.send.count() > 0) ||
      (call.recv.data() == nullptr && call.recv.count() > 0)) {
    return invalid("null buffer");
  }
  const size_t n = static_cast<size_t>(group.size());
  const size_t me = static_cast<size_t>(call.index);
  switch (call.kind) {
    case CollectiveKind::kAllGather:
    case CollectiveKind::kAllGatherV: {
      size_t offset = me * call.send.count();
      if (call.kind == CollectiveKind::kAllGather) {
        if (call.recv.count() != call.send.count() * n) {
          return invalid(absl::StrCat("recv must hold ", call.send.count() * n, " elements"));
        }
      } else {
        if (call.counts.size() != n) {
          return invalid(
              absl::StrCat("counts has ", call.counts.size(), " entries for ", n, " members"));
        }
        if (call.counts[me] != call.send.count()) {
          return invalid(absl::StrCat("counts names ", call.counts[me],
                                      " elements for this rank, which sends ", call.send.count()));
        }
        const size_t total = std::accumulate(call.counts.begin(), call.counts.end(), size_t{0});
        if (call.recv.count() != total) {
          return invalid(absl::StrCat("recv must hold the sum of counts, ", total, " elements"));
        }
        offset = std::accumulate(call.counts.begin(), call.counts.begin() + call.index, size_t{0});
      }
      const void* slot = call.recv.Slice(offset, call.send.count()).data();
      if (Overlaps(call.send.data(), call.send.bytes(), call.recv.data(), call.recv.bytes())) {
        if (call.send.data() != slot) {
          return invalid("send overlaps recv other than as this rank's own slot");
        }
        call.in_place = true;
      }
      break;
    }
    case CollectiveKind::kReduceScatter: {
      if (call.send.count() != call.recv.count() * n) {
        return invalid(absl::StrCat("send must hold recv count x ", n, " = ", call.recv.count() * n,
                                    " elements"));
      }
      const void* block = call.send.Slice(me * call.recv.count(), call.recv.count()).data();
      if (Overlaps(call.send.data(), call.send.bytes(), call.recv.data(), call.recv.bytes())) {
        if (call.recv.data() != block) {
          return invalid("recv overlaps send other than as this rank's own block");
        }
        call.in_place = true;
      }
      break;
    }
    case CollectiveKind::kBroadcast: {
      const std::optional<int> root_index = group.IndexOf(call.root);
      if (!root_index.has_value()) return invalid("the root is not a member of the group");
      call.root = *root_index;
      break;
    }
    case CollectiveKind::kAllReduce:
    case CollectiveKind::kBarrier:
      break;
  }
  return absl::OkStatus();
}

absl::Status Communicator::Collect(const Group& group, CollectiveCall call) {
  if (absl::Status status = PrepareCall(group, call); !status.ok()) return status;
  return RunCollective(call);
}

absl::Status Communicator::AllReduce(const Group& group, BufferView data, ReduceOp op) {
  CollectiveCall call;
  call.kind = CollectiveKind::kAllReduce;
  call.send = data;
  call.recv = data;
  call.op = op;
  return Collect(group, std::move(call));
}

absl::Status Communicator::AllGather(const Group& group, ConstBufferView send, BufferView recv) {
  CollectiveCall call;
  call.kind = CollectiveKind::kAllGather;
  call.send = send;
  call.recv = recv;
  return Collect(group, std::move(call));
}

absl::Status Communicator::AllGatherV(const Group& group, ConstBufferView send, BufferView recv,
                                      std::span<const size_t> counts) {
  CollectiveCall call;
  call.kind = CollectiveKind::kAllGatherV;
  call.send = send;
  call.recv = recv;
  call.counts = counts;
  return Collect(group, std::move(call));
}

absl::Status Communicator::ReduceScatter(const Group& group, ConstBufferView send, BufferView recv,
                                         ReduceOp op) {
  CollectiveCall call;
  call.kind = CollectiveKind::kReduceScatter;
  call.send = send;
  call.recv = recv;
  call.op = op;
  return Collect(group, std::move(call));
}

absl::Status Communicator::Broadcast(const Group& group, BufferView data, int root) {
  CollectiveCall call;
  call.kind = CollectiveKind::kBroadcast;
  call.send = data;
  call.recv = data;
  call.root = root;
  return Collect(group, std::move(call));
}

absl::Status Communicator::Barrier(const Group& group) {
  CollectiveCall call;
  call.kind = CollectiveKind::kBarrier;
  return Collect(group, std::move(call));
}

absl::Status Communicator::PrepareGroup(const Group& group) {
  const std::optional<int> index = group.IndexOf(rank());
  const std::string what = absl::StrFormat("PrepareGroup(%s) on rank %d", group.ToString(), rank());
  if (!index.has_value()) {
    return absl::InvalidArgumentError(absl::StrCat(what, ": this rank is not a member"));
  }
  for (int r : group.ranks()) {
    if (r >= size()) {
      return absl::InvalidArgumentError(
          absl::StrCat(what, ": rank ", r, " is outside the world of ", size()));
    }
  }
  return RunPrepareGroup(group, *index);
}

}  // namespace loom
