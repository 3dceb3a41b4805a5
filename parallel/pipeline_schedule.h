// Pipeline schedules as data: for each rank of a pipeline of p ranks, the order of its forward
// (F), backward (B) and weight-gradient (W) operations over m micro-batches, each on one of the
// rank's v model chunks (rank k holds stages k, k + p, ..., k + (v - 1) p, as Megatron-LM's
// interleaved schedule places them).
//
// Every schedule here is one rule applied to two sequences. A rank's forwards run in its forward
// order: micro-batches 0..m-1 and, with v > 1, in groups of p micro-batches (the first also
// taking the remainder of m / p), chunk by chunk (Megatron-LM's order). Its backwards run in the
// same order with the chunks reversed and with each group of dependent chunks (ChunkFlow: the
// chunks of one long sequence, consecutive micro-batches whose backwards must run last chunk
// first) reversed. The rank first runs
// `warmup` forwards, then alternates one forward and one backward, then runs the remaining
// backwards; a backward whose own forward has not run yet on this rank (a reversed chunk group)
// first runs the forwards up to it. The schedules differ in the warm-up and in the W:
//   gpipe        every forward first; W inside B
//   1f1b         warm-up p - 1 - k on rank k; W inside B
//   interleaved  warm-up 2 (p - 1 - k) + (v - 1) g (Megatron-LM); W inside B. Megatron-LM needs m
//                to be a multiple of p and g = p; here the first group takes the remainder too
//                (g = p + m mod p), which keeps (p - 1) / (v m) for any m >= p, and fewer than p
//                micro-batches are padded to p with placeholders that are then dropped
//   zb-h1        as 1f1b, with B split into B (input gradient) and W (weight gradient): rank k
//                runs the W of a micro-batch k backwards after its B, and the rest at the end, so
//                that later ranks, whose backwards others wait for, defer their W into the time
//                they would otherwise idle (Zero Bubble Pipeline Parallelism, arXiv 2401.10241,
//                handcrafted schedule ZB-H1)
// Because the rule only counts operations, every rank of every stage sees the same sequences and
// warm-up counts that shrink by at least one per later rank, no rank ever waits for an operation
// that comes after one the other rank waits for: the schedules cannot deadlock (the dry run and
// the validator check it as well).
#ifndef LOOM_PARALLEL_PIPELINE_SCHEDULE_H_
#define LOOM_PARALLEL_PIPELINE_SCHEDULE_H_

#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace loom {

enum class PipelineScheduleKind { kGpipe, k1f1b, kInterleaved, kZbh1 };

// "gpipe", "1f1b", "interleaved", "zb-h1".
absl::StatusOr<PipelineScheduleKind> ParsePipelineScheduleKind(absl::string_view name);
const char* PipelineScheduleName(PipelineScheduleKind kind);

struct PipeOp {
  enum class Kind { kF, kB, kW };
  Kind kind = Kind::kF;
  int micro_batch = 0;
  int chunk = 0;  // model chunk of the rank: stage chunk * p + rank

  friend bool operator==(const PipeOp&, const PipeOp&) = default;
};

struct PipelineShape {
  int ranks = 1;          // p
  int chunks = 1;         // v
  int micro_batches = 0;  // m
  // Dependent chunk groups, each [first, first + count) of consecutive micro-batches.
  std::vector<std::pair<int, int>> dependent_groups;
  // 1f1b and zb-h1: forwards every rank runs before its first backward beyond the textbook
  // warm-up (the same on every rank, so later ranks still run fewer). More forwards in flight
  // cost memory, and let a rank go on with other micro-batches while a long sequence's
  // backwards come back (its chunks' backwards wait for all its forwards).
  int extra_warmup = 0;
};

// Per rank, its operations in order. Fails when the shape is out of range or the schedule does
// not fit it (interleaved needs v >= 2, the others v = 1).
absl::StatusOr<std::vector<std::vector<PipeOp>>> MakePipelineSchedule(PipelineScheduleKind kind,
                                                                      const PipelineShape& shape);

// "F3", "B0.1" (micro-batch 0, chunk 1), "W2": for golden lists in tests and for traces.
std::string PipeOpName(const PipeOp& op);

}  // namespace loom

#endif  // LOOM_PARALLEL_PIPELINE_SCHEDULE_H_
