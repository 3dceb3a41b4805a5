#include "runtime/mpi_session.h"

#include <algorithm>
#include <cstdlib>
#include <thread>

#include "absl/strings/str_cat.h"

namespace loom {
namespace {

void FinalizeAtExit() {
  absl::MutexLock lock(&MpiMutex());
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (!finalized) MPI_Finalize();
}

}  // namespace

absl::Mutex& MpiMutex() {
  static absl::Mutex mutex;
  return mutex;
}

void AbortMpiJob(int exit_code) {
  absl::MutexLock lock(&MpiMutex());
  int initialized = 0;
  int finalized = 0;
  MPI_Initialized(&initialized);
  MPI_Finalized(&finalized);
  if (initialized && !finalized) MPI_Abort(MPI_COMM_WORLD, exit_code);
}

absl::Status EnsureMpiInitialized() {
  static absl::Mutex init_mutex;
  absl::MutexLock init_lock(&init_mutex);
  absl::MutexLock lock(&MpiMutex());
  int initialized = 0;
  MPI_Initialized(&initialized);
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (finalized) return absl::FailedPreconditionError("MPI has already been finalized");
  if (!initialized) {
    int provided = MPI_THREAD_SINGLE;
    const int rc = MPI_Init_thread(nullptr, nullptr, MPI_THREAD_SERIALIZED, &provided);
    if (rc != MPI_SUCCESS) {
      return absl::UnavailableError(absl::StrCat("MPI_Init_thread failed with MPI error ", rc));
    }
    std::atexit(FinalizeAtExit);
  }
  int provided = MPI_THREAD_SINGLE;
  MPI_Query_thread(&provided);
  if (provided < MPI_THREAD_SERIALIZED) {
    return absl::FailedPreconditionError(absl::StrCat(
        "MPI runs at thread level ", provided,
        "; loom needs MPI_THREAD_SERIALIZED or higher (initialise MPI with MPI_Init_thread)"));
  }
  return absl::OkStatus();
}

std::string MpiErrorText(int code) {
  char text[MPI_MAX_ERROR_STRING] = {};
  int length = 0;
  absl::MutexLock lock(&MpiMutex());
  if (MPI_Error_string(code, text, &length) != MPI_SUCCESS) return absl::StrCat("MPI error ", code);
  return std::string(text, static_cast<size_t>(length));
}

MPI_Datatype MpiDatatype(DataType type) {
  switch (type) {
    case DataType::kFloat32:
      return MPI_FLOAT;
    case DataType::kBFloat16:
      return MPI_UINT16_T;
    case DataType::kInt32:
      return MPI_INT32_T;
    case DataType::kInt64:
      return MPI_INT64_T;
  }
  return MPI_DATATYPE_NULL;
}

bool PollUntil(absl::Time deadline, absl::FunctionRef<bool()> poll) {
  constexpr int kSpins = 64;
  const absl::Time start = absl::Now();
  absl::Duration nap = absl::Microseconds(5);
  for (int i = 0;; ++i) {
    if (poll()) return true;
    const absl::Time now = absl::Now();
    if (now >= deadline) return false;
    if (i < kSpins) continue;
    if (now - start < absl::Milliseconds(20)) {
      std::this_thread::yield();
      continue;
    }
    absl::SleepFor(std::min(nap, deadline - now));
    nap = std::min(nap * 2, absl::Microseconds(100));
  }
}

}  // namespace loom
