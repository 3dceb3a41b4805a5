#include "runtime/nccl_communicator.h"

#include <cuda_runtime.h>
#include <mpi.h>
#include <nccl.h>

#include <array>
#include <map>
#include <optional>
#include <span>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/synchronization/mutex.h"
#include "runtime/mpi_context.h"
#include "runtime/mpi_session.h"

namespace loom {
namespace {

// Header messages travel on the MPI point-to-point communicator with this tag; between two ranks
// they arrive in the order they were sent, as the NCCL messages they announce.
constexpr int kHeaderTag = 0;

ncclDataType_t NcclType(DataType type) {
  switch (type) {
    case DataType::kFloat32:
      return ncclFloat32;
    case DataType::kBFloat16:
      return ncclBfloat16;
    case DataType::kInt32:
      return ncclInt32;
    case DataType::kInt64:
      return ncclInt64;
  }
  return ncclFloat32;
}

// NCCL's average scales by 1/n before summing floats (and divides integer sums): results can
// differ from the CPU backends in the last bit.
ncclRedOp_t NcclOp(ReduceOp op) {
  switch (op) {
    case ReduceOp::kSum:
      return ncclSum;
    case ReduceOp::kAvg:
      return ncclAvg;
    case ReduceOp::kMax:
      return ncclMax;
  }
  return ncclSum;
}

std::string NcclText(ncclResult_t result, ncclComm_t comm) {
  std::string text = ncclGetErrorString(result);
  const char* last = comm != nullptr ? ncclGetLastError(comm) : nullptr;
  if (last != nullptr && last[0] != '\0') absl::StrAppend(&text, " (", last, ")");
  return text;
}

absl::Status CudaStatus(cudaError_t error, absl::string_view what) {
  if (error == cudaSuccess) return absl::OkStatus();
  cudaGetLastError();  // clears the error so later calls do not report it again
  return absl::InternalError(absl::StrCat(what, ": CUDA error: ", cudaGetErrorString(error)));
}

// Waits until a non-blocking NCCL communicator has finished its current call (initialisation,
// enqueuing a launch, finalising). After a failure the caller aborts the communicator.
absl::Status AwaitNccl(ncclComm_t comm, absl::Time deadline, absl::string_view what,
                       absl::Duration timeout) {
  ncclResult_t state = ncclInProgress;
  const bool done = PollUntil(deadline, [&] {
    if (ncclCommGetAsyncError(comm, &state) != ncclSuccess) state = ncclInternalError;
    return state != ncclInProgress;
  });
  if (!done) {
    return absl::DeadlineExceededError(
        absl::StrFormat("%s: timed out (timeout %s) inside NCCL; the communicator was aborted",
                        what, absl::FormatDuration(timeout)));
  }
  if (state != ncclSuccess) {
    return absl::InternalError(absl::StrCat(what, ": NCCL error: ", NcclText(state, comm)));
  }
  return absl::OkStatus();
}

// Marks when the operations launched on the stream before it have finished.
struct NcclBatch {
  cudaEvent_t event = nullptr;
  ~NcclBatch() {
    if (event != nullptr) cudaEventDestroy(event);
  }
};

struct NcclTransfer {
  explicit NcclTransfer(MpiContext* context) : mpi(context) {}
  // A header still in flight is cancelled (receives) or left to finish (sends); MPI may touch its
  // memory until then, so the context keeps that.
  ~NcclTransfer() {
    if (header_request == MPI_REQUEST_NULL) return;
    {
      absl::MutexLock lock(&MpiMutex());
      if (is_recv) MPI_Cancel(&header_request);
      MPI_Request_free(&header_request);
    }
    mpi->Abandon(header);
  }

  MpiContext* const mpi;
  bool is_recv = false;
  void* data = nullptr;
  size_t count = 0;
  DataType type = DataType::kFloat32;
  int peer = 0;
  int tag = 0;
  std::string what;
  // Sends announce {tag, type, count}; receives get the announcement of the peer's next send.
  std::shared_ptr<std::array<int64_t, 3>> header = std::make_shared<std::array<int64_t, 3>>();
  MPI_Request header_request = MPI_REQUEST_NULL;
  bool header_done = false;
  std::shared_ptr<NcclBatch> batch;  // set at launch
  std::optional<absl::Status> result;
};

class NcclCommunicator;

class NcclRequest final : public Request {
 public:
  NcclRequest(NcclCommunicator* communicator, std::shared_ptr<NcclTransfer> transfer,
              absl::Duration timeout)
      : Request(timeout), communicator_(communicator), transfer_(std::move(transfer)) {}
  ~NcclRequest() override;

  absl::Status WaitUntil(absl::Time deadline) override;
  bool Test() override;

 private:
  NcclCommunicator* const communicator_;
  std::shared_ptr<NcclTransfer> transfer_;
};

class NcclCommunicator final : public Communicator {
 public:
  static absl::StatusOr<std::unique_ptr<Communicator>> Create(absl::Duration timeout);
  ~NcclCommunicator() override;

  Backend backend() const override { return Backend::kNccl; }

  absl::Status WaitTransfer(NcclTransfer& transfer, absl::Time deadline);
  bool TestTransfer(NcclTransfer& transfer);

 protected:
  absl::StatusOr<std::unique_ptr<Request>> PostSend(ConstBufferView data, int peer,
                                                    int tag) override;
  absl::StatusOr<std::unique_ptr<Request>> PostRecv(BufferView data, int peer, int tag) override;
  // Posts everything, then launches it as one NCCL group once every receive's header is in:
  // messages that depend on one another (a ring step) must be launched together.
  absl::Status RunExchange(std::span<const SendSpec> sends,
                           std::span<const RecvSpec> recvs) override;
  absl::Status RunCollective(const CollectiveCall& call) override;
  absl::Status RunPrepareGroup(const Group& group, int index) override;

 private:
  NcclCommunicator(std::unique_ptr<MpiContext> mpi, int device)
      : Communicator(mpi->world(), mpi->timeout(), INT_MAX),
        mpi_(std::move(mpi)),
        device_(device) {}

  absl::Status Initialize();
  absl::Status CheckDeviceBuffer(const void* data, size_t count, absl::string_view what) const;
  std::shared_ptr<NcclTransfer> MakeTransfer(bool is_recv, const void* data, size_t count,
                                             DataType type, int peer, int tag);
  absl::StatusOr<std::unique_ptr<Request>> Post(std::shared_ptr<NcclTransfer> transfer);
  // Makes an NCCL communicator of `members` ranks among which this one is `index`, the first
  // member's unique id broadcast over `mpi_comm`.
  absl::StatusOr<ncclComm_t> InitComm(MPI_Comm mpi_comm, int members, int index,
                                      absl::Time deadline, absl::string_view what);
  absl::StatusOr<ncclComm_t> GroupComm(const Group& group, int index, absl::Time deadline);
  // Launches, as one NCCL group, every pending send and every pending receive whose header has
  // arrived. With a deadline (a Wait or Exchange), first waits until then for the headers of the
  // receives among `targets`, withdrawing those whose header does not come; without (a Test), only
  // looks. Outcomes land in the transfers' results.
  void Flush(std::span<NcclTransfer* const> targets, std::optional<absl::Time> deadline);
  // Whether the header of a pending receive has arrived (checked once, or until `deadline`).
  bool HeaderArrived(NcclTransfer& transfer, absl::Time deadline)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Polls `event` until it completes; a timeout aborts `comm` and breaks this communicator.
  absl::Status AwaitEvent(cudaEvent_t event, ncclComm_t comm, absl::Time deadline,
                          absl::string_view what, absl::string_view on_timeout);
  void Abort(ncclComm_t comm, const absl::Status& why);
  void AbortLocked(ncclComm_t comm, const absl::Status& why) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  std::unique_ptr<MpiContext> mpi_;
  const int device_;
  cudaStream_t stream_ = nullptr;
  absl::Mutex mu_;  // launches onto the stream and the communicators
  ncclComm_t world_comm_ ABSL_GUARDED_BY(mu_) = nullptr;
  std::map<std::vector<int>, ncclComm_t> group_comms_ ABSL_GUARDED_BY(mu_);
  std::vector<std::shared_ptr<NcclTransfer>> pending_ ABSL_GUARDED_BY(mu_);
};

NcclRequest::~NcclRequest() {
  // Launched or announced transfers cannot be withdrawn without desynchronising the peer's
  // message order: wait for the transfer, at most the timeout.
  if (!Test()) (void)Wait();
}

absl::Status NcclRequest::WaitUntil(absl::Time deadline) {
  return communicator_->WaitTransfer(*transfer_, deadline);
}

bool NcclRequest::Test() { return communicator_->TestTransfer(*transfer_); }

absl::StatusOr<std::unique_ptr<Communicator>> NcclCommunicator::Create(absl::Duration timeout) {
  int devices = 0;
  const cudaError_t error = cudaGetDeviceCount(&devices);
  if (error != cudaSuccess || devices == 0) {
    cudaGetLastError();
    return absl::FailedPreconditionError(
        absl::StrCat("the nccl backend needs a GPU and no CUDA device is visible (",
                     cudaGetErrorString(error), ")"));
  }
  absl::StatusOr<std::unique_ptr<MpiContext>> mpi = MpiContext::Create(timeout);
  if (!mpi.ok()) return mpi.status();
  const int device = (*mpi)->world().local_rank % devices;
  std::unique_ptr<NcclCommunicator> communicator(new NcclCommunicator(*std::move(mpi), device));
  absl::Status status = communicator->Initialize();
  if (!status.ok()) return status;
  return std::unique_ptr<Communicator>(std::move(communicator));
}

absl::Status NcclCommunicator::Initialize() {
  const absl::Time deadline = absl::Now() + timeout();
  const std::string what =
      absl::StrFormat("starting the nccl backend on rank %d (GPU %d)", rank(), device_);
  absl::Status status = CudaStatus(cudaSetDevice(device_), what);
  if (!status.ok()) return status;
  status = CudaStatus(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking), what);
  if (!status.ok()) return status;
  absl::StatusOr<MPI_Comm> world = mpi_->GroupComm(world_group(), rank(), deadline);
  if (!world.ok()) return world.status();
  absl::StatusOr<ncclComm_t> comm = InitComm(*world, size(), rank(), deadline, what);
  if (!comm.ok()) return comm.status();
  absl::MutexLock lock(&mu_);
  world_comm_ = *comm;
  return absl::OkStatus();
}

NcclCommunicator::~NcclCommunicator() {
  absl::MutexLock lock(&mu_);
  cudaSetDevice(device_);
  std::vector<ncclComm_t> comms;
  if (world_comm_ != nullptr) comms.push_back(world_comm_);
  for (auto& [ranks, comm] : group_comms_) comms.push_back(comm);
  for (ncclComm_t comm : comms) {
    // Finalising flushes outstanding work; a communicator that cannot is aborted instead.
    const ncclResult_t result = ncclCommFinalize(comm);
    const bool finalized = result == ncclSuccess ||
                           (result == ncclInProgress &&
                            AwaitNccl(comm, absl::Now() + timeout(), "finalizing", timeout()).ok());
    if (finalized) {
      ncclCommDestroy(comm);
    } else {
      ncclCommAbort(comm);
    }
  }
  if (stream_ != nullptr) cudaStreamDestroy(stream_);
}

absl::Status NcclCommunicator::CheckDeviceBuffer(const void* data, size_t count,
                                                 absl::string_view what) const {
  if (count == 0) return absl::OkStatus();
  cudaPointerAttributes attributes;
  const cudaError_t error = cudaPointerGetAttributes(&attributes, data);
  if (error != cudaSuccess) {
    cudaGetLastError();
    return absl::InvalidArgumentError(
        absl::StrCat(what, ": not a CUDA buffer (", cudaGetErrorString(error), ")"));
  }
  if (attributes.type != cudaMemoryTypeDevice && attributes.type != cudaMemoryTypeManaged) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, ": the nccl backend needs GPU memory, this buffer is host memory"));
  }
  if (attributes.type == cudaMemoryTypeDevice && attributes.device != device_) {
    return absl::InvalidArgumentError(absl::StrCat(
        what, ": the buffer is on GPU ", attributes.device, ", this rank uses GPU ", device_));
  }
  return absl::OkStatus();
}

absl::StatusOr<ncclComm_t> NcclCommunicator::InitComm(MPI_Comm mpi_comm, int members, int index,
                                                      absl::Time deadline, absl::string_view what) {
  auto id = std::make_shared<ncclUniqueId>();
  if (index == 0) {
    const ncclResult_t result = ncclGetUniqueId(id.get());
    if (result != ncclSuccess) {
      return absl::InternalError(
          absl::StrCat(what, ": ncclGetUniqueId: ", NcclText(result, nullptr)));
    }
  }
  absl::Status status = mpi_->Run(
      what, deadline, "not every member joined the creation of the NCCL communicator",
      [&](MPI_Request* request) {
        return MPI_Ibcast(id.get(), sizeof(ncclUniqueId), MPI_BYTE, 0, mpi_comm, request);
      },
      id);
  if (!status.ok()) return status;
  // Non-blocking, so that initialisation (and every later call) can be waited on with a deadline.
  ncclConfig_t config = NCCL_CONFIG_INITIALIZER;
  config.blocking = 0;
  ncclComm_t comm = nullptr;
  cudaSetDevice(device_);
  const ncclResult_t result = ncclCommInitRankConfig(&comm, members, *id, index, &config);
  if (result != ncclSuccess && result != ncclInProgress) {
    return absl::InternalError(
        absl::StrCat(what, ": ncclCommInitRankConfig: ", NcclText(result, comm)));
  }
  status = AwaitNccl(comm, deadline, what, timeout());
  if (!status.ok()) {
    ncclCommAbort(comm);
    mpi_->Break(status);
    return status;
  }
  return comm;
}

absl::StatusOr<ncclComm_t> NcclCommunicator::GroupComm(const Group& group, int index,
                                                       absl::Time deadline) {
  {
    absl::MutexLock lock(&mu_);
    if (group == world_group()) return world_comm_;
    auto it = group_comms_.find(group.ranks());
    if (it != group_comms_.end()) return it->second;
  }
  // ncclCommSplit would be collective over all ranks of the parent; a communicator made from the
  // members' own MPI communicator involves the members only, like the mpi backend's groups.
  absl::StatusOr<MPI_Comm> mpi_comm = mpi_->GroupComm(group, index, deadline);
  if (!mpi_comm.ok()) return mpi_comm.status();
  absl::StatusOr<ncclComm_t> comm =
      InitComm(*mpi_comm, group.size(), index, deadline,
               absl::StrFormat("creating the NCCL communicator of group %s on rank %d",
                               group.ToString(), rank()));
  if (!comm.ok()) return comm.status();
  absl::MutexLock lock(&mu_);
  group_comms_[group.ranks()] = *comm;
  return *comm;
}

absl::Status NcclCommunicator::RunPrepareGroup(const Group& group, int index) {
  absl::Status status =
      mpi_->CheckUsable(absl::StrFormat("PrepareGroup(%s) on rank %d", group.ToString(), rank()));
  if (!status.ok()) return status;
  return GroupComm(group, index, absl::Now() + timeout()).status();
}

void NcclCommunicator::Abort(ncclComm_t comm, const absl::Status& why) {
  absl::MutexLock lock(&mu_);
  AbortLocked(comm, why);
}

void NcclCommunicator::AbortLocked(ncclComm_t comm, const absl::Status& why) {
  mpi_->Break(why);
  // Only communicators still registered are aborted: another thread may have aborted this one.
  bool registered = false;
  if (comm == world_comm_) {
    world_comm_ = nullptr;
    registered = true;
  }
  for (auto it = group_comms_.begin(); it != group_comms_.end(); ++it) {
    if (it->second == comm) {
      group_comms_.erase(it);
      registered = true;
      break;
    }
  }
  if (registered) ncclCommAbort(comm);
}

absl::Status NcclCommunicator::AwaitEvent(cudaEvent_t event, ncclComm_t comm, absl::Time deadline,
                                          absl::string_view what, absl::string_view on_timeout) {
  cudaError_t error = cudaErrorNotReady;
  ncclResult_t async = ncclSuccess;
  const bool done = PollUntil(deadline, [&] {
    error = cudaEventQuery(event);
    if (error != cudaErrorNotReady) return true;
    // A peer that failed or vanished shows up as an asynchronous error before any timeout.
    if (ncclCommGetAsyncError(comm, &async) == ncclSuccess && async != ncclSuccess &&
        async != ncclInProgress) {
      return true;
    }
    return false;
  });
  if (!done) {
    absl::Status timed_out = absl::DeadlineExceededError(
        absl::StrFormat("%s: timed out (timeout %s): %s; the NCCL communicator was aborted", what,
                        absl::FormatDuration(timeout()), on_timeout));
    Abort(comm, timed_out);
    return timed_out;
  }
  if (error == cudaSuccess) return absl::OkStatus();
  if (error == cudaErrorNotReady) {
    absl::Status failed =
        absl::InternalError(absl::StrCat(what, ": NCCL error: ", NcclText(async, comm)));
    Abort(comm, failed);
    return failed;
  }
  return CudaStatus(error, what);
}

std::shared_ptr<NcclTransfer> NcclCommunicator::MakeTransfer(bool is_recv, const void* data,
                                                             size_t count, DataType type, int peer,
                                                             int tag) {
  auto transfer = std::make_shared<NcclTransfer>(mpi_.get());
  transfer->is_recv = is_recv;
  transfer->data = const_cast<void*>(data);  // NCCL only reads send buffers
  transfer->count = count;
  transfer->type = type;
  transfer->peer = peer;
  transfer->tag = tag;
  transfer->what = DescribeP2p(is_recv ? "Recv" : "Send", type, count, peer, tag);
  return transfer;
}

absl::StatusOr<std::unique_ptr<Request>> NcclCommunicator::PostSend(ConstBufferView data, int peer,
                                                                    int tag) {
  return Post(MakeTransfer(false, data.data(), data.count(), data.type(), peer, tag));
}

absl::StatusOr<std::unique_ptr<Request>> NcclCommunicator::PostRecv(BufferView data, int peer,
                                                                    int tag) {
  return Post(MakeTransfer(true, data.data(), data.count(), data.type(), peer, tag));
}

absl::Status NcclCommunicator::RunExchange(std::span<const SendSpec> sends,
                                           std::span<const RecvSpec> recvs) {
  const absl::Time deadline = absl::Now() + timeout();
  std::vector<std::shared_ptr<NcclTransfer>> transfers;
  for (const RecvSpec& r : recvs) {
    transfers.push_back(
        MakeTransfer(true, r.data.data(), r.data.count(), r.data.type(), r.peer, r.tag));
  }
  for (const SendSpec& x : sends) {
    transfers.push_back(
        MakeTransfer(false, x.data.data(), x.data.count(), x.data.type(), x.peer, x.tag));
  }
  std::vector<std::unique_ptr<Request>> requests;
  std::vector<NcclTransfer*> targets;
  for (const std::shared_ptr<NcclTransfer>& t : transfers) {
    absl::StatusOr<std::unique_ptr<Request>> request = Post(t);
    if (!request.ok()) return request.status();
    requests.push_back(*std::move(request));
    targets.push_back(t.get());
  }
  Flush(targets, deadline);
  return WaitAll(requests, deadline);
}

absl::StatusOr<std::unique_ptr<Request>> NcclCommunicator::Post(
    std::shared_ptr<NcclTransfer> transfer) {
  absl::Status status = mpi_->CheckUsable(transfer->what);
  if (!status.ok()) return status;
  status = CheckDeviceBuffer(transfer->data, transfer->count, transfer->what);
  if (!status.ok()) return status;
  absl::MutexLock lock(&mu_);
  int rc;
  {
    absl::MutexLock mpi_lock(&MpiMutex());
    if (transfer->is_recv) {
      rc = MPI_Irecv(transfer->header->data(), 3, MPI_INT64_T, transfer->peer, kHeaderTag,
                     mpi_->p2p_comm(), &transfer->header_request);
    } else {
      *transfer->header = {transfer->tag, static_cast<int64_t>(transfer->type),
                           static_cast<int64_t>(transfer->count)};
      rc = MPI_Isend(transfer->header->data(), 3, MPI_INT64_T, transfer->peer, kHeaderTag,
                     mpi_->p2p_comm(), &transfer->header_request);
    }
  }
  if (rc != MPI_SUCCESS) {
    return absl::InternalError(absl::StrCat(transfer->what, ": ", MpiErrorText(rc)));
  }
  pending_.push_back(transfer);
  return std::make_unique<NcclRequest>(this, std::move(transfer), timeout());
}

bool NcclCommunicator::HeaderArrived(NcclTransfer& transfer, absl::Time deadline) {
  if (transfer.header_done) return true;
  int rc = MPI_SUCCESS;
  transfer.header_done = mpi_->Poll(transfer.header_request, deadline, MPI_STATUS_IGNORE, &rc);
  return transfer.header_done;
}

void NcclCommunicator::Flush(std::span<NcclTransfer* const> targets,
                             std::optional<absl::Time> deadline) {
  absl::MutexLock lock(&mu_);
  for (NcclTransfer* target : targets) {
    if (!target->is_recv || target->batch != nullptr || target->result.has_value() ||
        HeaderArrived(*target, deadline.value_or(absl::InfinitePast()))) {
      continue;
    }
    if (!deadline.has_value()) continue;  // a Test: not yet
    // Withdraw the receive: its header has not been taken, so the peer's order is intact.
    MPI_Status status;
    int rc = MPI_SUCCESS;
    {
      absl::MutexLock mpi_lock(&MpiMutex());
      MPI_Cancel(&target->header_request);
    }
    mpi_->Poll(target->header_request, absl::Now() + timeout(), &status, &rc);
    int cancelled = 0;
    {
      absl::MutexLock mpi_lock(&MpiMutex());
      MPI_Test_cancelled(&status, &cancelled);
    }
    if (cancelled) {
      std::erase_if(pending_, [&](const auto& t) { return t.get() == target; });
      target->result = absl::DeadlineExceededError(
          absl::StrFormat("%s: timed out (timeout %s): rank %d posted no matching send",
                          target->what, absl::FormatDuration(timeout()), target->peer));
    } else {
      target->header_done = true;  // arrived while cancelling
    }
  }
  std::vector<std::shared_ptr<NcclTransfer>> launch;
  std::vector<std::shared_ptr<NcclTransfer>> waiting;
  for (std::shared_ptr<NcclTransfer>& t : pending_) {
    if (!t->is_recv || HeaderArrived(*t, absl::InfinitePast())) {
      launch.push_back(std::move(t));
    } else {
      waiting.push_back(std::move(t));
    }
  }
  pending_ = std::move(waiting);
  for (const std::shared_ptr<NcclTransfer>& t : launch) {
    if (!t->is_recv) continue;
    const auto [tag, type, count] = *t->header;
    if (tag == t->tag && type == static_cast<int64_t>(t->type) &&
        count == static_cast<int64_t>(t->count)) {
      continue;
    }
    // The peer's next message is not this one: its stream and ours no longer line up.
    absl::Status mismatch = absl::InvalidArgumentError(absl::StrFormat(
        "%s: the next message from rank %d is %s x %d with tag %d (NCCL delivers messages between "
        "two ranks in order); the communicator is unusable",
        t->what, t->peer, DataTypeName(static_cast<DataType>(type)), count, tag));
    mpi_->Break(mismatch);
    for (const std::shared_ptr<NcclTransfer>& other : launch) {
      other->result = other == t ? mismatch
                                 : absl::FailedPreconditionError(absl::StrCat(
                                       other->what, ": not launched: ", mismatch.message()));
    }
    return;
  }
  if (launch.empty()) return;
  if (world_comm_ == nullptr) {
    absl::Status unusable = mpi_->CheckUsable("launching messages");
    for (const std::shared_ptr<NcclTransfer>& t : launch) t->result = unusable;
    return;
  }
  const std::string what =
      absl::StrFormat("launching %d messages on rank %d", launch.size(), rank());
  absl::Status status = CudaStatus(cudaSetDevice(device_), what);
  if (status.ok()) {
    ncclGroupStart();
    for (const std::shared_ptr<NcclTransfer>& t : launch) {
      if (t->is_recv) {
        ncclRecv(t->data, t->count, NcclType(t->type), t->peer, world_comm_, stream_);
      } else {
        ncclSend(t->data, t->count, NcclType(t->type), t->peer, world_comm_, stream_);
      }
    }
    const ncclResult_t result = ncclGroupEnd();
    if (result != ncclSuccess && result != ncclInProgress) {
      status = absl::InternalError(absl::StrCat(what, ": ", NcclText(result, world_comm_)));
    } else {
      status = AwaitNccl(world_comm_, deadline.value_or(absl::Now() + timeout()), what, timeout());
    }
  }
  auto batch = std::make_shared<NcclBatch>();
  if (status.ok()) {
    status = CudaStatus(cudaEventCreateWithFlags(&batch->event, cudaEventDisableTiming), what);
  }
  if (status.ok()) status = CudaStatus(cudaEventRecord(batch->event, stream_), what);
  if (!status.ok()) {
    AbortLocked(world_comm_, status);
    for (const std::shared_ptr<NcclTransfer>& t : launch) t->result = status;
    return;
  }
  for (const std::shared_ptr<NcclTransfer>& t : launch) t->batch = batch;
  return;
}

absl::Status NcclCommunicator::WaitTransfer(NcclTransfer& transfer, absl::Time deadline) {
  if (transfer.result.has_value()) return *transfer.result;
  NcclTransfer* const target[] = {&transfer};
  Flush(target, deadline);
  if (transfer.result.has_value()) return *transfer.result;
  ncclComm_t comm;
  {
    absl::MutexLock lock(&mu_);
    comm = world_comm_;
  }
  absl::Status status;
  if (transfer.batch == nullptr) {
    status = mpi_->CheckUsable(transfer.what);
  } else if (cudaEventQuery(transfer.batch->event) == cudaSuccess) {
    status = absl::OkStatus();
  } else if (comm == nullptr) {
    status = mpi_->CheckUsable(transfer.what);  // aborted after an earlier failure
  } else {
    status = AwaitEvent(transfer.batch->event, comm, deadline, transfer.what,
                        absl::StrFormat("rank %d posted no matching %s with tag %d", transfer.peer,
                                        transfer.is_recv ? "send" : "receive", transfer.tag));
  }
  if (status.ok() && !transfer.is_recv) {
    // The header went out long ago and is tiny; this only releases its request.
    int rc = MPI_SUCCESS;
    mpi_->Poll(transfer.header_request, absl::Now() + timeout(), MPI_STATUS_IGNORE, &rc);
  }
  transfer.result = status;
  return status;
}

bool NcclCommunicator::TestTransfer(NcclTransfer& transfer) {
  if (transfer.result.has_value()) return true;
  NcclTransfer* const target[] = {&transfer};
  Flush(target, std::nullopt);
  if (transfer.result.has_value()) return true;
  if (transfer.batch == nullptr) return false;
  const cudaError_t error = cudaEventQuery(transfer.batch->event);
  if (error == cudaErrorNotReady) return false;
  (void)WaitTransfer(transfer, absl::Now() + timeout());
  return true;
}

absl::Status NcclCommunicator::RunCollective(const CollectiveCall& call) {
  const absl::Time deadline = absl::Now() + timeout();
  absl::Status status = mpi_->CheckUsable(call.what);
  if (!status.ok()) return status;
  status = CheckDeviceBuffer(call.send.data(), call.send.count(), call.what);
  if (!status.ok()) return status;
  status = CheckDeviceBuffer(call.recv.data(), call.recv.count(), call.what);
  if (!status.ok()) return status;
  absl::StatusOr<MPI_Comm> mpi_comm = mpi_->GroupComm(*call.group, call.index, deadline);
  if (!mpi_comm.ok()) return mpi_comm.status();
  status = mpi_->CheckAgreement(*mpi_comm, call, deadline);
  if (!status.ok()) return status;
  absl::StatusOr<ncclComm_t> comm = GroupComm(*call.group, call.index, deadline);
  if (!comm.ok()) return comm.status();
  constexpr absl::string_view kMissing =
      "not every member joined; the members of a group must make the same collective calls on "
      "it in the same order";

  auto batch = std::make_shared<NcclBatch>();
  {
    absl::MutexLock lock(&mu_);
    status = CudaStatus(cudaSetDevice(device_), call.what);
    if (!status.ok()) return status;
    const ncclDataType_t type = NcclType(call.recv.type());
    const int n = call.group->size();
    ncclResult_t result = ncclSuccess;
    switch (call.kind) {
      case CollectiveKind::kAllReduce:
        result = ncclAllReduce(call.recv.data(), call.recv.data(), call.recv.count(), type,
                               NcclOp(call.op), *comm, stream_);
        break;
      case CollectiveKind::kAllGather:
        result = ncclAllGather(call.send.data(), call.recv.data(), call.send.count(), type, *comm,
                               stream_);
        break;
      case CollectiveKind::kAllGatherV: {
        // NCCL has no all-gather with counts: one broadcast per member, fused in a group.
        ncclGroupStart();
        size_t offset = 0;
        for (int i = 0; i < n; ++i) {
          const size_t count = call.counts[static_cast<size_t>(i)];
          void* slot = call.recv.Slice(offset, count).data();
          const void* source = i == call.index ? call.send.data() : slot;
          if (count > 0) ncclBroadcast(source, slot, count, type, i, *comm, stream_);
          offset += count;
        }
        result = ncclGroupEnd();
        break;
      }
      case CollectiveKind::kReduceScatter:
        result = ncclReduceScatter(call.send.data(), call.recv.data(), call.recv.count(), type,
                                   NcclOp(call.op), *comm, stream_);
        break;
      case CollectiveKind::kBroadcast:
        result = ncclBroadcast(call.recv.data(), call.recv.data(), call.recv.count(), type,
                               call.root, *comm, stream_);
        break;
      case CollectiveKind::kBarrier:
        // NCCL has none; the stream is drained below and the members meet over MPI.
        break;
    }
    if (result != ncclSuccess && result != ncclInProgress) {
      return absl::InternalError(absl::StrCat(call.what, ": ", NcclText(result, *comm)));
    }
    status = AwaitNccl(*comm, deadline, call.what, timeout());
    if (status.ok()) {
      status =
          CudaStatus(cudaEventCreateWithFlags(&batch->event, cudaEventDisableTiming), call.what);
    }
    if (status.ok()) status = CudaStatus(cudaEventRecord(batch->event, stream_), call.what);
    if (!status.ok()) {
      AbortLocked(*comm, status);
      return status;
    }
  }
  status = AwaitEvent(batch->event, *comm, deadline, call.what, kMissing);
  if (!status.ok() || call.kind != CollectiveKind::kBarrier) return status;
  return mpi_->Run(call.what, deadline, kMissing,
                   [&](MPI_Request* request) { return MPI_Ibarrier(*mpi_comm, request); });
}

}  // namespace

absl::StatusOr<std::unique_ptr<Communicator>> MakeNcclCommunicator(absl::Duration timeout) {
  if (timeout <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError(
        absl::StrCat("timeout must be positive, got ", absl::FormatDuration(timeout)));
  }
  return NcclCommunicator::Create(timeout);
}

}  // namespace loom
