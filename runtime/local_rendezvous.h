// Collectives for the local backend. The members of a group meet in a slot (one per group and
// per call number); once all have arrived, each thread computes its share reading the others'
// buffers directly, so the work is spread over the member threads and nothing is copied twice.
// Reductions combine members in group order, element by element, so the result is the same bits
// whichever thread computes it and however the threads are scheduled.
#ifndef LOOM_RUNTIME_LOCAL_RENDEZVOUS_H_
#define LOOM_RUNTIME_LOCAL_RENDEZVOUS_H_

#include <cstdint>
#include <map>
#include <memory>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "runtime/collective_call.h"

namespace loom {

class LocalRendezvous {
 public:
  LocalRendezvous() = default;

  // Runs this member's part of `call`, the `sequence`-th collective it makes on call.group. Waits
  // until `deadline` for every member to arrive; when one does not (or disagrees on the call), all
  // members present fail and later arrivals fail at once. Once all have arrived the remaining
  // waits are for member threads busy copying, so they take no deadline: no member returns while
  // another may still read its buffers.
  absl::Status Run(const CollectiveCall& call, uint64_t sequence, absl::Time deadline,
                   absl::Duration timeout);

 private:
  struct Slot;
  using Key = std::pair<std::vector<int>, uint64_t>;

  std::shared_ptr<Slot> FindOrAddSlot(const Key& key, int members);
  void RemoveSlot(const Key& key);

  absl::Mutex mu_;
  std::map<Key, std::shared_ptr<Slot>> slots_ ABSL_GUARDED_BY(mu_);
};

}  // namespace loom

#endif  // LOOM_RUNTIME_LOCAL_RENDEZVOUS_H_
