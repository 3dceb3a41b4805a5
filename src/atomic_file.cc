#include "src/atomic_file.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>

#include "absl/strings/str_format.h"

namespace loom {

absl::Status WriteFileAtomically(const std::string& path,
                                 const std::vector<std::string_view>& pieces) {
  const std::string tmp = absl::StrFormat("%s.tmp.%d", path, static_cast<int>(getpid()));
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) {
    return absl::PermissionDeniedError(
        absl::StrFormat("cannot create %s: %s", tmp, std::strerror(errno)));
  }
  auto fail = [&](const char* what) {
    const std::string msg = absl::StrFormat("%s %s: %s", what, tmp, std::strerror(errno));
    ::close(fd);
    ::unlink(tmp.c_str());
    return absl::DataLossError(msg);
  };
  for (std::string_view piece : pieces) {
    const char* data = piece.data();
    size_t left = piece.size();
    while (left > 0) {
      const ssize_t n = ::write(fd, data, left);
      if (n < 0) {
        if (errno == EINTR) continue;
        return fail("cannot write");
      }
      data += n;
      left -= static_cast<size_t>(n);
    }
  }
  if (::fsync(fd) != 0) return fail("cannot flush");
  if (::close(fd) != 0) {
    ::unlink(tmp.c_str());
    return absl::DataLossError(absl::StrFormat("cannot close %s: %s", tmp, std::strerror(errno)));
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    const std::string msg =
        absl::StrFormat("cannot rename %s to %s: %s", tmp, path, std::strerror(errno));
    ::unlink(tmp.c_str());
    return absl::PermissionDeniedError(msg);
  }
  return absl::OkStatus();
}

}  // namespace loom
