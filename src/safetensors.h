// safetensors files (the Hugging Face format: an 8-byte little-endian header length, a JSON
// header of name -> dtype, shape, data_offsets, then the raw little-endian data). Used for
// checkpoints and to exchange tensors with the PyTorch reference.
#ifndef LOOM_SRC_SAFETENSORS_H_
#define LOOM_SRC_SAFETENSORS_H_

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace loom {

enum class DType { kF32, kF64, kI32, kI64 };
const char* DTypeName(DType dtype);  // "F32", ...
size_t DTypeSize(DType dtype);

// A tensor to write: borrowed data of numel(shape) elements.
struct TensorRef {
  std::string name;
  DType dtype = DType::kF32;
  std::vector<int64_t> shape;
  const void* data = nullptr;
};

// Writes atomically (temporary file, then rename).
absl::Status WriteSafetensors(const std::string& path, const std::vector<TensorRef>& tensors,
                              const std::map<std::string, std::string>& metadata = {});

class SafetensorsFile {
 public:
  struct Entry {
    DType dtype;
    std::vector<int64_t> shape;
    size_t begin;  // byte offsets into the data section
    size_t end;
  };

  // Reads and checks the whole file; errors name the file and the offending tensor.
  static absl::StatusOr<SafetensorsFile> Read(const std::string& path);

  const std::string& path() const { return path_; }
  const std::map<std::string, Entry>& entries() const { return entries_; }
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  bool Has(const std::string& name) const { return entries_.count(name) > 0; }

  // Copies a tensor out, checking its dtype and (when expected_shape is not empty) its shape.
  absl::StatusOr<std::vector<float>> F32(const std::string& name,
                                         const std::vector<int64_t>& expected_shape = {}) const;
  absl::StatusOr<std::vector<double>> F64(const std::string& name) const;
  absl::StatusOr<std::vector<int32_t>> I32(const std::string& name) const;

 private:
  absl::StatusOr<const Entry*> Lookup(const std::string& name, DType dtype,
                                      const std::vector<int64_t>& expected_shape) const;
  std::string path_;
  std::string data_;  // the data section
  std::map<std::string, Entry> entries_;
  std::map<std::string, std::string> metadata_;
};

}  // namespace loom

#endif  // LOOM_SRC_SAFETENSORS_H_
