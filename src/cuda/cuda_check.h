// CUDA, cuBLAS and NCCL error codes as absl::Status, so GPU code reports failures the way the rest
// of loom does: with what was being done and why it failed.
#ifndef LOOM_SRC_CUDA_CUDA_CHECK_H_
#define LOOM_SRC_CUDA_CUDA_CHECK_H_

#include <cublasLt.h>
#include <cuda_runtime_api.h>

#include <string_view>

#include "absl/status/status.h"

namespace loom::gpu {

// OK for cudaSuccess; otherwise INTERNAL (RESOURCE_EXHAUSTED for out of memory) naming `what`.
absl::Status CudaStatus(cudaError_t err, std::string_view what);
absl::Status CublasStatus(cublasStatus_t err, std::string_view what);

}  // namespace loom::gpu

// Returns from the enclosing Status-returning function when a CUDA/cuBLAS call fails.
#define LOOM_CUDA_RETURN_IF_ERROR(call)                                              \
  do {                                                                              \
    ::absl::Status loom_cuda_status_ = ::loom::gpu::CudaStatus((call), #call);      \
    if (!loom_cuda_status_.ok()) return loom_cuda_status_;                          \
  } while (0)
#define LOOM_CUBLAS_RETURN_IF_ERROR(call)                                            \
  do {                                                                              \
    ::absl::Status loom_cublas_status_ = ::loom::gpu::CublasStatus((call), #call);  \
    if (!loom_cublas_status_.ok()) return loom_cublas_status_;                      \
  } while (0)

#endif  // LOOM_SRC_CUDA_CUDA_CHECK_H_
