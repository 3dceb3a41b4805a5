// Element-wise reductions on type-erased buffers: the arithmetic of the local and mpi backends.
#ifndef LOOM_RUNTIME_REDUCE_H_
#define LOOM_RUNTIME_REDUCE_H_

#include <cstddef>
#include <span>

#include "runtime/dtype.h"

namespace loom {

// out[e] = inputs[0][e] op inputs[1][e] op ... for e in [begin, end), combining the inputs in
// index order (bf16 accumulates in fp32 and rounds once), so the result does not depend on which
// thread computes it or when. kAvg divides the sum by inputs.size(). `out` may be one of the
// inputs.
void ReduceInOrder(DataType type, ReduceOp op, std::span<const void* const> inputs, void* out,
                   size_t begin, size_t end);

}  // namespace loom

#endif  // LOOM_RUNTIME_REDUCE_H_
