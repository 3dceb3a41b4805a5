#include "parallel/context_parallel_attention.h"

#include <algorithm>
#include <unordered_map>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace loom {

absl::StatusOr<GroupTokens> GroupTokens::Gather(Communicator& comm, const Group& group,
                                                const TokenSpans& mine) {
  const std::optional<int> me = group.IndexOf(comm.rank());
  if (!me.has_value()) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "rank %d is not a member of group %s", comm.rank(), group.ToString()));
  }
  std::vector<int64_t> counts(static_cast<size_t>(group.size()));
  const int64_t my_count = mine.n;
  if (absl::Status s = comm.AllGather(group, std::span<const int64_t>(&my_count, 1), counts);
      !s.ok()) {
    return WithContext(s, "gathering token counts");
  }
  std::vector<size_t> sizes(counts.begin(), counts.end());
  size_t total = 0;
  for (size_t n : sizes) total += n;
  std::vector<int32_t> doc(total), pos(total);
  const std::span<const int32_t> my_doc(mine.doc, static_cast<size_t>(mine.n));
  const std::span<const int32_t> my_pos(mine.pos, static_cast<size_t>(mine.n));
  if (absl::Status s = comm.AllGatherV(group, my_doc, doc, sizes); !s.ok()) {
    return WithContext(s, "gathering document ids");
  }
  if (absl::Status s = comm.AllGatherV(group, my_pos, pos, sizes); !s.ok()) {
    return WithContext(s, "gathering positions");
  }
  std::vector<TokenSpans> members;
  size_t offset = 0;
  for (size_t n : sizes) {
    members.push_back(TokenSpans{doc.data() + offset, pos.data() + offset, static_cast<int>(n)});
    offset += n;
  }
  return FromMembers(*me, members);
}

GroupTokens GroupTokens::FromMembers(int me, const std::vector<TokenSpans>& members) {
  GroupTokens t;
  t.me_ = me;
  const int c = static_cast<int>(members.size());
  t.offsets_.resize(static_cast<size_t>(c) + 1, 0);
  for (int m = 0; m < c; ++m) {
    const TokenSpans& s = members[static_cast<size_t>(m)];
    t.counts_.push_back(static_cast<size_t>(s.n));
    t.offsets_[static_cast<size_t>(m) + 1] = t.offsets_[static_cast<size_t>(m)] + s.n;
    t.max_count_ = std::max(t.max_count_, s.n);
    t.doc_.insert(t.doc_.end(), s.doc, s.doc + s.n);
    t.pos_.insert(t.pos_.end(), s.pos, s.pos + s.n);
  }
  const TokenSpans& mine = members[static_cast<size_t>(me)];
  // Latest query position per document on this member: a key is visible iff it belongs to one of
  // these documents at or before that position.
  std::unordered_map<int32_t, int32_t> latest;
  for (int i = 0; i < mine.n; ++i) {
    auto [it, inserted] = latest.try_emplace(mine.doc[i], mine.pos[i]);
    if (!inserted) it->second = std::max(it->second, mine.pos[i]);
  }
  t.visible_.assign(static_cast<size_t>(c), false);
  for (int m = 0; m < c; ++m) {
    for (int64_t j = t.offsets_[static_cast<size_t>(m)]; j < t.offsets_[static_cast<size_t>(m) + 1];
         ++j) {
      auto it = latest.find(t.doc_[static_cast<size_t>(j)]);
      if (it != latest.end() && t.pos_[static_cast<size_t>(j)] <= it->second) {
        t.visible_[static_cast<size_t>(m)] = true;
        break;
      }
    }
  }
  return t;
}

TokenSpans GroupTokens::spans(int member) const {
  const size_t begin = static_cast<size_t>(offsets_[static_cast<size_t>(member)]);
  return TokenSpans{doc_.data() + begin, pos_.data() + begin, count(member)};
}

TokenSpans GroupTokens::all_spans() const {
  return TokenSpans{doc_.data(), pos_.data(), static_cast<int>(doc_.size())};
}

absl::Status WithContext(const absl::Status& status, const std::string& context) {
  if (status.ok()) return status;
  return absl::Status(status.code(), absl::StrCat(context, ": ", status.message()));
}

}  // namespace loom
