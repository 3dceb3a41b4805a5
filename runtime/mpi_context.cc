#include "runtime/mpi_context.h"

#include <algorithm>
#include <cstring>
#include <string>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "runtime/mpi_session.h"

namespace loom {
namespace {

// The tag of a group's handshake and MPI_Comm_create_group: a hash of its ordered ranks in
// [1, max_tag], so concurrent creations of different groups do not take each other's messages.
int GroupTag(const std::vector<int>& ranks, int max_tag) {
  uint64_t h = 1469598103934665603ull;
  for (int r : ranks) h = (h ^ static_cast<uint64_t>(r)) * 1099511628211ull;
  return 1 + static_cast<int>(h % static_cast<uint64_t>(max_tag));
}

std::string SignatureValue(size_t field, int64_t value) {
  switch (field) {
    case 0:
      return std::string(CollectiveName(static_cast<CollectiveKind>(value)));
    case 1:
      return std::string(DataTypeName(static_cast<DataType>(value)));
    case 2:
      return std::string(ReduceOpName(static_cast<ReduceOp>(value)));
    default:
      return absl::StrCat(value);
  }
}

}  // namespace

absl::StatusOr<std::unique_ptr<MpiContext>> MpiContext::Create(absl::Duration timeout) {
  if (timeout <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError(
        absl::StrCat("timeout must be positive, got ", absl::FormatDuration(timeout)));
  }
  absl::Status status = EnsureMpiInitialized();
  if (!status.ok()) return status;
  std::unique_ptr<MpiContext> context(new MpiContext(timeout));
  status = context->Initialize();
  if (!status.ok()) return status;
  return context;
}

absl::Status MpiContext::Initialize() {
  const absl::Time deadline = absl::Now() + timeout_;
  {
    absl::MutexLock lock(&MpiMutex());
    MPI_Comm_rank(MPI_COMM_WORLD, &world_.rank);
    MPI_Comm_size(MPI_COMM_WORLD, &world_.size);
    int* tag_ub = nullptr;
    int flag = 0;
    MPI_Comm_get_attr(MPI_COMM_WORLD, MPI_TAG_UB, &tag_ub, &flag);
    if (flag && tag_ub != nullptr) max_tag_ = *tag_ub;
  }
  absl::StatusOr<WorldInfo> env = DetectWorld(ProcessEnv());
  world_.source = env.ok() ? env->source : "mpi";
  for (MPI_Comm* comm : {&p2p_comm_, &control_comm_, &collective_comm_}) {
    absl::Status status =
        Run(absl::StrFormat("creating the MPI communicators on rank %d", world_.rank), deadline,
            "not every rank of MPI_COMM_WORLD created its communicator",
            [comm](MPI_Request* request) { return MPI_Comm_idup(MPI_COMM_WORLD, comm, request); });
    if (!status.ok()) return status;
    absl::MutexLock lock(&MpiMutex());
    MPI_Comm_set_errhandler(*comm, MPI_ERRORS_RETURN);
  }
  return ResolveHosts(deadline);
}

absl::Status MpiContext::ResolveHosts(absl::Time deadline) {
  constexpr size_t kNameBytes = 256;
  world_.hostname = HostName();
  auto names = std::make_shared<std::vector<char>>(kNameBytes * static_cast<size_t>(world_.size));
  std::strncpy(names->data() + kNameBytes * static_cast<size_t>(world_.rank),
               world_.hostname.c_str(), kNameBytes - 1);
  absl::Status status = Run(
      absl::StrFormat("exchanging hostnames on rank %d", world_.rank), deadline,
      "not every rank joined",
      [&](MPI_Request* request) {
        return MPI_Iallgather(MPI_IN_PLACE, 0, MPI_DATATYPE_NULL, names->data(),
                              static_cast<int>(kNameBytes), MPI_CHAR, control_comm_, request);
      },
      names);
  if (!status.ok()) return status;
  std::vector<std::string> hosts;  // distinct, in order of first appearance
  world_.local_rank = 0;
  world_.local_size = 0;
  for (int r = 0; r < world_.size; ++r) {
    const std::string host(names->data() + kNameBytes * static_cast<size_t>(r));
    if (std::find(hosts.begin(), hosts.end(), host) == hosts.end()) hosts.push_back(host);
    if (host == world_.hostname) {
      if (r < world_.rank) ++world_.local_rank;
      ++world_.local_size;
    }
  }
  world_.node =
      static_cast<int>(std::find(hosts.begin(), hosts.end(), world_.hostname) - hosts.begin());
  world_.num_nodes = static_cast<int>(hosts.size());
  return absl::OkStatus();
}

MpiContext::~MpiContext() {
  absl::MutexLock lock(&MpiMutex());
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (finalized) return;
  // Freeing is legal with operations outstanding on a broken context: MPI defers it.
  for (auto& [ranks, comm] : group_comms_) MPI_Comm_free(&comm);
  for (MPI_Comm* comm : {&p2p_comm_, &control_comm_, &collective_comm_}) {
    if (*comm != MPI_COMM_NULL) MPI_Comm_free(comm);
  }
}

absl::Status MpiContext::CheckUsable(absl::string_view what) const {
  absl::MutexLock lock(&mu_);
  if (broken_.ok()) return absl::OkStatus();
  return absl::FailedPreconditionError(absl::StrCat(
      what, ": the MPI communicator is unusable after an earlier failure: ", broken_.message()));
}

void MpiContext::Break(const absl::Status& why) {
  absl::MutexLock lock(&mu_);
  if (broken_.ok()) broken_ = why;
}

void MpiContext::Abandon(std::shared_ptr<void> memory) {
  absl::MutexLock lock(&mu_);
  abandoned_.push_back(std::move(memory));
}

bool MpiContext::Poll(MPI_Request& request, absl::Time deadline, MPI_Status* status, int* rc) {
  return PollUntil(deadline, [&] {
    absl::MutexLock lock(&MpiMutex());
    int flag = 0;
    *rc = MPI_Test(&request, &flag, status);
    return flag != 0 || *rc != MPI_SUCCESS;
  });
}

absl::Status MpiContext::Run(absl::string_view what, absl::Time deadline,
                             absl::string_view on_timeout,
                             absl::FunctionRef<int(MPI_Request*)> start,
                             std::shared_ptr<void> scratch) {
  return RunAll(
      what, deadline, on_timeout,
      [&](std::vector<MPI_Request>& requests) {
        requests.push_back(MPI_REQUEST_NULL);
        return start(&requests.back());
      },
      std::move(scratch));
}

absl::Status MpiContext::RunAll(absl::string_view what, absl::Time deadline,
                                absl::string_view on_timeout,
                                absl::FunctionRef<int(std::vector<MPI_Request>& requests)> start,
                                std::shared_ptr<void> scratch) {
  std::vector<MPI_Request> requests;
  int rc = MPI_SUCCESS;
  {
    absl::MutexLock lock(&MpiMutex());
    rc = start(requests);
  }
  if (rc != MPI_SUCCESS) {
    // Whatever did start is outstanding and may use the scratch memory.
    absl::Status failed = absl::InternalError(absl::StrCat(what, ": ", MpiErrorText(rc)));
    Break(failed);
    if (scratch != nullptr) Abandon(std::move(scratch));
    return failed;
  }
  const bool done = PollUntil(deadline, [&] {
    absl::MutexLock lock(&MpiMutex());
    int flag = 0;
    rc =
        MPI_Testall(static_cast<int>(requests.size()), requests.data(), &flag, MPI_STATUSES_IGNORE);
    return flag != 0 || rc != MPI_SUCCESS;
  });
  if (!done) {
    absl::Status timed_out = absl::DeadlineExceededError(absl::StrFormat(
        "%s: timed out (timeout %s): %s", what, absl::FormatDuration(timeout_), on_timeout));
    Break(timed_out);
    if (scratch != nullptr) Abandon(std::move(scratch));
    return timed_out;
  }
  if (rc != MPI_SUCCESS) return absl::InternalError(absl::StrCat(what, ": ", MpiErrorText(rc)));
  return absl::OkStatus();
}

absl::Status MpiContext::Handshake(const Group& group, int index, int tag, absl::Time deadline) {
  // Zero-byte messages: nothing for MPI to write if a request must be abandoned.
  const int leader = group.world_rank(0);
  std::vector<MPI_Request> requests;
  std::vector<int> peers;
  {
    absl::MutexLock lock(&MpiMutex());
    if (index == 0) {
      for (int i = 1; i < group.size(); ++i) {
        requests.emplace_back(MPI_REQUEST_NULL);
        peers.push_back(group.world_rank(i));
        MPI_Irecv(nullptr, 0, MPI_BYTE, peers.back(), tag, control_comm_, &requests.back());
      }
    } else {
      requests.emplace_back(MPI_REQUEST_NULL);
      peers.push_back(leader);
      MPI_Isend(nullptr, 0, MPI_BYTE, leader, tag, control_comm_, &requests.back());
      requests.emplace_back(MPI_REQUEST_NULL);
      peers.push_back(leader);
      MPI_Irecv(nullptr, 0, MPI_BYTE, leader, tag, control_comm_, &requests.back());
    }
  }
  std::vector<int> missing;
  for (size_t i = 0; i < requests.size(); ++i) {
    int rc = MPI_SUCCESS;
    if (!Poll(requests[i], deadline, MPI_STATUS_IGNORE, &rc)) {
      missing.push_back(peers[i]);
      absl::MutexLock lock(&MpiMutex());
      MPI_Cancel(&requests[i]);
      MPI_Request_free(&requests[i]);
    }
  }
  if (missing.empty() && index == 0) {
    // Everyone is in: release them.
    for (int i = 1; i < group.size(); ++i) {
      MPI_Request request = MPI_REQUEST_NULL;
      {
        absl::MutexLock lock(&MpiMutex());
        MPI_Isend(nullptr, 0, MPI_BYTE, group.world_rank(i), tag, control_comm_, &request);
      }
      int rc = MPI_SUCCESS;
      if (!Poll(request, deadline, MPI_STATUS_IGNORE, &rc)) {
        absl::MutexLock lock(&MpiMutex());
        MPI_Request_free(&request);
      }
    }
  }
  if (missing.empty()) return absl::OkStatus();
  std::sort(missing.begin(), missing.end());
  missing.erase(std::unique(missing.begin(), missing.end()), missing.end());
  absl::Status failed = absl::DeadlineExceededError(absl::StrFormat(
      "creating the communicator of group %s on rank %d: timed out (timeout %s): rank(s) %s "
      "never joined",
      group.ToString(), world_.rank, absl::FormatDuration(timeout_), absl::StrJoin(missing, " ")));
  // Messages of the failed handshake may still arrive and confuse a later one.
  Break(failed);
  return failed;
}

absl::StatusOr<MPI_Comm> MpiContext::GroupComm(const Group& group, int index, absl::Time deadline) {
  if (group == Group::World(world_.size)) return collective_comm_;
  {
    absl::MutexLock lock(&mu_);
    auto it = group_comms_.find(group.ranks());
    if (it != group_comms_.end()) return it->second;
  }
  const int tag = GroupTag(group.ranks(), max_tag_);
  absl::Status status = Handshake(group, index, tag, deadline);
  if (!status.ok()) return status;
  MPI_Comm comm = MPI_COMM_NULL;
  int rc = MPI_SUCCESS;
  {
    // Blocking, but every member is known to be on its way into the same call.
    absl::MutexLock lock(&MpiMutex());
    MPI_Group world_group = MPI_GROUP_NULL;
    MPI_Group sub_group = MPI_GROUP_NULL;
    MPI_Comm_group(collective_comm_, &world_group);
    MPI_Group_incl(world_group, group.size(), group.ranks().data(), &sub_group);
    rc = MPI_Comm_create_group(collective_comm_, sub_group, tag, &comm);
    MPI_Group_free(&sub_group);
    MPI_Group_free(&world_group);
    if (rc == MPI_SUCCESS) MPI_Comm_set_errhandler(comm, MPI_ERRORS_RETURN);
  }
  if (rc != MPI_SUCCESS) {
    return absl::InternalError(absl::StrFormat("MPI_Comm_create_group for group %s on rank %d: %s",
                                               group.ToString(), world_.rank, MpiErrorText(rc)));
  }
  absl::MutexLock lock(&mu_);
  group_comms_[group.ranks()] = comm;
  return comm;
}

absl::Status MpiContext::CheckAgreement(MPI_Comm comm, const CollectiveCall& call,
                                        absl::Time deadline) {
  const auto signature = call.Signature();
  const size_t k = signature.size();
  auto values = std::make_shared<std::vector<int64_t>>(2 * k);
  for (size_t f = 0; f < k; ++f) {
    (*values)[f] = signature[f];
    (*values)[k + f] = -signature[f];
  }
  absl::Status status = Run(
      call.what, deadline,
      "not every member joined; the members of a group must make the same collective calls on it "
      "in the same order",
      [&](MPI_Request* request) {
        return MPI_Iallreduce(MPI_IN_PLACE, values->data(), static_cast<int>(2 * k), MPI_INT64_T,
                              MPI_MAX, comm, request);
      },
      values);
  if (!status.ok()) return status;
  for (size_t f = 0; f < k; ++f) {
    const int64_t high = (*values)[f];
    const int64_t low = -(*values)[k + f];
    if (high == low) continue;
    if (call.kind == CollectiveKind::kAllGatherV && f == 4) {
      return absl::InvalidArgumentError(
          absl::StrCat(call.what, ": members disagree on the list of counts"));
    }
    return absl::InvalidArgumentError(
        absl::StrCat(call.what, ": members disagree on the ", kSignatureFields[f], " (",
                     SignatureValue(f, low), " vs ", SignatureValue(f, high), ")"));
  }
  return absl::OkStatus();
}

}  // namespace loom
