#include "parallel/activation_offload.h"

#include <algorithm>

#include "parallel/ring_share.h"

namespace loom {

double HiddenOffloadRatio(int64_t tokens, double forward_s, const CostModel& cost,
                          const OffloadPolicy& policy) {
  const double bytes = static_cast<double>(tokens) * static_cast<double>(cost.activation_bytes_per_token);
  if (bytes <= 0 || cost.host_bytes_per_s <= 0) return 0.0;
  double ratio = std::min(policy.max_ratio, forward_s * cost.host_bytes_per_s / bytes);
  if (policy.host_memory_bytes > 0) {
    ratio = std::min(ratio, static_cast<double>(policy.host_memory_bytes) / bytes);
  }
  return std::max(ratio, 0.0);
}

double NeededOffloadRatio(int64_t tokens, const CostModel& cost, const OffloadPolicy& policy) {
  const int64_t over = cost.MicroBatchBytes(tokens) - policy.budget_bytes;
  if (over <= 0) return 0.0;
  const double activations =
      static_cast<double>(tokens) * static_cast<double>(cost.activation_bytes_per_token);
  return activations > 0 ? static_cast<double>(over) / activations : 2.0;
}

namespace {

// Whether member shares of a sequence over `members` ranks fit with hidden offloading: the
// largest share (member 0's zigzag pieces hold the most tokens) and the forward compute of its
// tokens, which under zigzag is about the same for every member.
bool Fits(int64_t length, int members, const CostModel& cost, const OffloadPolicy& policy) {
  TokenRange pieces[2];
  const int count = ZigzagShareInto(0, length, members, 0, pieces);
  int64_t tokens = 0;
  double seconds = cost.n_layers * cost.overhead_s;
  for (int p = 0; p < count; ++p) {
    tokens += pieces[p].size();
    seconds += cost.RangeSeconds(pieces[p].begin, pieces[p].end);
  }
  const double forward_s = seconds * (1.0 - cost.backward_fraction);
  return NeededOffloadRatio(tokens, cost, policy) <=
         HiddenOffloadRatio(tokens, forward_s, cost, policy);
}

}  // namespace

int MinRingMembers(int64_t length, int64_t capacity_tokens, const CostModel& cost,
                   const OffloadPolicy& policy, int max_members) {
  const int64_t ceil_members = (length + capacity_tokens - 1) / capacity_tokens;
  const int most = static_cast<int>(std::min<int64_t>(ceil_members, max_members));
  if (most < 2) return 0;
  // ceil(L / C) members always fit (shares of at most C); fewer must be checked.
  if (most < ceil_members && !Fits(length, most, cost, policy)) return 0;
  if (most == 2) return 2;
  // Fewer members means larger shares, which fit less often: the smallest that fits, by
  // bisection over [2, most].
  int lo = 2, hi = most;
  while (lo < hi) {
    const int mid = lo + (hi - lo) / 2;
    if (Fits(length, mid, cost, policy)) {
      hi = mid;
    } else {
      lo = mid + 1;
    }
  }
  return lo;
}

void ApplyOffload(StepPlan& plan, const CostModel& cost, const OffloadPolicy& policy) {
  for (RankPlan& rank : plan.ranks) {
    for (Action& a : rank.actions) {
      if (a.kind != ActionKind::kForward || !a.keep_activations) continue;
      const double needed = NeededOffloadRatio(TokenCount(a.tokens), cost, policy);
      a.offload_ratio = std::min(needed, 1.0);
    }
  }
}

}  // namespace loom
