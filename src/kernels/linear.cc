#include "src/kernels/linear.h"

#include <cblas.h>

namespace loom {

// Row-major throughout; the [OC, IC] weight is used transposed in the forward, as PyTorch does.
void LinearForward(float* out, const float* inp, const float* weight, int T, int IC, int OC) {
  if (T == 0 || OC == 0) return;
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, T, OC, IC, 1.0f, inp, IC, weight, IC, 0.0f,
              out, OC);
}

// beta = 1 makes sgemm accumulate into the existing gradients.
void LinearBackward(float* dinp, float* dweight, const float* dout, const float* inp,
                    const float* weight, int T, int IC, int OC) {
  if (T == 0 || IC == 0 || OC == 0) return;
  if (dinp != nullptr) {
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, T, IC, OC, 1.0f, dout, OC, weight, IC,
                1.0f, dinp, IC);
  }
  if (dweight != nullptr) {
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, OC, IC, T, 1.0f, dout, OC, inp, IC, 1.0f,
                dweight, IC);
  }
}

}  // namespace loom
