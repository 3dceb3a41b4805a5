#include "launch/command_line.h"

#include "absl/strings/numbers.h"
#include "absl/strings/str_format.h"

namespace loom {

absl::StatusOr<CommandLine> CommandLine::Parse(const std::string& command,
                                               const std::vector<std::string>& args,
                                               const std::set<std::string>& value_flags,
                                               const std::set<std::string>& switch_flags) {
  CommandLine cl;
  cl.command_ = command;
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& a = args[i];
    if (a.rfind("--", 0) != 0 || a.size() == 2) {
      cl.positional_.push_back(a);
      continue;
    }
    std::string name = a.substr(2), value;
    const size_t eq = name.find('=');
    const bool inline_value = eq != std::string::npos;
    if (inline_value) {
      value = name.substr(eq + 1);
      name = name.substr(0, eq);
    }
    if (switch_flags.count(name)) {
      if (inline_value) {
        return absl::InvalidArgumentError(
            absl::StrFormat("loom %s: --%s takes no value", command, name));
      }
      cl.values_[name] = "true";
    } else if (value_flags.count(name)) {
      if (!inline_value) {
        if (i + 1 >= args.size()) {
          return absl::InvalidArgumentError(
              absl::StrFormat("loom %s: --%s needs a value", command, name));
        }
        value = args[++i];
      }
      cl.values_[name] = value;
    } else {
      return absl::InvalidArgumentError(absl::StrFormat(
          "loom %s: unknown flag --%s (see `loom %s --help`)", command, name, command));
    }
  }
  return cl;
}

std::optional<std::string> CommandLine::Get(const std::string& flag) const {
  auto it = values_.find(flag);
  if (it == values_.end()) return std::nullopt;
  return it->second;
}

absl::StatusOr<std::string> CommandLine::Required(const std::string& flag) const {
  auto v = Get(flag);
  if (!v) return absl::InvalidArgumentError(absl::StrFormat("loom %s: --%s is required", command_, flag));
  return *v;
}

absl::StatusOr<int64_t> CommandLine::GetInt(const std::string& flag, int64_t fallback) const {
  auto v = Get(flag);
  if (!v) return fallback;
  int64_t out;
  if (!absl::SimpleAtoi(*v, &out)) {
    return absl::InvalidArgumentError(
        absl::StrFormat("loom %s: --%s expects an integer, got '%s'", command_, flag, *v));
  }
  return out;
}

absl::StatusOr<double> CommandLine::GetDouble(const std::string& flag, double fallback) const {
  auto v = Get(flag);
  if (!v) return fallback;
  double out;
  if (!absl::SimpleAtod(*v, &out)) {
    return absl::InvalidArgumentError(
        absl::StrFormat("loom %s: --%s expects a number, got '%s'", command_, flag, *v));
  }
  return out;
}

}  // namespace loom
