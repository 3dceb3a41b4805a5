#include "parallel/megatron_cp_planner.h"

#include <algorithm>
#include <cstdint>
#include <deque>
#include <iterator>
#include <set>
#include <span>
#include <utility>

#include "absl/strings/str_format.h"
#include "parallel/plan_builder.h"

namespace loom {
namespace {

// One set of consecutive ranks of one CP size, running its sequences one per micro-batch.
struct Group {
  int log_size = 0;
  double load = 0.0;             // the estimate: sum of L^2 / size over its sequences
  std::vector<int64_t> seqs;     // indices into the batch, in the order they run
};

class Scheduler {
 public:
  Scheduler(const std::vector<SequenceSpec>& sequences, const MegatronCpOptions& options)
      : seqs_(sequences), options_(options) {}

  // Every sequence's CP size fits the world (checked by the caller).
  FlatPlacement Run() {
    // Remaining sequences per CP size (log2), each longest first.
    std::vector<int64_t> order(seqs_.size());
    for (size_t i = 0; i < order.size(); ++i) order[i] = static_cast<int64_t>(i);
    std::stable_sort(order.begin(), order.end(), [&](int64_t x, int64_t y) {
      return seqs_[static_cast<size_t>(x)].length > seqs_[static_cast<size_t>(y)].length;
    });
    for (const int64_t i : order) {
      const int k = LogSize(i);
      if (static_cast<size_t>(k) >= remaining_.size()) remaining_.resize(static_cast<size_t>(k) + 1);
      remaining_[static_cast<size_t>(k)].push_back(i);
      ++left_;
    }
    local_.assign(static_cast<size_t>(options_.world_size), {});
    int base_slot = 0;
    while (left_ > 0) base_slot += Round(base_slot);
    for (const std::vector<FlatPlacement::Local>& rank : local_) {
      flat_.local.insert(flat_.local.end(), rank.begin(), rank.end());
      flat_.rank_begin.push_back(flat_.local.size());
    }
    return std::move(flat_);
  }

 private:
  int LogSize(int64_t i) const {
    const int cp = MegatronCpSize(seqs_[static_cast<size_t>(i)].length, options_.capacity_tokens);
    int k = 0;
    while ((1 << k) < cp) ++k;
    return k;
  }
  double Workload(int64_t i, int log_size) const {
    const double l = static_cast<double>(seqs_[static_cast<size_t>(i)].length);
    return l * l / static_cast<double>(1 << log_size);
  }

  void SetLoad(int gid, double load) {
    Group& g = groups_[static_cast<size_t>(gid)];
    by_size_[static_cast<size_t>(g.log_size)].erase({g.load, gid});
    all_.erase(all_.find({g.load, gid}));
    g.load = load;
    by_size_[static_cast<size_t>(g.log_size)].insert({g.load, gid});
    all_.insert({g.load, gid});
  }
  int NewGroup(int log_size) {
    const int gid = static_cast<int>(groups_.size());
    groups_.push_back({log_size, 0.0, {}});
    if (by_size_.size() <= static_cast<size_t>(log_size)) {
      by_size_.resize(static_cast<size_t>(log_size) + 1);
    }
    by_size_[static_cast<size_t>(log_size)].insert({0.0, gid});
    all_.insert({0.0, gid});
    free_ -= 1 << log_size;
    return gid;
  }
  double MinLoad() const { return free_ > 0 || all_.empty() ? 0.0 : all_.begin()->first; }
  double MaxLoad() const { return all_.empty() ? 0.0 : all_.rbegin()->first; }
  bool Balanced() const {
    return MaxLoad() - MinLoad() <= options_.balance_slack * MaxLoad();
  }

  // The longest remaining sequence that has a place this round: a group of its size, or enough
  // free ranks for a new one. -1 when none has.
  int PickSize() const {
    int best = -1;
    for (size_t k = 0; k < remaining_.size(); ++k) {
      if (remaining_[k].empty()) continue;
      const bool placeable = (k < by_size_.size() && !by_size_[k].empty()) || free_ >= (1 << k);
      if (!placeable) continue;
      if (best < 0 || seqs_[static_cast<size_t>(remaining_[k].front())].length >
                          seqs_[static_cast<size_t>(
                                    remaining_[static_cast<size_t>(best)].front())]
                              .length) {
        best = static_cast<int>(k);
      }
    }
    return best;
  }

  // Puts a sequence back among the remaining ones, keeping its size's list longest first.
  void Return(int64_t i) {
    std::deque<int64_t>& list = remaining_[static_cast<size_t>(LogSize(i))];
    const auto at = std::upper_bound(list.begin(), list.end(), i, [&](int64_t x, int64_t y) {
      return seqs_[static_cast<size_t>(x)].length > seqs_[static_cast<size_t>(y)].length;
    });
    list.insert(at, i);
    ++left_;
  }

  // One round between Megatron's barriers, laid out from `base_slot`; returns the slots it took.
  int Round(int base_slot) {
    groups_.clear();
    by_size_.clear();
    all_.clear();
    free_ = options_.world_size;
    int first_size = -1;
    bool check_balance = false;
    while (true) {
      const int k = PickSize();
      if (k < 0) break;
      const int64_t seq = remaining_[static_cast<size_t>(k)].front();
      remaining_[static_cast<size_t>(k)].pop_front();
      --left_;
      if (first_size < 0) first_size = k;
      // A new group has load 0, below any existing one, so free ranks are taken first.
      const int gid = free_ >= (1 << k) ? NewGroup(k) : by_size_[static_cast<size_t>(k)].begin()->second;
      groups_[static_cast<size_t>(gid)].seqs.push_back(seq);
      SetLoad(gid, groups_[static_cast<size_t>(gid)].load + Workload(seq, k));
      if (k < first_size) check_balance = true;
      if (check_balance && left_ > 0 && Balanced()) break;
    }
    TrimOverload();
    FillFreeRanks();
    // Groups take consecutive ranks in the order they were opened.
    int next_rank = 0;
    int slots = 0;
    std::vector<int> members;
    for (const Group& g : groups_) {
      const int size = 1 << g.log_size;
      for (size_t j = 0; j < g.seqs.size(); ++j) {
        const int slot = base_slot + static_cast<int>(j);
        const SequenceSpec& s = seqs_[static_cast<size_t>(g.seqs[j])];
        if (size == 1) {
          local_[static_cast<size_t>(next_rank)].push_back({slot, s});
          continue;
        }
        members.resize(static_cast<size_t>(size));
        for (int m = 0; m < size; ++m) members[static_cast<size_t>(m)] = next_rank + m;
        flat_.AddRing(slot, members, std::span<const SequenceSpec>(&s, 1));
      }
      slots = std::max(slots, static_cast<int>(g.seqs.size()));
      next_rank += size;
    }
    return slots;
  }

  // The most-loaded group gives back its last sequence while that narrows the spread of loads
  // (and it keeps one).
  void TrimOverload() {
    while (!all_.empty()) {
      const double max_load = MaxLoad(), min_load = MinLoad();
      const double slack = max_load - min_load;
      if (slack <= options_.balance_slack * max_load || min_load == 0.0) return;
      const int gid = all_.rbegin()->second;
      Group& g = groups_[static_cast<size_t>(gid)];
      if (g.seqs.size() <= 1) return;
      const double reduced = g.load - Workload(g.seqs.back(), g.log_size);
      const double second = all_.size() > 1 ? std::prev(all_.end(), 2)->first : reduced;
      const double new_max = std::max(second, reduced);
      const double new_min = std::min(min_load, reduced);
      if (!(new_max - new_min < slack)) return;
      const int64_t seq = g.seqs.back();
      g.seqs.pop_back();
      SetLoad(gid, reduced);
      Return(seq);
    }
  }

  // Free ranks join work by doubling the CP size of a group of the smallest size (the most
  // loaded of them; Megatron takes the first), until too few are free to double any. Megatron
  // pads a sequence to a multiple of twice its CP size; a plan cannot pad, so a group is widened
  // only while its shortest sequence still gives every member a token.
  void FillFreeRanks() {
    while (free_ > 0) {
      size_t k = 0;
      while (k < by_size_.size() && by_size_[k].empty()) ++k;
      if (k == by_size_.size() || free_ < (1 << k)) return;
      int gid = -1;
      for (auto it = by_size_[k].rbegin(); it != by_size_[k].rend() && gid < 0; ++it) {
        int64_t shortest = INT64_MAX;
        for (const int64_t i : groups_[static_cast<size_t>(it->second)].seqs) {
          shortest = std::min(shortest, seqs_[static_cast<size_t>(i)].length);
        }
        if (shortest >= int64_t{2} << k) gid = it->second;
      }
      if (gid < 0) return;
      Group& g = groups_[static_cast<size_t>(gid)];
      const double load = g.load;
      by_size_[k].erase({load, gid});
      all_.erase(all_.find({load, gid}));
      free_ -= 1 << k;
      g.log_size = static_cast<int>(k) + 1;
      g.load = load / 2.0;
      if (by_size_.size() <= k + 1) by_size_.resize(k + 2);
      by_size_[k + 1].insert({g.load, gid});
      all_.insert({g.load, gid});
    }
  }

  const std::vector<SequenceSpec>& seqs_;
  const MegatronCpOptions& options_;
  std::vector<std::deque<int64_t>> remaining_;
  int64_t left_ = 0;
  std::vector<Group> groups_;
  std::vector<std::set<std::pair<double, int>>> by_size_;  // (load, group) per log2 size
  std::multiset<std::pair<double, int>> all_;
  int free_ = 0;
  std::vector<std::vector<FlatPlacement::Local>> local_;
  FlatPlacement flat_;
};

}  // namespace

int MegatronCpSize(int64_t length, int64_t capacity_tokens) {
  int cp = 1;
  while (static_cast<int64_t>(cp) * capacity_tokens < length) cp *= 2;
  return cp;
}

absl::StatusOr<StepPlan> PlanMegatronHybridCp(const std::vector<SequenceSpec>& sequences,
                                              const MegatronCpOptions& options,
                                              const CostModel& cost) {
  if (options.world_size < 1 || options.capacity_tokens < 1 || !(options.balance_slack >= 0)) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "megatron-hybrid-cp planner needs world_size >= 1, capacity_tokens >= 1 and "
        "balance_slack >= 0; got %d, %d, %g",
        options.world_size, options.capacity_tokens, options.balance_slack));
  }
  for (size_t i = 0; i < sequences.size(); ++i) {
    const int cp = MegatronCpSize(sequences[i].length, options.capacity_tokens);
    if (cp > options.world_size) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "sequence %d (index %d) of %d tokens needs a context-parallel group of %d ranks "
          "(the next power of two of length / capacity_tokens %d), more than the world's %d",
          sequences[i].id, i, sequences[i].length, cp, options.capacity_tokens,
          options.world_size));
    }
  }
  Scheduler scheduler(sequences, options);
  const FlatPlacement placement = scheduler.Run();
  return BuildStepPlan("megatron-hybrid-cp", sequences, placement, cost, options.capacity_tokens);
}

}  // namespace loom
