// Test helper for the nccl backend: presents host buffers to a GPU communicator by copying them
// into device memory, running the operation there and copying results back, so the checks written
// for host memory (comm_checks.h) exercise the nccl backend unchanged.
#ifndef LOOM_TESTS_RUNTIME_DEVICE_STAGING_H_
#define LOOM_TESTS_RUNTIME_DEVICE_STAGING_H_

#include <cuda_runtime.h>

#include <memory>
#include <optional>
#include <utility>

#include "absl/strings/str_cat.h"
#include "runtime/communicator.h"

namespace loom {

// Device memory holding a copy of a host buffer.
class DeviceCopy {
 public:
  DeviceCopy(const void* host, size_t count, DataType type) : count_(count), type_(type) {
    if (bytes() == 0) return;
    if (cudaMalloc(&device_, bytes()) != cudaSuccess) {
      device_ = nullptr;
      return;
    }
    if (host != nullptr) cudaMemcpy(device_, host, bytes(), cudaMemcpyHostToDevice);
  }
  ~DeviceCopy() {
    if (device_ != nullptr) cudaFree(device_);
  }
  DeviceCopy(const DeviceCopy&) = delete;
  DeviceCopy& operator=(const DeviceCopy&) = delete;

  bool ok() const { return bytes() == 0 || device_ != nullptr; }
  size_t bytes() const { return count_ * DataTypeSize(type_); }
  BufferView view() const { return BufferView(device_, count_, type_); }
  absl::Status CopyTo(void* host) const {
    if (bytes() == 0) return absl::OkStatus();
    if (cudaMemcpy(host, device_, bytes(), cudaMemcpyDeviceToHost) != cudaSuccess) {
      return absl::InternalError("copying a result back from the GPU failed");
    }
    return absl::OkStatus();
  }

 private:
  void* device_ = nullptr;
  size_t count_;
  DataType type_;
};

class DeviceStagingCommunicator final : public Communicator {
 public:
  explicit DeviceStagingCommunicator(Communicator& gpu)
      : Communicator(gpu.world(), gpu.timeout(), gpu.max_tag()), gpu_(gpu) {}

  Backend backend() const override { return gpu_.backend(); }

 protected:
  absl::StatusOr<std::unique_ptr<Request>> PostSend(ConstBufferView data, int peer,
                                                    int tag) override {
    auto copy = std::make_unique<DeviceCopy>(data.data(), data.count(), data.type());
    if (!copy->ok()) return absl::ResourceExhaustedError("cudaMalloc failed");
    absl::StatusOr<std::unique_ptr<Request>> inner = gpu_.ISend(copy->view(), peer, tag);
    if (!inner.ok()) return inner.status();
    return std::unique_ptr<Request>(
        new StagedRequest(*std::move(inner), std::move(copy), nullptr, timeout()));
  }

  absl::StatusOr<std::unique_ptr<Request>> PostRecv(BufferView data, int peer, int tag) override {
    auto copy = std::make_unique<DeviceCopy>(data.data(), data.count(), data.type());
    if (!copy->ok()) return absl::ResourceExhaustedError("cudaMalloc failed");
    absl::StatusOr<std::unique_ptr<Request>> inner = gpu_.IRecv(copy->view(), peer, tag);
    if (!inner.ok()) return inner.status();
    return std::unique_ptr<Request>(
        new StagedRequest(*std::move(inner), std::move(copy), data.data(), timeout()));
  }

  absl::Status RunCollective(const CollectiveCall& call) override {
    DeviceCopy recv(call.recv.data(), call.recv.count(), call.recv.type());
    if (!recv.ok()) return absl::ResourceExhaustedError("cudaMalloc failed");
    // In-place calls keep their aliasing on the device.
    std::unique_ptr<DeviceCopy> send;
    ConstBufferView device_send = recv.view();
    if (call.kind == CollectiveKind::kAllGather || call.kind == CollectiveKind::kAllGatherV ||
        call.kind == CollectiveKind::kReduceScatter) {
      const size_t offset =
          static_cast<const char*>(call.send.data()) - static_cast<const char*>(call.recv.data());
      if (call.in_place && call.kind != CollectiveKind::kReduceScatter) {
        device_send = ConstBufferView(static_cast<const char*>(recv.view().data()) + offset,
                                      call.send.count(), call.send.type());
      } else {
        send = std::make_unique<DeviceCopy>(call.send.data(), call.send.count(), call.send.type());
        if (!send->ok()) return absl::ResourceExhaustedError("cudaMalloc failed");
        device_send = send->view();
      }
    }
    BufferView device_recv = recv.view();
    if (call.kind == CollectiveKind::kReduceScatter && call.in_place) {
      const size_t block = call.recv.count();
      device_recv = send->view().Slice(static_cast<size_t>(call.index) * block, block);
    }
    const Group& group = *call.group;
    absl::Status status;
    switch (call.kind) {
      case CollectiveKind::kAllReduce:
        status = gpu_.AllReduce(group, device_recv, call.op);
        break;
      case CollectiveKind::kAllGather:
        status = gpu_.AllGather(group, device_send, device_recv);
        break;
      case CollectiveKind::kAllGatherV:
        status = gpu_.AllGatherV(group, device_send, device_recv, call.counts);
        break;
      case CollectiveKind::kReduceScatter:
        status = gpu_.ReduceScatter(group, device_send, device_recv, call.op);
        break;
      case CollectiveKind::kBroadcast:
        status = gpu_.Broadcast(group, device_recv, group.world_rank(call.root));
        break;
      case CollectiveKind::kBarrier:
        status = gpu_.Barrier(group);
        break;
    }
    if (!status.ok()) return status;
    if (call.kind == CollectiveKind::kReduceScatter && call.in_place) {
      if (cudaMemcpy(call.recv.data(), device_recv.data(), call.recv.bytes(),
                     cudaMemcpyDeviceToHost) != cudaSuccess) {
        return absl::InternalError("copying a result back from the GPU failed");
      }
      return absl::OkStatus();
    }
    return recv.CopyTo(call.recv.data());
  }

  absl::Status RunPrepareGroup(const Group& group, int) override {
    return gpu_.PrepareGroup(group);
  }

 private:
  class StagedRequest final : public Request {
   public:
    StagedRequest(std::unique_ptr<Request> inner, std::unique_ptr<DeviceCopy> copy, void* host,
                  absl::Duration timeout)
        : Request(timeout), inner_(std::move(inner)), copy_(std::move(copy)), host_(host) {}

    absl::Status WaitUntil(absl::Time deadline) override {
      if (result_.has_value()) return *result_;
      absl::Status status = inner_->WaitUntil(deadline);
      if (status.ok() && host_ != nullptr) status = copy_->CopyTo(host_);
      result_ = status;
      return status;
    }
    bool Test() override { return result_.has_value() || inner_->Test(); }

   private:
    std::unique_ptr<Request> inner_;
    std::unique_ptr<DeviceCopy> copy_;
    void* host_;
    std::optional<absl::Status> result_;
  };

  Communicator& gpu_;
};

}  // namespace loom

#endif  // LOOM_TESTS_RUNTIME_DEVICE_STAGING_H_
