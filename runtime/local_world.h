// The `local` backend: N ranks as threads of one process, for tests and for the exact numerics of
// the simulated cluster. A LocalWorld owns the shared state; each rank's thread uses
// communicator(rank). Messages are single memcpys between the ranks' own buffers; reductions
// combine ranks in a fixed order, so results are the same bits from run to run.
#ifndef LOOM_RUNTIME_LOCAL_WORLD_H_
#define LOOM_RUNTIME_LOCAL_WORLD_H_

#include <memory>
#include <vector>

#include "absl/functional/function_ref.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "runtime/communicator.h"

namespace loom {

class LocalMailboxes;
class LocalRendezvous;

class LocalWorld {
 public:
  static absl::StatusOr<std::unique_ptr<LocalWorld>> Create(int size, absl::Duration timeout);
  ~LocalWorld();

  int size() const { return static_cast<int>(communicators_.size()); }
  // The communicator of `rank`; thread-safe, used by that rank's thread(s).
  Communicator& communicator(int rank) { return *communicators_[static_cast<size_t>(rank)]; }

  // Runs body(communicator(r)) on a thread per rank and waits for all of them. Returns OK or the
  // failure of the lowest failing rank, prefixed with "rank r: " (each rank's own failure names
  // what it waited for; the others usually fail as a consequence).
  absl::Status Run(absl::FunctionRef<absl::Status(Communicator&)> body);

 private:
  LocalWorld(int size, absl::Duration timeout);

  std::unique_ptr<LocalMailboxes> mailboxes_;
  std::unique_ptr<LocalRendezvous> rendezvous_;
  std::vector<std::unique_ptr<Communicator>> communicators_;
};

}  // namespace loom

#endif  // LOOM_RUNTIME_LOCAL_WORLD_H_
