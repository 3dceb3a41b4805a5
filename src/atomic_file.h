// Files that appear whole or not at all: write to a temporary file in the same folder, flush it
// to disk, then rename over the destination. A crash never leaves a partial file behind.
#ifndef LOOM_SRC_ATOMIC_FILE_H_
#define LOOM_SRC_ATOMIC_FILE_H_

#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"

namespace loom {

// Writes the concatenation of `pieces` to `path` atomically.
absl::Status WriteFileAtomically(const std::string& path,
                                 const std::vector<std::string_view>& pieces);

}  // namespace loom

#endif  // LOOM_SRC_ATOMIC_FILE_H_
