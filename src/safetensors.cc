#include "src/safetensors.h"

#include <cstring>
#include <fstream>
#include <sstream>

#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "nlohmann/json.hpp"
#include "src/atomic_file.h"

namespace loom {
namespace {

// A header larger than this is not a file we wrote or can trust.
constexpr uint64_t kMaxHeaderBytes = 100ull << 20;

absl::StatusOr<DType> ParseDType(const std::string& s) {
  if (s == "F32") return DType::kF32;
  if (s == "F64") return DType::kF64;
  if (s == "I32") return DType::kI32;
  if (s == "I64") return DType::kI64;
  return absl::UnimplementedError(absl::StrFormat("unsupported dtype %s", s));
}

uint64_t NumElements(const std::vector<int64_t>& shape) {
  uint64_t n = 1;
  for (int64_t d : shape) n *= static_cast<uint64_t>(d);
  return n;
}

std::string ShapeStr(const std::vector<int64_t>& shape) {
  return "[" + absl::StrJoin(shape, ", ") + "]";
}

}  // namespace

const char* DTypeName(DType dtype) {
  switch (dtype) {
    case DType::kF32: return "F32";
    case DType::kF64: return "F64";
    case DType::kI32: return "I32";
    case DType::kI64: return "I64";
  }
  return "?";
}

size_t DTypeSize(DType dtype) {
  switch (dtype) {
    case DType::kF32:
    case DType::kI32: return 4;
    case DType::kF64:
    case DType::kI64: return 8;
  }
  return 0;
}

absl::Status WriteSafetensors(const std::string& path, const std::vector<TensorRef>& tensors,
                              const std::map<std::string, std::string>& metadata) {
  nlohmann::ordered_json header = nlohmann::ordered_json::object();
  if (!metadata.empty()) header["__metadata__"] = metadata;
  size_t offset = 0;
  for (const TensorRef& t : tensors) {
    if (t.name.empty() || t.name == "__metadata__") {
      return absl::InvalidArgumentError(
          absl::StrFormat("%s: invalid tensor name '%s'", path, t.name));
    }
    if (header.contains(t.name)) {
      return absl::InvalidArgumentError(
          absl::StrFormat("%s: tensor '%s' written twice", path, t.name));
    }
    const size_t bytes = NumElements(t.shape) * DTypeSize(t.dtype);
    header[t.name] = {{"dtype", DTypeName(t.dtype)},
                      {"shape", t.shape},
                      {"data_offsets", {offset, offset + bytes}}};
    offset += bytes;
  }
  std::string json = header.dump();
  json.resize((json.size() + 7) / 8 * 8, ' ');  // the format recommends 8-byte alignment
  char length[8];
  uint64_t n = json.size();
  for (int i = 0; i < 8; ++i) length[i] = static_cast<char>((n >> (8 * i)) & 0xff);
  std::vector<std::string_view> pieces = {std::string_view(length, 8), json};
  for (const TensorRef& t : tensors) {
    const size_t bytes = NumElements(t.shape) * DTypeSize(t.dtype);
    pieces.emplace_back(static_cast<const char*>(t.data), bytes);
  }
  return WriteFileAtomically(path, pieces);
}

absl::StatusOr<SafetensorsFile> SafetensorsFile::Read(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrFormat("cannot open %s", path));
  std::stringstream ss;
  ss << in.rdbuf();
  const std::string bytes = ss.str();
  if (bytes.size() < 8) {
    return absl::DataLossError(absl::StrFormat("%s: %d bytes, too short for a safetensors header",
                                               path, bytes.size()));
  }
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | static_cast<unsigned char>(bytes[static_cast<size_t>(i)]);
  if (n > kMaxHeaderBytes || 8 + n > bytes.size()) {
    return absl::DataLossError(absl::StrFormat(
        "%s: header length %d does not fit the file of %d bytes", path, n, bytes.size()));
  }
  nlohmann::json header = nlohmann::json::parse(bytes.begin() + 8, bytes.begin() + 8 + static_cast<int64_t>(n), nullptr,
                                                /*allow_exceptions=*/false);
  if (header.is_discarded() || !header.is_object()) {
    return absl::DataLossError(absl::StrFormat("%s: the header is not a JSON object", path));
  }
  SafetensorsFile file;
  file.path_ = path;
  file.data_ = bytes.substr(8 + n);
  for (auto it = header.begin(); it != header.end(); ++it) {
    if (it.key() == "__metadata__") {
      if (!it->is_object()) {
        return absl::DataLossError(absl::StrFormat("%s: __metadata__ is not an object", path));
      }
      for (auto m = it->begin(); m != it->end(); ++m) {
        if (!m->is_string()) {
          return absl::DataLossError(
              absl::StrFormat("%s: metadata '%s' is not a string", path, m.key()));
        }
        file.metadata_[m.key()] = m->get<std::string>();
      }
      continue;
    }
    const nlohmann::json& e = *it;
    const bool well_formed = e.is_object() && e.contains("dtype") && e["dtype"].is_string() &&
                             e.contains("shape") && e["shape"].is_array() &&
                             e.contains("data_offsets") && e["data_offsets"].is_array() &&
                             e["data_offsets"].size() == 2;
    if (!well_formed) {
      return absl::DataLossError(
          absl::StrFormat("%s: tensor '%s' has a malformed header entry", path, it.key()));
    }
    absl::StatusOr<DType> dtype = ParseDType(e["dtype"].get<std::string>());
    if (!dtype.ok()) {
      return absl::DataLossError(
          absl::StrFormat("%s: tensor '%s': %s", path, it.key(), dtype.status().message()));
    }
    Entry entry;
    entry.dtype = *dtype;
    for (const auto& d : e["shape"]) {
      if (!d.is_number_integer() || d.get<int64_t>() < 0) {
        return absl::DataLossError(
            absl::StrFormat("%s: tensor '%s' has a bad shape", path, it.key()));
      }
      entry.shape.push_back(d.get<int64_t>());
    }
    if (!e["data_offsets"][0].is_number_unsigned() || !e["data_offsets"][1].is_number_unsigned()) {
      return absl::DataLossError(
          absl::StrFormat("%s: tensor '%s' has bad data_offsets", path, it.key()));
    }
    entry.begin = e["data_offsets"][0].get<size_t>();
    entry.end = e["data_offsets"][1].get<size_t>();
    const size_t want = NumElements(entry.shape) * DTypeSize(entry.dtype);
    if (entry.end < entry.begin || entry.end - entry.begin != want ||
        entry.end > file.data_.size()) {
      return absl::DataLossError(absl::StrFormat(
          "%s: tensor '%s' data_offsets [%d, %d) disagree with its shape %s or the file size", path,
          it.key(), entry.begin, entry.end, ShapeStr(entry.shape)));
    }
    file.entries_[it.key()] = std::move(entry);
  }
  return file;
}

absl::StatusOr<const SafetensorsFile::Entry*> SafetensorsFile::Lookup(
    const std::string& name, DType dtype, const std::vector<int64_t>& expected_shape) const {
  auto it = entries_.find(name);
  if (it == entries_.end()) {
    return absl::NotFoundError(absl::StrFormat("%s: no tensor '%s'", path_, name));
  }
  if (it->second.dtype != dtype) {
    return absl::InvalidArgumentError(absl::StrFormat("%s: tensor '%s' is %s, expected %s", path_,
                                                      name, DTypeName(it->second.dtype),
                                                      DTypeName(dtype)));
  }
  if (!expected_shape.empty() && it->second.shape != expected_shape) {
    return absl::InvalidArgumentError(absl::StrFormat("%s: tensor '%s' has shape %s, expected %s",
                                                      path_, name, ShapeStr(it->second.shape),
                                                      ShapeStr(expected_shape)));
  }
  return &it->second;
}

template <typename T>
static std::vector<T> CopyOut(const std::string& data, const SafetensorsFile::Entry& e) {
  std::vector<T> out((e.end - e.begin) / sizeof(T));
  if (!out.empty()) std::memcpy(out.data(), data.data() + e.begin, e.end - e.begin);
  return out;
}

absl::StatusOr<std::vector<float>> SafetensorsFile::F32(
    const std::string& name, const std::vector<int64_t>& expected_shape) const {
  absl::StatusOr<const Entry*> e = Lookup(name, DType::kF32, expected_shape);
  if (!e.ok()) return e.status();
  return CopyOut<float>(data_, **e);
}

absl::StatusOr<std::vector<double>> SafetensorsFile::F64(const std::string& name) const {
  absl::StatusOr<const Entry*> e = Lookup(name, DType::kF64, {});
  if (!e.ok()) return e.status();
  return CopyOut<double>(data_, **e);
}

absl::StatusOr<std::vector<int32_t>> SafetensorsFile::I32(const std::string& name) const {
  absl::StatusOr<const Entry*> e = Lookup(name, DType::kI32, {});
  if (!e.ok()) return e.status();
  return CopyOut<int32_t>(data_, **e);
}

}  // namespace loom
