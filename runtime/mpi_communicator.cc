#include "runtime/mpi_communicator.h"

#include <mpi.h>

#include <climits>
#include <functional>
#include <memory>
#include <optional>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/synchronization/mutex.h"
#include "runtime/mpi_context.h"
#include "runtime/mpi_session.h"
#include "runtime/reduce.h"

namespace loom {
namespace {

// A posted MPI send or receive. Sizes are checked on arrival: MPI reports a longer message as
// truncation and a shorter one through the received element count.
class MpiRequest final : public Request {
 public:
  MpiRequest(MpiContext* context, MPI_Request request, bool is_recv, DataType type, size_t count,
             int peer, int tag, std::string what)
      : Request(context->timeout()),
        context_(context),
        request_(request),
        is_recv_(is_recv),
        type_(type),
        count_(count),
        peer_(peer),
        tag_(tag),
        what_(std::move(what)) {}

  // An unfinished receive is cancelled; an unfinished send is waited for (MPI cannot withdraw
  // one), at most the timeout.
  ~MpiRequest() override {
    if (result_.has_value()) return;
    (void)WaitUntil(is_recv_ ? absl::Now() : absl::Now() + context_->timeout());
  }

  absl::Status WaitUntil(absl::Time deadline) override {
    if (result_.has_value()) return *result_;
    MPI_Status status;
    int rc = MPI_SUCCESS;
    if (context_->Poll(request_, deadline, &status, &rc)) {
      result_ = Outcome(rc, status);
      return *result_;
    }
    absl::Status timed_out = absl::DeadlineExceededError(absl::StrFormat(
        "%s: timed out (timeout %s): rank %d posted no matching %s with tag %d", what_,
        absl::FormatDuration(context_->timeout()), peer_, is_recv_ ? "send" : "receive", tag_));
    if (!is_recv_) {
      // The send stays outstanding and may still read its buffer.
      context_->Break(timed_out);
      result_ = timed_out;
      return *result_;
    }
    int cancelled = 0;
    {
      absl::MutexLock lock(&MpiMutex());
      MPI_Cancel(&request_);
    }
    // Cancelling an unmatched receive completes at once; a receive matched meanwhile finishes
    // its transfer.
    if (!context_->Poll(request_, absl::Now() + context_->timeout(), &status, &rc)) {
      context_->Break(timed_out);
      result_ = timed_out;
      return *result_;
    }
    {
      absl::MutexLock lock(&MpiMutex());
      MPI_Test_cancelled(&status, &cancelled);
    }
    result_ = cancelled ? timed_out : Outcome(rc, status);
    return *result_;
  }

  bool Test() override {
    if (result_.has_value()) return true;
    MPI_Status status;
    int rc = MPI_SUCCESS;
    int flag = 0;
    {
      absl::MutexLock lock(&MpiMutex());
      rc = MPI_Test(&request_, &flag, &status);
    }
    if (flag == 0 && rc == MPI_SUCCESS) return false;
    result_ = Outcome(rc, status);
    return true;
  }

 private:
  absl::Status Outcome(int rc, const MPI_Status& status) const {
    int error_class = MPI_SUCCESS;
    MPI_Count received = 0;
    {
      absl::MutexLock lock(&MpiMutex());
      if (rc != MPI_SUCCESS) {
        MPI_Error_class(rc, &error_class);
      } else if (is_recv_) {
        MPI_Get_elements_x(&status, MpiDatatype(type_), &received);
      }
    }
    if (rc != MPI_SUCCESS) {
      if (error_class == MPI_ERR_TRUNCATE) {
        return absl::InvalidArgumentError(
            absl::StrFormat("%s: size mismatch: rank %d sent more than %s x %d", what_, peer_,
                            DataTypeName(type_), count_));
      }
      return absl::InternalError(absl::StrCat(what_, ": ", MpiErrorText(rc)));
    }
    if (!is_recv_) return absl::OkStatus();
    if (received == MPI_UNDEFINED || static_cast<size_t>(received) != count_) {
      return absl::InvalidArgumentError(
          absl::StrFormat("%s: size mismatch: rank %d sent %s elements", what_, peer_,
                          received == MPI_UNDEFINED ? std::string("a non-whole number of")
                                                    : absl::StrCat(received)));
    }
    return absl::OkStatus();
  }

  MpiContext* const context_;
  MPI_Request request_;
  const bool is_recv_;
  const DataType type_;
  const size_t count_;
  const int peer_;
  const int tag_;
  const std::string what_;
  std::optional<absl::Status> result_;
};

constexpr absl::string_view kMissing =
    "not every member joined; the members of a group must make the same collective calls on it in "
    "the same order";

// Tags of the messages of Reduce, on a group's own communicator: the members run the same
// collectives on it in the same order, and MPI keeps messages between two ranks in order.
constexpr int kReduceTag = 1;
constexpr int kGatherTag = 2;

absl::Status CheckCount(absl::string_view what, size_t count) {
  if (count > static_cast<size_t>(INT_MAX)) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, ": the mpi backend moves at most 2^31-1 elements per call"));
  }
  return absl::OkStatus();
}

class MpiCommunicator final : public Communicator {
 public:
  explicit MpiCommunicator(std::unique_ptr<MpiContext> context)
      : Communicator(context->world(), context->timeout(), context->max_tag()),
        context_(std::move(context)) {}

  Backend backend() const override { return Backend::kMpi; }

 protected:
  absl::StatusOr<std::unique_ptr<Request>> PostSend(ConstBufferView data, int peer,
                                                    int tag) override {
    return Post(/*is_recv=*/false, const_cast<void*>(data.data()), data.count(), data.type(), peer,
                tag);
  }

  absl::StatusOr<std::unique_ptr<Request>> PostRecv(BufferView data, int peer, int tag) override {
    return Post(/*is_recv=*/true, data.data(), data.count(), data.type(), peer, tag);
  }

  absl::Status RunCollective(const CollectiveCall& call) override;
  absl::Status Reduce(const CollectiveCall& call, MPI_Comm comm, absl::Time deadline);
  // Memory for the shares Reduce receives, kept between calls: a fresh buffer of tens of MiB costs
  // as much in page faults as the transfer itself. A call running while another holds it gets
  // its own.
  std::shared_ptr<std::vector<char>> TakeScratch(size_t bytes);
  void ReturnScratch(std::shared_ptr<std::vector<char>> scratch);

  absl::Status RunPrepareGroup(const Group& group, int index) override {
    absl::Status status = context_->CheckUsable(
        absl::StrFormat("PrepareGroup(%s) on rank %d", group.ToString(), rank()));
    if (!status.ok()) return status;
    return context_->GroupComm(group, index, absl::Now() + timeout()).status();
  }

 private:
  absl::StatusOr<std::unique_ptr<Request>> Post(bool is_recv, void* data, size_t count,
                                                DataType type, int peer, int tag) {
    std::string what = DescribeP2p(is_recv ? "Recv" : "Send", type, count, peer, tag);
    absl::Status status = context_->CheckUsable(what);
    if (!status.ok()) return status;
    status = CheckCount(what, count);
    if (!status.ok()) return status;
    MPI_Request request = MPI_REQUEST_NULL;
    int rc;
    {
      absl::MutexLock lock(&MpiMutex());
      // Standard-mode sends: MPI may buffer small ones, which the contract allows.
      rc = is_recv ? MPI_Irecv(data, static_cast<int>(count), MpiDatatype(type), peer, tag,
                               context_->p2p_comm(), &request)
                   : MPI_Isend(data, static_cast<int>(count), MpiDatatype(type), peer, tag,
                               context_->p2p_comm(), &request);
    }
    if (rc != MPI_SUCCESS) return absl::InternalError(absl::StrCat(what, ": ", MpiErrorText(rc)));
    return std::make_unique<MpiRequest>(context_.get(), request, is_recv, type, count, peer, tag,
                                        std::move(what));
  }

  std::unique_ptr<MpiContext> context_;
  absl::Mutex scratch_mu_;
  std::shared_ptr<std::vector<char>> scratch_ ABSL_GUARDED_BY(scratch_mu_);
};

std::shared_ptr<std::vector<char>> MpiCommunicator::TakeScratch(size_t bytes) {
  std::shared_ptr<std::vector<char>> scratch;
  {
    absl::MutexLock lock(&scratch_mu_);
    scratch = std::move(scratch_);
  }
  if (scratch == nullptr) scratch = std::make_shared<std::vector<char>>();
  if (scratch->size() < bytes) scratch->resize(bytes);
  return scratch;
}

void MpiCommunicator::ReturnScratch(std::shared_ptr<std::vector<char>> scratch) {
  absl::MutexLock lock(&scratch_mu_);
  if (scratch_ == nullptr || scratch_->size() < scratch->size()) scratch_ = std::move(scratch);
}

absl::Status MpiCommunicator::RunCollective(const CollectiveCall& call) {
  const absl::Time deadline = absl::Now() + timeout();
  absl::Status status = context_->CheckUsable(call.what);
  if (!status.ok()) return status;
  status = CheckCount(call.what, std::max(call.send.count(), call.recv.count()));
  if (!status.ok()) return status;
  absl::StatusOr<MPI_Comm> comm = context_->GroupComm(*call.group, call.index, deadline);
  if (!comm.ok()) return comm.status();
  status = context_->CheckAgreement(*comm, call, deadline);
  if (!status.ok()) return status;

  if (call.kind == CollectiveKind::kAllReduce || call.kind == CollectiveKind::kReduceScatter) {
    return Reduce(call, *comm, deadline);
  }
  const int n = call.group->size();
  const MPI_Datatype type = MpiDatatype(call.recv.type());
  const int recv_count = static_cast<int>(call.recv.count());
  const int send_count = static_cast<int>(call.send.count());
  std::shared_ptr<void> scratch;
  std::function<int(MPI_Request*)> start;
  switch (call.kind) {
    case CollectiveKind::kAllGather:
      start = [&](MPI_Request* r) {
        return call.in_place ? MPI_Iallgather(MPI_IN_PLACE, 0, MPI_DATATYPE_NULL, call.recv.data(),
                                              send_count, type, *comm, r)
                             : MPI_Iallgather(call.send.data(), send_count, type, call.recv.data(),
                                              send_count, type, *comm, r);
      };
      break;
    case CollectiveKind::kAllGatherV: {
      // Counts and displacements are read while the operation progresses.
      auto layout = std::make_shared<std::vector<int>>(2 * static_cast<size_t>(n));
      int offset = 0;
      for (int i = 0; i < n; ++i) {
        (*layout)[static_cast<size_t>(i)] = static_cast<int>(call.counts[static_cast<size_t>(i)]);
        (*layout)[static_cast<size_t>(n + i)] = offset;
        offset += (*layout)[static_cast<size_t>(i)];
      }
      scratch = layout;
      start = [&](MPI_Request* r) {
        const int* counts = layout->data();
        const int* displs = layout->data() + n;
        return call.in_place ? MPI_Iallgatherv(MPI_IN_PLACE, 0, MPI_DATATYPE_NULL, call.recv.data(),
                                               counts, displs, type, *comm, r)
                             : MPI_Iallgatherv(call.send.data(), send_count, type, call.recv.data(),
                                               counts, displs, type, *comm, r);
      };
      break;
    }
    case CollectiveKind::kBroadcast:
      start = [&](MPI_Request* r) {
        return MPI_Ibcast(call.recv.data(), recv_count, type, call.root, *comm, r);
      };
      break;
    case CollectiveKind::kBarrier:
      start = [&](MPI_Request* r) { return MPI_Ibarrier(*comm, r); };
      break;
    case CollectiveKind::kAllReduce:
    case CollectiveKind::kReduceScatter:
      break;
  }
  return context_->Run(call.what, deadline, kMissing, start, scratch);
}

absl::Status MpiCommunicator::Reduce(const CollectiveCall& call, MPI_Comm comm,
                                     absl::Time deadline) {
  const int n = call.group->size();
  const int me = call.index;
  const DataType type = call.recv.type();
  const size_t elem = DataTypeSize(type);
  const MPI_Datatype mpi_type = MpiDatatype(type);
  const bool all_reduce = call.kind == CollectiveKind::kAllReduce;
  // Member j reduces elements [Share(j).first, Share(j).second) of the input: for AllReduce an
  // even split of the buffer (as the local backend splits it), for ReduceScatter block j.
  auto share = [&](int j) -> std::pair<size_t, size_t> {
    const size_t count = call.recv.count();
    const auto i = static_cast<size_t>(j);
    const auto members = static_cast<size_t>(n);
    if (all_reduce) return {count * i / members, count * (i + 1) / members};
    return {count * i, count * (i + 1)};
  };
  const char* input = static_cast<const char*>(call.send.data());
  char* output = static_cast<char*>(call.recv.data());
  const auto [begin, end] = share(me);
  const size_t length = end - begin;
  // Slot of member j != me in `incoming`.
  auto slot = [me](int j) { return static_cast<size_t>(j < me ? j : j - 1); };
  std::shared_ptr<std::vector<char>> incoming =
      TakeScratch(length * elem * static_cast<size_t>(n - 1));

  // Round 1: every member sends each other member that member's share of its input.
  absl::Status status = context_->RunAll(
      call.what, deadline, kMissing,
      [&](std::vector<MPI_Request>& requests) {
        for (int j = 0; j < n; ++j) {
          if (j == me) continue;
          requests.push_back(MPI_REQUEST_NULL);
          int rc = MPI_Irecv(incoming->data() + slot(j) * length * elem, static_cast<int>(length),
                             mpi_type, j, kReduceTag, comm, &requests.back());
          if (rc != MPI_SUCCESS) return rc;
          const auto [b, e] = share(j);
          requests.push_back(MPI_REQUEST_NULL);
          rc = MPI_Isend(input + b * elem, static_cast<int>(e - b), mpi_type, j, kReduceTag, comm,
                         &requests.back());
          if (rc != MPI_SUCCESS) return rc;
        }
        return MPI_SUCCESS;
      },
      incoming);
  // After a timeout MPI may still write the scratch: the context keeps it, and so it is not reused.
  if (!status.ok()) return status;
  std::vector<const void*> inputs;
  for (int j = 0; j < n; ++j) {
    inputs.push_back(j == me ? input + begin * elem : incoming->data() + slot(j) * length * elem);
  }
  ReduceInOrder(type, call.op, inputs, all_reduce ? output + begin * elem : output, 0, length);
  ReturnScratch(std::move(incoming));
  if (!all_reduce) return absl::OkStatus();

  // Round 2: every member sends its reduced share to all others.
  return context_->RunAll(call.what, deadline, kMissing, [&](std::vector<MPI_Request>& requests) {
    for (int j = 0; j < n; ++j) {
      if (j == me) continue;
      const auto [b, e] = share(j);
      requests.push_back(MPI_REQUEST_NULL);
      int rc = MPI_Irecv(output + b * elem, static_cast<int>(e - b), mpi_type, j, kGatherTag, comm,
                         &requests.back());
      if (rc != MPI_SUCCESS) return rc;
      requests.push_back(MPI_REQUEST_NULL);
      rc = MPI_Isend(output + begin * elem, static_cast<int>(length), mpi_type, j, kGatherTag, comm,
                     &requests.back());
      if (rc != MPI_SUCCESS) return rc;
    }
    return MPI_SUCCESS;
  });
}

}  // namespace

absl::StatusOr<std::unique_ptr<Communicator>> MakeMpiCommunicator(absl::Duration timeout) {
  absl::StatusOr<std::unique_ptr<MpiContext>> context = MpiContext::Create(timeout);
  if (!context.ok()) return context.status();
  return std::make_unique<MpiCommunicator>(*std::move(context));
}

}  // namespace loom
