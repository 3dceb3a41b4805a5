// Files that appear whole or not at all. Shards, index caches and prep output are read by other
// processes (and by a resumed run after a crash); a reader must never see a half-written file under
// the final name.
#ifndef LOOM_DATA_ATOMIC_FILE_H_
#define LOOM_DATA_ATOMIC_FILE_H_

#include <cstddef>
#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace loom {

// Writes to a temporary file in the target's folder (so the final rename stays within one file
// system and is atomic) and renames it over the target on Commit(). Destroying a writer that was
// not committed removes the temporary file and leaves any existing target untouched.
class AtomicFileWriter {
 public:
  static absl::StatusOr<AtomicFileWriter> Create(const std::string& path);

  AtomicFileWriter(AtomicFileWriter&& other) noexcept;
  AtomicFileWriter& operator=(AtomicFileWriter&& other) noexcept;
  AtomicFileWriter(const AtomicFileWriter&) = delete;
  AtomicFileWriter& operator=(const AtomicFileWriter&) = delete;
  ~AtomicFileWriter();

  // Appends bytes at the end of what was written so far.
  absl::Status Append(const void* data, size_t bytes);
  // Overwrites bytes already appended (a header whose contents are known only at the end).
  absl::Status WriteAt(uint64_t offset, const void* data, size_t bytes);
  // Flushes to disk and renames the temporary file to the target path.
  absl::Status Commit();

  const std::string& path() const { return path_; }
  uint64_t size() const { return size_; }

 private:
  AtomicFileWriter(std::string path, std::string temp_path, int fd);
  void Abandon();

  std::string path_;
  std::string temp_path_;
  int fd_ = -1;
  uint64_t size_ = 0;
};

}  // namespace loom

#endif  // LOOM_DATA_ATOMIC_FILE_H_
