// Slicing a long sequence for a pipeline by cost, not by token count.
//
// A long sequence's dependent chunks pass a pipeline as a chain: every stage runs them forward in
// order and backward last chunk first, so a stage waits for the chain to fill before its first
// backward, and for the last chunk to come back through every later stage. That wait is set by
// the costliest chunk, and with causal attention the last chunk is the costliest: a chunk of C
// tokens at the end of a sequence attends to everything before it. Cutting the sequence into
// slices of equal cost instead of equal length (long slices early, short ones late) and into more
// of them shortens the wait. TeraPipe (Li et al., "TeraPipe: Token-Level Pipeline Parallelism for
// Training Large-Scale Language Models", ICML 2021, arXiv 2102.07988) makes the same argument and
// chooses the slicing that minimises sum(t_i) + (p - 1) * max(t_i) over the slices' times t_i;
// so do we, under loom's cost model, with every slice at most C tokens (the memory budget of a
// micro-batch) and the per-micro-batch overhead counted in every t_i.
#ifndef LOOM_PARALLEL_TOKEN_SLICING_H_
#define LOOM_PARALLEL_TOKEN_SLICING_H_

#include <cstdint>
#include <vector>

#include "parallel/cost_model.h"

namespace loom {

// Cut points of tokens [begin, end) of one sequence: slice i is [cuts[i], cuts[i + 1]), so
// cuts.front() == begin and cuts.back() == end.
using TokenCuts = std::vector<int64_t>;

// The fewest slices of [begin, end) with at most `capacity` tokens each and each costing at most
// `max_seconds` (MicroBatchSeconds of the slice alone), taking the longest slice that fits at
// every step (which is optimal: a slice's cost only grows with its extent). A single token that
// costs more than `max_seconds` still makes a slice of its own.
TokenCuts SliceByCost(int64_t begin, int64_t end, int64_t capacity, double max_seconds,
                      const CostModel& cost);

// The slicing of [begin, end) for a pipeline of `stages` stages that minimises
// sum(t_i) + (stages - 1) * max(t_i) among SliceByCost's slicings for a sweep of max_seconds,
// from the whole range's cost down to slices of a few tokens. `capacity` as above.
TokenCuts SliceForPipeline(int64_t begin, int64_t end, int64_t capacity, int stages,
                           const CostModel& cost);

}  // namespace loom

#endif  // LOOM_PARALLEL_TOKEN_SLICING_H_
