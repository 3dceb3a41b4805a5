// Bias-free linear layer through OpenBLAS sgemm. Weights use the PyTorch / Hugging Face layout
// [out_features, in_features], so checkpoints are interchangeable without transposes.
#ifndef LOOM_SRC_KERNELS_LINEAR_H_
#define LOOM_SRC_KERNELS_LINEAR_H_

namespace loom {

// out[T, OC] = inp[T, IC] @ weight[OC, IC]^T (overwrites out).
void LinearForward(float* out, const float* inp, const float* weight, int T, int IC, int OC);
// Accumulates: dinp[T, IC] += dout @ weight (skipped when dinp is null);
//              dweight[OC, IC] += dout^T @ inp (skipped when dweight is null).
void LinearBackward(float* dinp, float* dweight, const float* dout, const float* inp,
                    const float* weight, int T, int IC, int OC);

}  // namespace loom

#endif  // LOOM_SRC_KERNELS_LINEAR_H_
