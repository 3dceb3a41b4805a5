// Small helpers for absl::Status plumbing.
#ifndef LOOM_SRC_STATUS_MACROS_H_
#define LOOM_SRC_STATUS_MACROS_H_

#include "absl/status/status.h"
#include "absl/status/statusor.h"

#define LOOM_CONCAT_INNER(a, b) a##b
#define LOOM_CONCAT(a, b) LOOM_CONCAT_INNER(a, b)

// Returns the status from the enclosing function when `expr` is not OK.
#define LOOM_RETURN_IF_ERROR(expr)                  \
  do {                                              \
    ::absl::Status loom_status_ = (expr);           \
    if (!loom_status_.ok()) return loom_status_;    \
  } while (0)

// `LOOM_ASSIGN_OR_RETURN(auto x, Foo());` unwraps a StatusOr or returns its status.
#define LOOM_ASSIGN_OR_RETURN(lhs, expr) \
  LOOM_ASSIGN_OR_RETURN_IMPL(LOOM_CONCAT(loom_statusor_, __LINE__), lhs, expr)
#define LOOM_ASSIGN_OR_RETURN_IMPL(tmp, lhs, expr) \
  auto tmp = (expr);                               \
  if (!tmp.ok()) return tmp.status();              \
  lhs = std::move(tmp).value()

#endif  // LOOM_SRC_STATUS_MACROS_H_
