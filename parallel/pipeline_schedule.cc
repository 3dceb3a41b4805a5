#include "parallel/pipeline_schedule.h"

#include <algorithm>

#include "absl/strings/str_format.h"

namespace loom {

absl::StatusOr<PipelineScheduleKind> ParsePipelineScheduleKind(absl::string_view name) {
  if (name == "gpipe") return PipelineScheduleKind::kGpipe;
  if (name == "1f1b") return PipelineScheduleKind::k1f1b;
  if (name == "interleaved") return PipelineScheduleKind::kInterleaved;
  if (name == "zb-h1") return PipelineScheduleKind::kZbh1;
  return absl::InvalidArgumentError(absl::StrFormat(
      "unknown pipeline schedule '%s'; known: gpipe, 1f1b, interleaved, zb-h1", name));
}

const char* PipelineScheduleName(PipelineScheduleKind kind) {
  switch (kind) {
    case PipelineScheduleKind::kGpipe:
      return "gpipe";
    case PipelineScheduleKind::k1f1b:
      return "1f1b";
    case PipelineScheduleKind::kInterleaved:
      return "interleaved";
    case PipelineScheduleKind::kZbh1:
      return "zb-h1";
  }
  return "?";
}

std::string PipeOpName(const PipeOp& op) {
  const char* kind = op.kind == PipeOp::Kind::kF ? "F" : op.kind == PipeOp::Kind::kB ? "B" : "W";
  if (op.chunk == 0) return absl::StrFormat("%s%d", kind, op.micro_batch);
  return absl::StrFormat("%s%d.%d", kind, op.micro_batch, op.chunk);
}

namespace {

absl::Status CheckShape(PipelineScheduleKind kind, const PipelineShape& shape) {
  if (shape.ranks < 1 || shape.chunks < 1 || shape.micro_batches < 0 || shape.extra_warmup < 0) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "a pipeline needs ranks >= 1, chunks >= 1, micro-batches >= 0 and extra warm-up >= 0; got "
        "%d, %d, %d, %d",
        shape.ranks, shape.chunks, shape.micro_batches, shape.extra_warmup));
  }
  if (kind == PipelineScheduleKind::kInterleaved && shape.chunks < 2) {
    return absl::InvalidArgumentError(
        "the interleaved schedule needs at least 2 model chunks per rank (parallel.vpp >= 2); "
        "with one chunk it is 1f1b");
  }
  if (kind != PipelineScheduleKind::kInterleaved && shape.chunks != 1) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "the %s schedule runs one model chunk per rank; with parallel.vpp = %d use interleaved",
        PipelineScheduleName(kind), shape.chunks));
  }
  int covered = 0;
  std::vector<std::pair<int, int>> groups = shape.dependent_groups;
  std::sort(groups.begin(), groups.end());
  for (const auto& [first, count] : groups) {
    if (count < 1 || first < covered || first + count > shape.micro_batches) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "dependent chunk group [%d, %d) must be non-empty, within the %d micro-batches and "
          "apart from the others",
          first, first + count, shape.micro_batches));
    }
    covered = first + count;
  }
  return absl::OkStatus();
}

// The first group of the interleaved order: p micro-batches and the remainder of m / p.
int FirstGroup(int m, int p) { return m < 2 * p ? m : p + m % p; }

// A rank's forward (or, from `order`, backward) sequence over (micro-batch, chunk): with several
// chunks, in groups of p micro-batches, chunk by chunk (chunks descending for backwards). When p
// does not divide m, the first group takes the remainder as well (FirstGroup): a micro-batch's
// next chunk on a rank must come at least p operations after its previous one (it passes the
// other p - 1 ranks in between), which a group of p or more keeps and a shorter one would not,
// and the warm-up, which covers the first group's chunks, then holds the larger group too.
std::vector<PipeOp> Sequence(PipeOp::Kind kind, const std::vector<int>& order, int p, int v) {
  std::vector<PipeOp> out;
  const int m = static_cast<int>(order.size());
  for (int begin = 0; begin < m;) {
    const int end = begin == 0 ? FirstGroup(m, p) : begin + p;
    for (int c = 0; c < v; ++c) {
      const int chunk = kind == PipeOp::Kind::kF ? c : v - 1 - c;
      for (int i = begin; i < end; ++i) {
        out.push_back(PipeOp{kind, order[static_cast<size_t>(i)], chunk});
      }
    }
    begin = end;
  }
  return out;
}

}  // namespace

absl::StatusOr<std::vector<std::vector<PipeOp>>> MakePipelineSchedule(PipelineScheduleKind kind,
                                                                      const PipelineShape& shape) {
  if (absl::Status s = CheckShape(kind, shape); !s.ok()) return s;
  const int p = shape.ranks, v = shape.chunks;
  // Interleaving goes by groups of at least p micro-batches (Sequence); the warm-up of
  // Megatron-LM, 2 (p - 1 - k) + (v - 1) p, counts the first group's size instead of p. Fewer
  // than p in all are
  // padded to p with placeholders, whose operations are dropped at the end (dropping a
  // micro-batch from every rank keeps the others' order, so the schedule stays deadlock-free).
  // Without the padding the short group's forwards come too early for the warm-up counts and
  // leave more bubble than 1F1B.
  const int real = shape.micro_batches;
  const int m = kind == PipelineScheduleKind::kInterleaved && real > 0 ? std::max(real, p) : real;
  std::vector<int> forward_order(static_cast<size_t>(m));
  for (int i = 0; i < m; ++i) forward_order[static_cast<size_t>(i)] = i;
  std::vector<int> backward_order = forward_order;
  for (const auto& [first, count] : shape.dependent_groups) {
    std::reverse(backward_order.begin() + first, backward_order.begin() + first + count);
  }
  const std::vector<PipeOp> forwards = Sequence(PipeOp::Kind::kF, forward_order, p, v);
  const std::vector<PipeOp> backwards = Sequence(PipeOp::Kind::kB, backward_order, p, v);
  const int total = m * v;

  std::vector<std::vector<PipeOp>> ranks(static_cast<size_t>(p));
  for (int k = 0; k < p; ++k) {
    int warmup = total;
    if (kind == PipelineScheduleKind::k1f1b || kind == PipelineScheduleKind::kZbh1) {
      warmup = std::min(p - 1 - k + shape.extra_warmup, total);
    } else if (kind == PipelineScheduleKind::kInterleaved) {
      warmup = std::min(2 * (p - 1 - k) + (v - 1) * FirstGroup(m, p), total);
    }
    const int w_delay = kind == PipelineScheduleKind::kZbh1 ? k : -1;
    std::vector<PipeOp>& ops = ranks[static_cast<size_t>(k)];
    std::vector<char> forwarded(static_cast<size_t>(total), 0);  // by micro-batch * v + chunk
    size_t next_f = 0, next_b = 0, next_w = 0;
    auto forward = [&] {
      const PipeOp& op = forwards[next_f++];
      forwarded[static_cast<size_t>(op.micro_batch * v + op.chunk)] = 1;
      ops.push_back(op);
    };
    for (int i = 0; i < warmup; ++i) forward();
    while (next_b < backwards.size()) {
      if (next_f < forwards.size()) forward();
      const PipeOp& b = backwards[next_b];
      while (!forwarded[static_cast<size_t>(b.micro_batch * v + b.chunk)]) forward();
      ops.push_back(b);
      ++next_b;
      // ZB-H1: the weight gradient of the backward `w_delay` backwards ago.
      if (w_delay >= 0 && next_b > static_cast<size_t>(w_delay)) {
        PipeOp w = backwards[next_w++];
        w.kind = PipeOp::Kind::kW;
        ops.push_back(w);
      }
    }
    while (w_delay >= 0 && next_w < backwards.size()) {
      PipeOp w = backwards[next_w++];
      w.kind = PipeOp::Kind::kW;
      ops.push_back(w);
    }
    std::erase_if(ops, [&](const PipeOp& op) { return op.micro_batch >= real; });
  }
  return ranks;
}

}  // namespace loom
