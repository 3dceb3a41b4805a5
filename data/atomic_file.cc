#include "data/atomic_file.h"

#include <fcntl.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <filesystem>
#include <utility>

#include "absl/strings/str_format.h"

namespace loom {
namespace {

// Writes all of [data, data + bytes) at `offset`, retrying short writes and interruptions.
absl::Status WriteFully(int fd, uint64_t offset, const void* data, size_t bytes,
                        const std::string& path) {
  const char* p = static_cast<const char*>(data);
  while (bytes > 0) {
    const ssize_t n = ::pwrite(fd, p, bytes, static_cast<off_t>(offset));
    if (n < 0) {
      if (errno == EINTR) continue;
      return absl::ErrnoToStatus(errno,
                                 absl::StrFormat("%s: write at offset %d failed", path, offset));
    }
    p += n;
    offset += static_cast<uint64_t>(n);
    bytes -= static_cast<size_t>(n);
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<AtomicFileWriter> AtomicFileWriter::Create(const std::string& path) {
  // A name unique to this process and call; O_EXCL guards against anything else using it. The
  // file is created with mode 0666 so that the process umask, not this code, decides permissions.
  static std::atomic<uint64_t> counter{0};
  for (int attempt = 0; attempt < 100; ++attempt) {
    const std::string temp_path =
        absl::StrFormat("%s.tmp-%d-%d", path, ::getpid(), counter.fetch_add(1));
    const int fd = ::open(temp_path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
    if (fd >= 0) return AtomicFileWriter(path, temp_path, fd);
    if (errno != EEXIST) {
      return absl::ErrnoToStatus(errno, absl::StrFormat("%s: cannot create %s", path, temp_path));
    }
  }
  return absl::AlreadyExistsError(
      absl::StrFormat("%s: no free temporary file name beside it", path));
}

AtomicFileWriter::AtomicFileWriter(std::string path, std::string temp_path, int fd)
    : path_(std::move(path)), temp_path_(std::move(temp_path)), fd_(fd) {}

AtomicFileWriter::AtomicFileWriter(AtomicFileWriter&& other) noexcept
    : path_(std::move(other.path_)),
      temp_path_(std::move(other.temp_path_)),
      fd_(std::exchange(other.fd_, -1)),
      size_(std::exchange(other.size_, 0)) {}

AtomicFileWriter& AtomicFileWriter::operator=(AtomicFileWriter&& other) noexcept {
  if (this != &other) {
    Abandon();
    path_ = std::move(other.path_);
    temp_path_ = std::move(other.temp_path_);
    fd_ = std::exchange(other.fd_, -1);
    size_ = std::exchange(other.size_, 0);
  }
  return *this;
}

AtomicFileWriter::~AtomicFileWriter() { Abandon(); }

void AtomicFileWriter::Abandon() {
  if (fd_ < 0) return;
  ::close(fd_);
  ::unlink(temp_path_.c_str());
  fd_ = -1;
}

absl::Status AtomicFileWriter::Append(const void* data, size_t bytes) {
  if (fd_ < 0) return absl::FailedPreconditionError(path_ + ": writer already finished");
  absl::Status status = WriteFully(fd_, size_, data, bytes, temp_path_);
  if (status.ok()) size_ += bytes;
  return status;
}

absl::Status AtomicFileWriter::WriteAt(uint64_t offset, const void* data, size_t bytes) {
  if (fd_ < 0) return absl::FailedPreconditionError(path_ + ": writer already finished");
  if (offset + bytes > size_) {
    return absl::OutOfRangeError(
        absl::StrFormat("%s: overwrite of [%d, %d) beyond the %d bytes written", path_, offset,
                        offset + bytes, size_));
  }
  return WriteFully(fd_, offset, data, bytes, temp_path_);
}

absl::Status AtomicFileWriter::Commit() {
  if (fd_ < 0) return absl::FailedPreconditionError(path_ + ": writer already finished");
  // Data first, then the name: after a crash the target is either the old file or the new one,
  // never a new name pointing at blocks that were not yet written.
  if (::fsync(fd_) != 0) {
    const int err = errno;
    Abandon();
    return absl::ErrnoToStatus(err, absl::StrFormat("%s: fsync failed", temp_path_));
  }
  if (::close(fd_) != 0) {
    const int err = errno;
    fd_ = -1;
    ::unlink(temp_path_.c_str());
    return absl::ErrnoToStatus(err, absl::StrFormat("%s: close failed", temp_path_));
  }
  fd_ = -1;
  if (::rename(temp_path_.c_str(), path_.c_str()) != 0) {
    const int err = errno;
    ::unlink(temp_path_.c_str());
    return absl::ErrnoToStatus(err,
                               absl::StrFormat("%s: cannot rename %s over it", path_, temp_path_));
  }
  // Make the rename itself durable; best effort, as some file systems cannot sync a folder.
  std::string folder = std::filesystem::path(path_).parent_path().string();
  if (folder.empty()) folder = ".";
  const int dir_fd = ::open(folder.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dir_fd >= 0) {
    ::fsync(dir_fd);
    ::close(dir_fd);
  }
  return absl::OkStatus();
}

}  // namespace loom
