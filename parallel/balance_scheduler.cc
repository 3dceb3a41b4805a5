#include "parallel/balance_scheduler.h"

#include <algorithm>
#include <bit>
#include <cmath>
#include <functional>
#include <numeric>
#include <optional>
#include <set>
#include <utility>

#include "parallel/activation_offload.h"
#include "parallel/hdp_placement.h"
#include "parallel/plan_builder.h"
#include "parallel/ring_share.h"

namespace loom {
namespace {

using Entry = std::pair<double, int>;  // load, rank

// Sorts ranks by (load, rank), greatest first. The buckets LPT reaches late hold thousands of
// ranks with loads spread evenly over the bucket, so large runs are first spread over finer
// buckets by load, a handful each, which brings the sort close to linear time.
void SortRun(std::vector<Entry>& run, std::vector<Entry>& spare, std::vector<uint32_t>& ends) {
  constexpr size_t kSmall = 32;
  constexpr size_t kPerFine = 4;
  auto sort_small = [](Entry* first, Entry* last) {
    if (static_cast<size_t>(last - first) > kSmall) {
      std::sort(first, last, std::greater<Entry>());
      return;
    }
    for (Entry* i = first + (first != last); i < last; ++i) {
      const Entry value = *i;
      Entry* j = i;
      for (; j != first && *(j - 1) < value; --j) *j = *(j - 1);
      *j = value;
    }
  };
  const size_t n = run.size();
  if (n <= kSmall) {
    sort_small(run.data(), run.data() + n);
    return;
  }
  double lo = run[0].first;
  double hi = run[0].first;
  for (const Entry& e : run) {
    lo = std::min(lo, e.first);
    hi = std::max(hi, e.first);
  }
  const size_t fine = n / kPerFine;
  double per_load = hi > lo ? (static_cast<double>(fine) - 0.5) / (hi - lo) : 0.0;
  if (!std::isfinite(per_load)) per_load = 0.0;  // loads a denormal apart: one fine bucket
  auto index = [&](const Entry& e) { return static_cast<size_t>((hi - e.first) * per_load); };
  ends.assign(fine + 1, 0);
  for (const Entry& e : run) ++ends[index(e) + 1];
  std::partial_sum(ends.begin(), ends.end(), ends.begin());
  spare.resize(n);
  for (const Entry& e : run) spare[ends[index(e)]++] = e;
  // Fine bucket i now ends at ends[i].
  for (size_t i = 0, from = 0; i < fine; from = ends[i++]) {
    sort_small(spare.data() + from, spare.data() + ends[i]);
  }
  run.swap(spare);
}

// Ranks by (load, rank), least first: exactly the order of a binary min-heap over all ranks, at a
// fraction of its cost when half a million sequences go one by one onto 12,288 ranks. Loads fall
// into buckets of equal width, kept as unordered lists but for the lowest non-empty one, which is
// sorted when reached and then popped from its end. A rank that gets a sequence moves up, nearly
// always into a later bucket; what lands in the current one waits in a small heap beside it, and a
// push below it (a ring's unused candidates going back) rewinds to that bucket.
class RankQueue {
 public:
  // Loads in [0, span) are spread over `buckets` buckets, larger ones all go into the last.
  RankQueue(int world, double span, size_t buckets)
      : head_(std::max<size_t>(buckets, 1), -1),
        next_(static_cast<size_t>(world), -1),
        key_(static_cast<size_t>(world), 0.0),
        per_load_(span > 0 ? static_cast<double>(head_.size()) / span : 0.0) {}

  bool empty() const { return size_ == 0; }

  // A rank that is likely to be popped `ahead` pops from now (the sorted part of the current
  // bucket says), or -1 if unknown; costs nothing.
  int Upcoming(size_t ahead) const {
    return ahead < run_.size() ? run_[run_.size() - 1 - ahead].second : -1;
  }

  void Push(Entry entry) {
    ++size_;
    const size_t bucket = Bucket(entry.first);
    if (bucket == current_ && !(run_.empty() && late_.empty())) {
      late_.push_back(entry);
      std::push_heap(late_.begin(), late_.end(), std::greater<Entry>());
      return;
    }
    if (bucket < current_) {
      for (const Entry& e : run_) List(current_, e);
      for (const Entry& e : late_) List(current_, e);
      run_.clear();
      late_.clear();
      current_ = bucket;
    }
    List(bucket, entry);
  }

  Entry Pop() {
    while (run_.empty() && late_.empty()) {
      int r = head_[current_];
      if (r < 0) {
        ++current_;
        continue;
      }
      for (; r >= 0; r = next_[static_cast<size_t>(r)]) {
        run_.push_back({key_[static_cast<size_t>(r)], r});
      }
      head_[current_] = -1;
      SortRun(run_, spare_, fine_);
    }
    --size_;
    if (!late_.empty() && (run_.empty() || late_.front() < run_.back())) {
      std::pop_heap(late_.begin(), late_.end(), std::greater<Entry>());
      const Entry top = late_.back();
      late_.pop_back();
      return top;
    }
    const Entry top = run_.back();
    run_.pop_back();
    return top;
  }

 private:
  size_t Bucket(double load) const {
    const double b = load * per_load_;
    const size_t last = head_.size() - 1;
    if (!(b > 0)) return 0;
    return b < static_cast<double>(last) ? static_cast<size_t>(b) : last;
  }
  void List(size_t bucket, Entry entry) {
    const size_t r = static_cast<size_t>(entry.second);
    key_[r] = entry.first;
    next_[r] = head_[bucket];
    head_[bucket] = entry.second;
  }

  std::vector<int> head_;    // per bucket: a listed rank, or -1
  std::vector<int> next_;    // per rank: the next listed rank of its bucket, or -1
  std::vector<double> key_;  // per rank: its load while listed
  // Bucket current_, once reached (its list is then empty): sorted, least last, and a min-heap of
  // the ranks pushed into it since.
  std::vector<Entry> run_;
  std::vector<Entry> late_;
  std::vector<Entry> spare_;     // for sorting run_
  std::vector<uint32_t> fine_;   // for sorting run_
  size_t current_ = 0;
  size_t size_ = 0;
  double per_load_;
};

// A whole sequence on a rank.
struct Placed {
  SequenceSpec sequence;
  int slot;
};

class Scheduler {
 public:
  Scheduler(const std::vector<SequenceSpec>& sequences, const HdpOptions& options,
            const CostModel& cost)
      : sequences_(sequences),
        world_(options.world_size),
        capacity_(options.capacity_tokens),
        offload_(options.offload),
        count_ring_messages_(options.count_ring_messages),
        cost_(cost),
        micro_batch_s_(cost.n_layers * cost.overhead_s),
        load_(static_cast<size_t>(options.world_size), 0.0),
        slots_(static_cast<size_t>(options.world_size), 0) {}

  FlatPlacement Run() {
    std::vector<Ring> rings;
    size_t whole_count = 0;
    double total = 0.0;
    int64_t tokens = 0;
    for (size_t i = 0; i < sequences_.size(); ++i) {
      const int64_t length = sequences_[i].length;
      const double seconds = cost_.DocumentSeconds(length);
      if (length > capacity_) {
        const int min_members =
            offload_ != nullptr ? MinRingMembers(length, capacity_, cost_, *offload_, world_)
                                : static_cast<int>((length + capacity_ - 1) / capacity_);
        rings.push_back({sequences_[i], seconds, min_members, seconds / min_members});
      } else {
        ++whole_count;
      }
      total += seconds;
      tokens += length;
    }
    // Every micro-batch costs its overhead; the batch needs about tokens / C of them.
    const int64_t micro_batches = (tokens + capacity_ - 1) / capacity_;
    total += micro_batch_s_ * static_cast<double>(micro_batches);
    target_ = total / world_;
    // About as many slots per rank as the mean rank runs, and room to spare.
    stride_ = static_cast<size_t>(micro_batches / world_) + 8;
    free_.assign(static_cast<size_t>(world_) * stride_, capacity_);

    // Loads stay under about the target, so buckets over twice that: a dozen or so per rank keep
    // the lowest one short, and enough for the smallest sequence to move its rank out of the
    // current one in worlds of a few ranks.
    queue_.emplace(world_, 2 * target_,
                   std::max(static_cast<size_t>(world_) * kBucketsPerRank, kMinBuckets));
    for (int r = 0; r < world_; ++r) queue_->Push({0.0, r});
    PlaceRings(std::move(rings));
    std::vector<SequenceSpec> wholes = WholesLongestFirst(whole_count);
    std::vector<int> rank_of(wholes.size());
    std::vector<int> slot_of(wholes.size());
    PlaceWholes(wholes, rank_of, slot_of);
    queue_.reset();
    if (NeedsRefinement()) {
      // Refinement moves sequences between ranks, so it works on per-rank lists.
      Gather(wholes, rank_of, slot_of);
      Refine();
      Scatter(wholes, rank_of, slot_of);
    }
    return Output(wholes, rank_of, slot_of);
  }

  // The slowest rank's load: the cost model's time summed over its micro-batches, as
  // SlowestRankSeconds counts it, up to rounding.
  double slowest() const { return *std::max_element(load_.begin(), load_.end()); }

 private:
  static constexpr size_t kBucketsPerRank = 16;
  static constexpr size_t kMinBuckets = size_t{1} << 16;
  static constexpr size_t kPrefetchAhead = 8;
  // Refinement stops once the slowest rank is within this of the mean: further moves no longer
  // pay for their time.
  static constexpr double kGoodEnough = 1e-4;

  // A sequence longer than C, with its cost, the fewest members that hold it and its cost per
  // member on that many, by which rings are placed.
  struct Ring {
    SequenceSpec sequence;
    double seconds;
    int min_members;
    double per_member;
  };

  // A rank's sequences kept whole, as a range of placed_ that moves to its end when it grows.
  struct Span {
    size_t begin = 0;
    size_t size = 0;
    size_t capacity = 0;
  };

  int64_t& Free(int r, int slot) {
    return free_[static_cast<size_t>(r) * stride_ + static_cast<size_t>(slot)];
  }
  int64_t Free(int r, int slot) const {
    return free_[static_cast<size_t>(r) * stride_ + static_cast<size_t>(slot)];
  }

  // Gives rank r at least `slots` slots, new ones empty. Every rank's slots lie in one row of
  // free_ (one fetch where LPT reads them), which widens for all when one rank needs more.
  void EnsureSlots(int r, int slots) {
    int& have = slots_[static_cast<size_t>(r)];
    if (slots <= have) return;
    if (static_cast<size_t>(slots) > stride_) {
      const size_t stride = std::max(static_cast<size_t>(slots), 2 * stride_);
      std::vector<int64_t> wider(static_cast<size_t>(world_) * stride, capacity_);
      for (size_t q = 0; q < static_cast<size_t>(world_); ++q) {
        std::copy_n(free_.begin() + static_cast<std::ptrdiff_t>(q * stride_), slots_[q],
                    wider.begin() + static_cast<std::ptrdiff_t>(q * stride));
      }
      free_.swap(wider);
      stride_ = stride;
    }
    have = slots;
  }

  // Seconds of a member's ring messages that its attention does not hide, for `seq` on
  // `members` ranks (count_ring_messages_): per layer and ring step, the message of the largest
  // share against the member's attention per step (about a * L^2 / members^2 under zigzag), in
  // the forward and in the backward (two or three messages), as the simulator counts them.
  double ExposedRingSeconds(const SequenceSpec& seq, int members) const {
    if (!count_ring_messages_ || members < 2) return 0.0;
    const LinkCost& link = world_ > cost_.ranks_per_node ? cost_.inter_node : cost_.intra_node;
    const int64_t share = (seq.length + members - 1) / members + 1;
    const double message_s = link.Seconds(static_cast<double>(share * cost_.kv_bytes_per_token));
    const double l = static_cast<double>(seq.length);
    const double attention_step_s = cost_.attention_s * l * l / members / members;
    const double forward = std::max(0.0, message_s - attention_step_s * (1 - cost_.backward_fraction));
    const double backward = std::max(0.0, (cost_.layer_recompute ? 3.0 : 2.0) * message_s -
                                              attention_step_s * cost_.backward_fraction);
    return cost_.n_layers * (members - 1) * (forward + backward);
  }

  void PlaceRings(std::vector<Ring> rings) {
    std::sort(rings.begin(), rings.end(),
              [](const Ring& x, const Ring& y) { return x.per_member > y.per_member; });
    placement_.rings.reserve(rings.size());
    placement_.ring_sequences.reserve(rings.size());
    std::vector<Entry> candidates;
    std::vector<int> members;
    TokenRange share[2];
    for (const Ring& ring : rings) {
      const double seq_s = ring.seconds;
      const int k_min = ring.min_members;
      const SequenceSpec& seq = ring.sequence;
      // At most one member per token, so that no member's share is empty.
      const int k_max = static_cast<int>(std::min<int64_t>(world_, seq.length));
      // Pop ranks in increasing load until the k least loaded can take a 1/k share each and stay
      // under the target; failing that, the k with the lowest resulting maximum.
      candidates.clear();
      int chosen = -1;
      int best = k_min;
      double best_peak = 0.0;
      while (!queue_->empty() && static_cast<int>(candidates.size()) < k_max) {
        candidates.push_back(queue_->Pop());
        const int k = static_cast<int>(candidates.size());
        if (k < k_min) continue;
        const double peak = candidates.back().first + seq_s / k + micro_batch_s_;
        if (k == k_min || peak < best_peak) {
          best = k;
          best_peak = peak;
        }
        if (peak <= target_) {
          chosen = k;
          break;
        }
      }
      if (chosen < 0) chosen = best;
      for (size_t c = static_cast<size_t>(chosen); c < candidates.size(); ++c) {
        queue_->Push(candidates[c]);
      }
      members.clear();
      for (int c = 0; c < chosen; ++c) members.push_back(candidates[static_cast<size_t>(c)].second);
      // Ring neighbours in rank order keep most hops inside a node.
      std::sort(members.begin(), members.end());
      int slot = 0;
      for (const int r : members) slot = std::max(slot, slots_[static_cast<size_t>(r)]);
      // The members' rows are scattered over free_: ask for all of them before using any.
      for (const int r : members) {
        __builtin_prefetch(&free_[static_cast<size_t>(r) * stride_ + static_cast<size_t>(slot)]);
      }
      for (int m = 0; m < chosen; ++m) {
        const int r = members[static_cast<size_t>(m)];
        EnsureSlots(r, slot + 1);
        const int count = ZigzagShareInto(seq.id, seq.length, chosen, m, share);
        // What CostModel::MicroBatchSeconds adds up, in its order.
        double seconds = cost_.n_layers * cost_.overhead_s;
        for (int p = 0; p < count; ++p) {
          Free(r, slot) -= share[p].size();
          seconds += cost_.RangeSeconds(share[p].begin, share[p].end);
        }
        load_[static_cast<size_t>(r)] += seconds + ExposedRingSeconds(seq, chosen);
        queue_->Push({load_[static_cast<size_t>(r)], r});
      }
      placement_.AddRing(slot, members, std::span<const SequenceSpec>(&seq, 1));
    }
  }

  // First slot of rank r with room for `length` tokens (a new one if none); returns the slot and
  // whether it was empty.
  std::pair<int, bool> FirstFit(int r, int64_t length) {
    const int slots = slots_[static_cast<size_t>(r)];
    for (int s = 0; s < slots; ++s) {
      const int64_t f = Free(r, s);
      if (f >= length) return {s, f == capacity_};
    }
    EnsureSlots(r, slots + 1);
    return {slots, true};
  }

  // Whether rank r would open a new micro-batch for `length` tokens.
  bool Opens(int r, int64_t length) const {
    for (int s = 0; s < slots_[static_cast<size_t>(r)]; ++s) {
      const int64_t f = Free(r, s);
      if (f >= length) return f == capacity_;
    }
    return true;
  }

  // The `count` sequences of at most C tokens, longest first and ties in batch order: a stable
  // radix sort on C - length, straight out of the batch, whose one pass for C up to about a
  // million (a few for more) costs far less than comparison-sorting half a million. They carry
  // their ids, so nothing later looks up the batch at random.
  std::vector<SequenceSpec> WholesLongestFirst(size_t count) const {
    constexpr int kMaxBits = 20;
    const int bits = std::bit_width(static_cast<uint64_t>(capacity_ - 1));  // lengths are 1 to C
    const int passes = std::max(1, (bits + kMaxBits - 1) / kMaxBits);
    const int digit_bits = (bits + passes - 1) / passes;
    const uint64_t mask = (uint64_t{1} << digit_bits) - 1;
    std::vector<SequenceSpec> sorted(count);
    std::vector<SequenceSpec> from;
    std::vector<size_t> begin(static_cast<size_t>(mask) + 2);
    for (int pass = 0; pass < passes; ++pass) {
      const int shift = pass * digit_bits;
      auto digit = [&](const SequenceSpec& s) {
        return static_cast<size_t>((static_cast<uint64_t>(capacity_ - s.length) >> shift) & mask);
      };
      // The first pass reads the batch, skipping sequences spread over rings.
      const std::vector<SequenceSpec>& in = pass == 0 ? sequences_ : from;
      std::fill(begin.begin(), begin.end(), 0);
      for (const SequenceSpec& s : in) {
        if (s.length <= capacity_) ++begin[digit(s) + 1];
      }
      std::partial_sum(begin.begin(), begin.end(), begin.begin());
      for (const SequenceSpec& s : in) {
        if (s.length <= capacity_) sorted[begin[digit(s)]++] = s;
      }
      if (pass + 1 < passes) {
        from.swap(sorted);
        sorted.resize(count);
      }
    }
    return sorted;
  }

  // Longest first onto the least loaded rank (LPT), first fit into its micro-batches. Where each
  // sequence went is written down in sorted order, which keeps this loop's scattered reads and
  // writes to the rank it picks; the slots of the rank due a few pops later are fetched ahead,
  // as 12,288 ranks' slots outgrow the caches nearest the core.
  void PlaceWholes(const std::vector<SequenceSpec>& wholes, std::vector<int>& rank_of,
                   std::vector<int>& slot_of) {
    int64_t length = -1;
    double seconds = 0.0;
    for (size_t w = 0; w < wholes.size(); ++w) {
      const int r = queue_->Pop().second;
      if (const int next = queue_->Upcoming(kPrefetchAhead); next >= 0) {
        const int64_t* row = &free_[static_cast<size_t>(next) * stride_];
        __builtin_prefetch(row);
        __builtin_prefetch(row + 8);
      }
      // Sorted by length, so the cost is worked out once per length.
      if (wholes[w].length != length) {
        length = wholes[w].length;
        seconds = cost_.DocumentSeconds(length);
      }
      const auto [slot, opens] = FirstFit(r, length);
      Free(r, slot) -= length;
      double& load = load_[static_cast<size_t>(r)];
      load += seconds + (opens ? micro_batch_s_ : 0.0);
      queue_->Push({load, r});
      rank_of[w] = r;
      slot_of[w] = slot;
    }
  }

  bool NeedsRefinement() const {
    if (world_ <= 1) return false;
    double total = 0.0;
    for (const double load : load_) total += load;
    return slowest() > (1 + kGoodEnough) * total / world_;
  }

  // Every rank's whole sequences into its range of placed_, in the order it got them.
  void Gather(const std::vector<SequenceSpec>& wholes, const std::vector<int>& rank_of,
              const std::vector<int>& slot_of) {
    spans_.assign(static_cast<size_t>(world_), Span{});
    for (const int r : rank_of) ++spans_[static_cast<size_t>(r)].capacity;
    size_t begin = 0;
    for (Span& span : spans_) {
      span.begin = begin;
      begin += span.capacity;
    }
    placed_.resize(begin);
    for (size_t w = 0; w < wholes.size(); ++w) {
      Span& span = spans_[static_cast<size_t>(rank_of[w])];
      placed_[span.begin + span.size++] = {wholes[w], slot_of[w]};
    }
  }

  // The other way: every rank's sequences in rank order, each in the order of its range.
  void Scatter(std::vector<SequenceSpec>& wholes, std::vector<int>& rank_of,
               std::vector<int>& slot_of) const {
    size_t w = 0;
    for (int r = 0; r < world_; ++r) {
      const Span& span = spans_[static_cast<size_t>(r)];
      for (size_t p = 0; p < span.size; ++p, ++w) {
        wholes[w] = placed_[span.begin + p].sequence;
        rank_of[w] = r;
        slot_of[w] = placed_[span.begin + p].slot;
      }
    }
  }

  Placed& At(int r, size_t p) { return placed_[spans_[static_cast<size_t>(r)].begin + p]; }
  double CostOf(const Placed& placed) const {
    return cost_.DocumentSeconds(placed.sequence.length);
  }

  // Appends to rank r's sequences, moving them to the end of placed_ when their range is full.
  void Append(int r, Placed placed) {
    Span& span = spans_[static_cast<size_t>(r)];
    if (span.size == span.capacity) {
      const size_t begin = placed_.size();
      span.capacity = std::max<size_t>(4, 2 * span.capacity);
      placed_.resize(begin + span.capacity);
      std::copy_n(placed_.begin() + static_cast<std::ptrdiff_t>(span.begin), span.size,
                  placed_.begin() + static_cast<std::ptrdiff_t>(begin));
      span.begin = begin;
    }
    placed_[span.begin + span.size++] = placed;
  }

  // Takes the whole sequence at `p` off rank r (its last one takes its place); emptying its slot
  // saves a micro-batch.
  Placed Remove(int r, size_t p) {
    Span& span = spans_[static_cast<size_t>(r)];
    const Placed placed = placed_[span.begin + p];
    placed_[span.begin + p] = placed_[span.begin + span.size - 1];
    --span.size;
    int64_t& free = Free(r, placed.slot);
    free += placed.sequence.length;
    load_[static_cast<size_t>(r)] -= CostOf(placed) + (free == capacity_ ? micro_batch_s_ : 0.0);
    return placed;
  }

  // Evens out the most and the least loaded rank, while that lowers the larger of their loads:
  // either moves one whole sequence across, or swaps two sequences of the same slot sizes, picking
  // the change closest to half their gap. Ring shares stay where they are. Stops once the slowest
  // rank is within kGoodEnough of the mean.
  void Refine() {
    std::set<Entry> by_load;
    double total = 0.0;
    for (int r = 0; r < world_; ++r) {
      by_load.insert({load_[static_cast<size_t>(r)], r});
      total += load_[static_cast<size_t>(r)];
    }
    std::vector<size_t> by_cost;
    for (int round = 0; round < 4 * world_; ++round) {
      const auto [max_load, hi] = *by_load.rbegin();
      const auto [min_load, lo] = *by_load.begin();
      if (max_load <= (1 + kGoodEnough) * total / world_) break;
      const size_t from_size = spans_[static_cast<size_t>(hi)].size;
      const double eps = 1e-12 * max_load;
      double best_peak = max_load - eps;
      size_t move = from_size;
      std::pair<size_t, size_t> swap = {from_size, 0};
      for (size_t p = 0; p < from_size; ++p) {
        const double moved = CostOf(At(hi, p));
        const bool opens = Opens(lo, At(hi, p).sequence.length);
        const double peak =
            std::max(max_load - moved, min_load + moved + (opens ? micro_batch_s_ : 0.0));
        if (peak < best_peak) {
          move = p;
          best_peak = peak;
        }
      }
      // Swaps: for each sequence x on the busy rank, the sequences y on the idle one whose cost
      // is nearest cost(x) - gap/2, exchanged in place when both fit.
      by_cost.resize(spans_[static_cast<size_t>(lo)].size);
      std::iota(by_cost.begin(), by_cost.end(), size_t{0});
      std::sort(by_cost.begin(), by_cost.end(),
                [&](size_t x, size_t y) { return CostOf(At(lo, x)) < CostOf(At(lo, y)); });
      const double gap = max_load - min_load;
      for (size_t p = 0; p < from_size && !by_cost.empty(); ++p) {
        const double cx = CostOf(At(hi, p));
        const auto at = std::lower_bound(
            by_cost.begin(), by_cost.end(), cx - gap / 2,
            [&](size_t q, double value) { return CostOf(At(lo, q)) < value; });
        const size_t centre = static_cast<size_t>(at - by_cost.begin());
        for (size_t k = centre > 2 ? centre - 2 : 0; k < std::min(by_cost.size(), centre + 2);
             ++k) {
          const size_t q = by_cost[k];
          const double d = cx - CostOf(At(lo, q));
          if (d <= 0) continue;
          const int64_t lx = At(hi, p).sequence.length;
          const int64_t ly = At(lo, q).sequence.length;
          if (Free(lo, At(lo, q).slot) + ly < lx || Free(hi, At(hi, p).slot) + lx < ly) {
            continue;
          }
          const double peak = std::max(max_load - d, min_load + d);
          if (peak < best_peak) {
            best_peak = peak;
            swap = {p, q};
            move = from_size;
          }
        }
      }
      by_load.erase({max_load, hi});
      by_load.erase({min_load, lo});
      if (swap.first < from_size) {
        Placed& x = At(hi, swap.first);
        Placed& y = At(lo, swap.second);
        const double d = CostOf(x) - CostOf(y);
        Free(hi, x.slot) += x.sequence.length - y.sequence.length;
        Free(lo, y.slot) += y.sequence.length - x.sequence.length;
        std::swap(x.sequence, y.sequence);  // each keeps its slot
        load_[static_cast<size_t>(hi)] -= d;
        load_[static_cast<size_t>(lo)] += d;
      } else if (move < from_size) {
        const double before = load_[static_cast<size_t>(hi)] + load_[static_cast<size_t>(lo)];
        Placed moved = Remove(hi, move);
        const auto [slot, opens] = FirstFit(lo, moved.sequence.length);
        Free(lo, slot) -= moved.sequence.length;
        load_[static_cast<size_t>(lo)] += CostOf(moved) + (opens ? micro_batch_s_ : 0.0);
        moved.slot = slot;
        Append(lo, moved);
        // Micro-batches opened or emptied.
        total += load_[static_cast<size_t>(hi)] + load_[static_cast<size_t>(lo)] - before;
      }
      by_load.insert({load_[static_cast<size_t>(hi)], hi});
      by_load.insert({load_[static_cast<size_t>(lo)], lo});
      if (swap.first == from_size && move == from_size) break;
    }
  }

  // Every rank's whole sequences by slot, in a slot in the order of `wholes`: a counting sort by
  // (rank, slot), whose cells are laid out as the rows of free_.
  FlatPlacement Output(const std::vector<SequenceSpec>& wholes, const std::vector<int>& rank_of,
                       const std::vector<int>& slot_of) {
    std::vector<size_t> cell(static_cast<size_t>(world_) * stride_ + 1, 0);
    for (size_t w = 0; w < wholes.size(); ++w) {
      ++cell[static_cast<size_t>(rank_of[w]) * stride_ + static_cast<size_t>(slot_of[w]) + 1];
    }
    std::partial_sum(cell.begin(), cell.end(), cell.begin());
    FlatPlacement& placement = placement_;
    placement.rank_begin.resize(static_cast<size_t>(world_) + 1);
    for (size_t r = 0; r <= static_cast<size_t>(world_); ++r) {
      placement.rank_begin[r] = cell[r * stride_];
    }
    placement.local.resize(wholes.size());
    for (size_t w = 0; w < wholes.size(); ++w) {
      const size_t at =
          cell[static_cast<size_t>(rank_of[w]) * stride_ + static_cast<size_t>(slot_of[w])]++;
      placement.local[at] = {slot_of[w], wholes[w]};
    }
    return std::move(placement_);
  }

  const std::vector<SequenceSpec>& sequences_;
  const int world_;
  const int64_t capacity_;
  const OffloadPolicy* offload_;
  const bool count_ring_messages_;
  const CostModel& cost_;
  const double micro_batch_s_;
  double target_ = 0.0;
  std::vector<double> load_;      // per rank
  std::vector<int> slots_;        // per rank: slots it has (some maybe still empty)
  std::vector<int64_t> free_;     // free tokens of rank r's slot s at r * stride_ + s
  size_t stride_ = 0;
  std::optional<RankQueue> queue_;
  FlatPlacement placement_;       // rings as they are placed, then everything
  std::vector<Placed> placed_;    // while refining: every rank's whole sequences, in spans_
  std::vector<Span> spans_;
};

}  // namespace

absl::StatusOr<StepPlan> PlanBalancedHdp(const std::vector<SequenceSpec>& sequences,
                                         const HdpOptions& options, const CostModel& cost) {
  if (absl::Status s = CheckHdpBatch(sequences, options, &cost); !s.ok()) return s;
  Scheduler scheduler(sequences, options, cost);
  FlatPlacement balanced = scheduler.Run();
  // A sequence only offloading lets the world hold cannot be placed in order.
  const int64_t world_capacity = options.world_size * options.capacity_tokens;
  const bool in_order_possible =
      std::none_of(sequences.begin(), sequences.end(),
                   [&](const SequenceSpec& s) { return s.length > world_capacity; });
  // Packing in batch order occasionally lands on a slightly better quantisation of micro-batches
  // (each costs the fixed overhead); the cheaper of the two is kept, so balancing never loses.
  // Making the in-order placement is left out when a rank of it provably reaches ours (with a
  // margin for rounding), as at scale it does after a small part of the batch.
  if (in_order_possible &&
      !InOrderReaches(sequences, options, cost, scheduler.slowest() * (1 + 1e-9))) {
    FlatPlacement in_order = PlaceInOrder(sequences, options);
    if (SlowestRankSeconds(in_order, cost) < SlowestRankSeconds(balanced, cost)) {
      balanced = std::move(in_order);
    }
  }
  StepPlan plan = BuildStepPlan("balanced", sequences, balanced, cost, options.capacity_tokens);
  if (options.offload != nullptr) ApplyOffload(plan, cost, *options.offload);
  return plan;
}

}  // namespace loom
