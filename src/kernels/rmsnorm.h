// RMSNorm as in LLaMA: y = x / sqrt(mean(x^2) + eps) * weight.
#ifndef LOOM_SRC_KERNELS_RMSNORM_H_
#define LOOM_SRC_KERNELS_RMSNORM_H_

namespace loom {

// inp, out: [T, C]; weight: [C]; rstd: [T] receives 1/sqrt(mean(x^2)+eps) for the backward.
void RmsNormForward(float* out, float* rstd, const float* inp, const float* weight, int T, int C,
                    float eps);
// Accumulates: dinp += d/dx, dweight += d/dweight.
void RmsNormBackward(float* dinp, float* dweight, const float* dout, const float* inp,
                     const float* weight, const float* rstd, int T, int C);

}  // namespace loom

#endif  // LOOM_SRC_KERNELS_RMSNORM_H_
