// absl::Status plumbing for data/. The folder stands alone (it may not include src/), so it keeps
// its own macros under names that cannot collide with those of other folders.
#ifndef LOOM_DATA_STATUS_MACROS_H_
#define LOOM_DATA_STATUS_MACROS_H_

#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

#define LOOM_DATA_CONCAT_INNER(a, b) a##b
#define LOOM_DATA_CONCAT(a, b) LOOM_DATA_CONCAT_INNER(a, b)

// Returns the status from the enclosing function when `expr` is not OK.
#define LOOM_DATA_RETURN_IF_ERROR(expr)                    \
  do {                                                     \
    ::absl::Status loom_data_status_ = (expr);             \
    if (!loom_data_status_.ok()) return loom_data_status_; \
  } while (0)

// `LOOM_DATA_ASSIGN_OR_RETURN(auto x, Foo());` unwraps a StatusOr or returns its status.
#define LOOM_DATA_ASSIGN_OR_RETURN(lhs, expr) \
  LOOM_DATA_ASSIGN_OR_RETURN_IMPL(LOOM_DATA_CONCAT(loom_data_statusor_, __LINE__), lhs, expr)
#define LOOM_DATA_ASSIGN_OR_RETURN_IMPL(tmp, lhs, expr) \
  auto tmp = (expr);                                    \
  if (!tmp.ok()) return tmp.status();                   \
  lhs = std::move(tmp).value()

#endif  // LOOM_DATA_STATUS_MACROS_H_
