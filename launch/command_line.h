// Flags of one `loom` subcommand: `--name value` or `--name=value`, plus positional arguments.
// Each subcommand declares the flags it knows; anything else is an error that names it.
#ifndef LOOM_LAUNCH_COMMAND_LINE_H_
#define LOOM_LAUNCH_COMMAND_LINE_H_

#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace loom {

class CommandLine {
 public:
  // value_flags take a value; switch_flags take none.
  static absl::StatusOr<CommandLine> Parse(const std::string& command,
                                           const std::vector<std::string>& args,
                                           const std::set<std::string>& value_flags,
                                           const std::set<std::string>& switch_flags = {});

  bool Has(const std::string& flag) const { return values_.count(flag) > 0; }
  std::optional<std::string> Get(const std::string& flag) const;
  absl::StatusOr<std::string> Required(const std::string& flag) const;
  absl::StatusOr<int64_t> GetInt(const std::string& flag, int64_t fallback) const;
  absl::StatusOr<double> GetDouble(const std::string& flag, double fallback) const;
  const std::vector<std::string>& positional() const { return positional_; }

 private:
  std::string command_;
  std::map<std::string, std::string> values_;
  std::vector<std::string> positional_;
};

}  // namespace loom

#endif  // LOOM_LAUNCH_COMMAND_LINE_H_
