// One rank's GPU: the device chosen from the local rank, its allocator, a compute stream and a
// communication stream with events to order them, and the cuBLASLt handle and workspace the
// linear layers use. Ring attention launches its K/V exchange on the communication stream while
// the compute stream runs the attention of the block already here; the events make each side
// wait only for what it needs.
#ifndef LOOM_SRC_CUDA_DEVICE_CONTEXT_H_
#define LOOM_SRC_CUDA_DEVICE_CONTEXT_H_

#include <cublasLt.h>
#include <cuda_runtime_api.h>

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "src/cuda/device_allocator.h"

namespace loom::gpu {

class DeviceContext {
 public:
  // Device local_rank % (visible devices). FAILED_PRECONDITION when no device is visible.
  static absl::StatusOr<std::unique_ptr<DeviceContext>> Create(int local_rank);
  ~DeviceContext();
  DeviceContext(const DeviceContext&) = delete;
  DeviceContext& operator=(const DeviceContext&) = delete;

  int device() const { return device_; }
  const std::string& device_name() const { return device_name_; }
  DeviceAllocator* allocator() { return allocator_.get(); }
  cudaStream_t compute() const { return compute_; }
  cudaStream_t comm() const { return comm_; }
  cublasLtHandle_t cublaslt() const { return cublaslt_; }
  void* workspace() const { return workspace_; }
  size_t workspace_bytes() const { return workspace_bytes_; }

  // Makes this context's device current on the calling thread (several ranks may share a GPU,
  // each from its own thread).
  absl::Status MakeCurrent() const;
  // The communication stream waits for the work queued so far on the compute stream, and the
  // other way round.
  absl::Status CommWaitsForCompute();
  absl::Status ComputeWaitsForComm();
  // Blocks the host until both streams are idle; reports an asynchronous kernel error.
  absl::Status Synchronize();

 private:
  DeviceContext() = default;
  int device_ = 0;
  std::string device_name_;
  std::unique_ptr<DeviceAllocator> allocator_;
  cudaStream_t compute_ = nullptr;
  cudaStream_t comm_ = nullptr;
  cudaEvent_t compute_done_ = nullptr;
  cudaEvent_t comm_done_ = nullptr;
  cublasLtHandle_t cublaslt_ = nullptr;
  void* workspace_ = nullptr;
  size_t workspace_bytes_ = 0;
};

}  // namespace loom::gpu

#endif  // LOOM_SRC_CUDA_DEVICE_CONTEXT_H_
