// Token embedding lookup. Backward accumulates (+=) into the table gradient.
#ifndef LOOM_SRC_KERNELS_EMBEDDING_H_
#define LOOM_SRC_KERNELS_EMBEDDING_H_

#include <cstdint>

namespace loom {

// out[t, :] = table[tokens[t], :] for t < T; table is [V, C]. Token ids are validated upstream.
void EmbeddingForward(float* out, const int32_t* tokens, const float* table, int T, int C);
// dtable[tokens[t], :] += dout[t, :]
void EmbeddingBackward(float* dtable, const int32_t* tokens, const float* dout, int T, int C);

}  // namespace loom

#endif  // LOOM_SRC_KERNELS_EMBEDDING_H_
