#include "src/cuda/device_context.h"

#include "absl/status/status.h"
#include "absl/strings/str_format.h"
#include "src/cuda/cuda_check.h"
#include "src/cuda/cuda_device.h"
#include "src/status_macros.h"

namespace loom::gpu {
namespace {

// cuBLASLt's recommended workspace for Hopper is 32 MiB; Ampere needs less.
constexpr size_t kWorkspaceBytes = size_t{32} << 20;

}  // namespace

absl::StatusOr<std::unique_ptr<DeviceContext>> DeviceContext::Create(int local_rank) {
  if (local_rank < 0) {
    return absl::InvalidArgumentError(absl::StrFormat("local rank %d is negative", local_rank));
  }
  LOOM_ASSIGN_OR_RETURN(const int count, CudaDeviceCount());
  if (count == 0) {
    return absl::FailedPreconditionError(
        absl::StrFormat("local rank %d: no CUDA device is visible", local_rank));
  }
  auto ctx = std::unique_ptr<DeviceContext>(new DeviceContext());
  ctx->device_ = local_rank % count;
  LOOM_ASSIGN_OR_RETURN(ctx->device_name_, CudaDeviceName(ctx->device_));
  LOOM_RETURN_IF_ERROR(ctx->MakeCurrent());
  ctx->allocator_ = std::make_unique<DeviceAllocator>(ctx->device_);
  LOOM_CUDA_RETURN_IF_ERROR(cudaStreamCreateWithFlags(&ctx->compute_, cudaStreamNonBlocking));
  LOOM_CUDA_RETURN_IF_ERROR(cudaStreamCreateWithFlags(&ctx->comm_, cudaStreamNonBlocking));
  LOOM_CUDA_RETURN_IF_ERROR(
      cudaEventCreateWithFlags(&ctx->compute_done_, cudaEventDisableTiming));
  LOOM_CUDA_RETURN_IF_ERROR(cudaEventCreateWithFlags(&ctx->comm_done_, cudaEventDisableTiming));
  LOOM_CUBLAS_RETURN_IF_ERROR(cublasLtCreate(&ctx->cublaslt_));
  LOOM_ASSIGN_OR_RETURN(ctx->workspace_, ctx->allocator_->Allocate(kWorkspaceBytes));
  ctx->workspace_bytes_ = kWorkspaceBytes;
  return ctx;
}

DeviceContext::~DeviceContext() {
  if (compute_ != nullptr) (void)cudaStreamSynchronize(compute_);
  if (comm_ != nullptr) (void)cudaStreamSynchronize(comm_);
  if (allocator_ != nullptr && workspace_ != nullptr) allocator_->Free(workspace_);
  if (cublaslt_ != nullptr) (void)cublasLtDestroy(cublaslt_);
  if (compute_done_ != nullptr) (void)cudaEventDestroy(compute_done_);
  if (comm_done_ != nullptr) (void)cudaEventDestroy(comm_done_);
  if (compute_ != nullptr) (void)cudaStreamDestroy(compute_);
  if (comm_ != nullptr) (void)cudaStreamDestroy(comm_);
}

absl::Status DeviceContext::MakeCurrent() const {
  LOOM_CUDA_RETURN_IF_ERROR(cudaSetDevice(device_));
  return absl::OkStatus();
}

absl::Status DeviceContext::CommWaitsForCompute() {
  LOOM_CUDA_RETURN_IF_ERROR(cudaEventRecord(compute_done_, compute_));
  LOOM_CUDA_RETURN_IF_ERROR(cudaStreamWaitEvent(comm_, compute_done_, 0));
  return absl::OkStatus();
}

absl::Status DeviceContext::ComputeWaitsForComm() {
  LOOM_CUDA_RETURN_IF_ERROR(cudaEventRecord(comm_done_, comm_));
  LOOM_CUDA_RETURN_IF_ERROR(cudaStreamWaitEvent(compute_, comm_done_, 0));
  return absl::OkStatus();
}

absl::Status DeviceContext::Synchronize() {
  LOOM_CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(compute_));
  LOOM_CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(comm_));
  LOOM_CUDA_RETURN_IF_ERROR(cudaGetLastError());
  return absl::OkStatus();
}

}  // namespace loom::gpu
