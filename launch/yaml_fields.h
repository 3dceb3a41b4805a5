// Strict reading and writing of single YAML values for configs laid out as a fixed table of keys.
// YAML's own typing is loose (`yes` is a bool in YAML 1.1, `"8"` silently converts to an int in
// yaml-cpp), so values are checked here against the type of the field they land in, and written
// back in a form that reads to the identical value.
#ifndef LOOM_LAUNCH_YAML_FIELDS_H_
#define LOOM_LAUNCH_YAML_FIELDS_H_

#include <cstdint>
#include <string>
#include <variant>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "yaml-cpp/yaml.h"

namespace loom {

// What a field accepts beyond its type.
enum class Constraint {
  kAny,          // any value of the type (numbers must still be finite)
  kPositive,     // > 0
  kNonNegative,  // >= 0
  kFraction,     // 0 <= x < 1
  kNonEmpty,     // a string other than ""
};

// One key of a config section, pointing at the struct member it fills.
struct YamlField {
  const char* key;
  std::variant<int*, int64_t*, uint64_t*, float*, double*, bool*, std::string*> value;
  Constraint constraint = Constraint::kAny;
  std::vector<absl::string_view> choices = {};  // the only strings allowed, when not empty
  bool required = false;                        // must be given: the default is a placeholder
};

// Reads `node` into the member `field` points at. Numbers and bools must be plain scalars (a quoted
// "8" is a string), integers are decimal without a fraction, bools are exactly true or false, and
// numbers are finite. The error is a bare message, e.g. "expected an integer, got 'eight'"; the
// caller adds where it came from.
absl::Status ReadYamlField(const YAML::Node& node, const YamlField& field);

// The member `field` points at as a YAML scalar that ReadYamlField reads back to the same value:
// floats in their shortest exact form, strings double-quoted.
std::string WriteYamlField(const YamlField& field);

// How `node` reads in an error message: "'eight'", "the quoted string \"8\"", "a map", "nothing".
std::string DescribeYamlNode(const YAML::Node& node);

// The candidate closest to `key` by edit distance if that distance is at most 2, else "".
absl::string_view ClosestKey(absl::string_view key,
                             const std::vector<absl::string_view>& candidates);

}  // namespace loom

#endif  // LOOM_LAUNCH_YAML_FIELDS_H_
