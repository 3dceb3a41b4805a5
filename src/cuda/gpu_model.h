// The model of src/model.h on one GPU: the same layers, the same parameter layout (ParamLayout),
// the same loss and gradients, built from the CUDA kernels, cuBLASLt and fused attention.
//
// Parameters, gradients and AdamW state are fp32 on the device. In Precision::kFp32 every
// activation is fp32 and the GEMMs are pedantic fp32: the result equals the CPU Model's to
// rounding. In Precision::kBf16 activations and the weights' GEMM copy are bf16 (refreshed from
// the fp32 master weights after each optimizer step) with fp32 accumulation and fp32 gradients.
// Work runs on the context's compute stream; every call returns once its result is usable.
#ifndef LOOM_SRC_CUDA_GPU_MODEL_H_
#define LOOM_SRC_CUDA_GPU_MODEL_H_

#include <cstdint>
#include <memory>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "src/adamw.h"
#include "src/cuda/device_buffer.h"
#include "src/cuda/device_context.h"
#include "src/cuda/gemm.h"
#include "src/model_config.h"
#include "src/param_layout.h"
#include "src/token_batch.h"

namespace loom::gpu {

class GpuModel {
 public:
  // Parameters zero until LoadParams. Not owning ctx, which must outlive the model.
  static absl::StatusOr<std::unique_ptr<GpuModel>> Create(const ModelConfig& config,
                                                          Precision precision,
                                                          DeviceContext* ctx);

  const ModelConfig& config() const { return config_; }
  const ParamLayout& layout() const { return layout_; }
  Precision precision() const { return precision_; }
  size_t num_params() const { return layout_.total_numel(); }

  // Host fp32 arrays of num_params() elements, in ParamLayout order (the CPU Model's params()).
  absl::Status LoadParams(const float* host);
  absl::Status ReadParams(float* host) const;
  absl::Status ReadGrads(float* host) const;
  absl::Status ZeroGrads();

  // Loss sum over the batch's targets; accumulates the gradients of (sum * grad_scale), as
  // Model::ForwardBackward. INVALID_ARGUMENT for a batch the model cannot take (token id over
  // the vocabulary, mismatched arrays), naming the field.
  absl::StatusOr<double> ForwardBackward(const TokenBatch& batch, float grad_scale);
  absl::StatusOr<double> Loss(const TokenBatch& batch);

  // Clips the gradient to max_grad_norm (0: no clipping) and applies one AdamW step on the
  // device, with the CPU AdamW's order of operations and its decay rule (matrices decayed,
  // RMSNorm gains not). Returns the gradient norm before clipping.
  absl::StatusOr<double> OptimizerStep(const AdamWConfig& adamw, float lr, float max_grad_norm);

  // Bytes of the device allocator now and at its peak (reset by ResetPeakMemory).
  size_t current_bytes() const;
  size_t peak_bytes() const;
  void ResetPeakMemory();

 private:
  GpuModel(const ModelConfig& config, Precision precision, DeviceContext* ctx);
  absl::Status Init();
  absl::StatusOr<double> Run(const TokenBatch& batch, float grad_scale, bool backward);

  ModelConfig config_;
  ParamLayout layout_;
  Precision precision_;
  DeviceContext* ctx_;
  DeviceBuffer params_;      // fp32 master weights
  DeviceBuffer grads_;       // fp32
  DeviceBuffer params_op_;   // the weights as GEMM operands (bf16 copy; unused in fp32 mode)
  DeviceBuffer adam_m_, adam_v_;
  int64_t adam_step_ = 0;
  bool params_op_stale_ = true;
};

}  // namespace loom::gpu

#endif  // LOOM_SRC_CUDA_GPU_MODEL_H_
