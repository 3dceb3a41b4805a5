// Shared by the mpirun tests of the nccl backend: NCCL needs one GPU per rank on a node, so those
// tests skip, saying why, where this node has fewer visible devices than ranks.
#ifndef LOOM_TESTS_RUNTIME_GPU_PER_RANK_H_
#define LOOM_TESTS_RUNTIME_GPU_PER_RANK_H_

#include <cuda_runtime.h>

#include <cstdlib>
#include <string>

#include "absl/strings/str_cat.h"

namespace loom::test {

// Empty when every rank on this node (OMPI_COMM_WORLD_LOCAL_SIZE) can have its own GPU; else why
// not.
inline std::string GpuPerRankSkipReason() {
  int devices = 0;
  if (cudaGetDeviceCount(&devices) != cudaSuccess) devices = 0;
  const char* local_size = std::getenv("OMPI_COMM_WORLD_LOCAL_SIZE");
  const int ranks_here = local_size != nullptr ? std::atoi(local_size) : 1;
  if (devices == 0) return "no CUDA device visible";
  if (devices < ranks_here) {
    return absl::StrCat(devices, " CUDA device(s) visible for ", ranks_here,
                        " ranks on this node; NCCL needs one GPU per rank");
  }
  return "";
}

}  // namespace loom::test

#endif  // LOOM_TESTS_RUNTIME_GPU_PER_RANK_H_
