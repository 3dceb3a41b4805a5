#include "launch/yaml_fields.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <limits>
#include <system_error>
#include <type_traits>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"

namespace loom {
namespace {

// yaml-cpp marks an untagged plain scalar with "?" and a quoted one with "!".
constexpr absl::string_view kPlainTag = "?";
constexpr absl::string_view kQuotedTag = "!";
constexpr absl::string_view kStringTag = "tag:yaml.org,2002:str";

template <typename... Fs>
struct Overloaded : Fs... {
  using Fs::operator()...;
};

absl::Status Expected(absl::string_view what, const YAML::Node& node) {
  return absl::InvalidArgumentError(
      absl::StrFormat("expected %s, got %s", what, DescribeYamlNode(node)));
}

// The text of a plain scalar. Numbers and bools must be plain: a quoted "8" is a string in YAML,
// even though yaml-cpp would convert it to an int without complaint.
absl::Status PlainScalar(const YAML::Node& node, absl::string_view expected, std::string* text) {
  if (!node.IsScalar() || node.Tag() != kPlainTag) return Expected(expected, node);
  *text = node.Scalar();
  return absl::OkStatus();
}

// YAML allows a leading '+' on numbers; std::from_chars does not.
absl::string_view DropPlus(absl::string_view text) {
  if (text.size() > 1 && text[0] == '+' && text[1] != '-') text.remove_prefix(1);
  return text;
}

template <typename T>
absl::Status CheckConstraint(T value, Constraint constraint) {
  // Compared as double so that one body serves signed, unsigned and floating fields; only the
  // sign and the bound 1 matter, which double represents exactly.
  const double v = static_cast<double>(value);
  switch (constraint) {
    case Constraint::kPositive:
      if (!(v > 0)) {
        return absl::InvalidArgumentError(absl::StrCat("must be positive, got ", value));
      }
      break;
    case Constraint::kNonNegative:
      if (!(v >= 0)) {
        return absl::InvalidArgumentError(absl::StrCat("must be >= 0, got ", value));
      }
      break;
    case Constraint::kFraction:
      if (!(v >= 0 && v < 1)) {
        return absl::InvalidArgumentError(absl::StrCat("must be in [0, 1), got ", value));
      }
      break;
    case Constraint::kAny:
    case Constraint::kNonEmpty:
      break;
  }
  return absl::OkStatus();
}

// Decimal integers only: no fraction, exponent, hex or YAML 1.1 octal.
template <typename Int>
absl::Status ReadInteger(const YAML::Node& node, Constraint constraint, Int* out) {
  std::string text;
  if (absl::Status s = PlainScalar(node, "an integer", &text); !s.ok()) return s;
  if (std::is_unsigned_v<Int> && !text.empty() && text[0] == '-') {
    return Expected("a non-negative integer", node);
  }
  const absl::string_view digits = DropPlus(text);
  Int value;
  const auto [end, error] = std::from_chars(digits.data(), digits.data() + digits.size(), value);
  if (error == std::errc::result_out_of_range) {
    return Expected(absl::StrFormat("an integer in [%d, %d]", std::numeric_limits<Int>::min(),
                                    std::numeric_limits<Int>::max()),
                    node);
  }
  if (error != std::errc() || end != digits.data() + digits.size()) {
    return Expected("an integer", node);
  }
  if (absl::Status s = CheckConstraint(value, constraint); !s.ok()) return s;
  *out = value;
  return absl::OkStatus();
}

// Parsed straight into the field's own type, so a float gets the correctly rounded float rather
// than a double rounded a second time.
template <typename Float>
absl::Status ReadFloat(const YAML::Node& node, Constraint constraint, Float* out) {
  std::string text;
  if (absl::Status s = PlainScalar(node, "a number", &text); !s.ok()) return s;
  const absl::string_view number = DropPlus(text);
  Float value;
  const auto [end, error] = std::from_chars(number.data(), number.data() + number.size(), value);
  if (error == std::errc::result_out_of_range) {
    return Expected(absl::StrFormat("a number within %d-bit floating point range",
                                    8 * static_cast<int>(sizeof(Float))),
                    node);
  }
  if (error != std::errc() || end != number.data() + number.size()) {
    return Expected("a number", node);
  }
  if (!std::isfinite(value)) return Expected("a finite number", node);
  if (absl::Status s = CheckConstraint(value, constraint); !s.ok()) return s;
  *out = value;
  return absl::OkStatus();
}

// Only true and false: YAML 1.1's yes/no/on/off are the classic way a config means something else
// than it says (a country code "no" becoming false).
absl::Status ReadBool(const YAML::Node& node, bool* out) {
  std::string text;
  if (absl::Status s = PlainScalar(node, "true or false", &text); !s.ok()) return s;
  if (text != "true" && text != "false") return Expected("true or false", node);
  *out = text == "true";
  return absl::OkStatus();
}

// Any scalar is a string, plain or quoted, so paths like 2024/run need no quotes. An empty value
// is YAML null rather than "", so it is refused with a hint instead of being read as "".
absl::Status ReadString(const YAML::Node& node, const YamlField& field, std::string* out) {
  if (node.IsNull()) {
    return absl::InvalidArgumentError(
        "expected a string, got nothing (write \"\" for an empty string)");
  }
  const std::string& tag = node.Tag();
  if (!node.IsScalar() || (tag != kPlainTag && tag != kQuotedTag && tag != kStringTag)) {
    return Expected("a string", node);
  }
  const std::string& text = node.Scalar();
  if (!field.choices.empty() &&
      std::find(field.choices.begin(), field.choices.end(), text) == field.choices.end()) {
    return absl::InvalidArgumentError(
        absl::StrFormat("must be one of %s, got '%s'", absl::StrJoin(field.choices, "|"), text));
  }
  if (field.constraint == Constraint::kNonEmpty && text.empty()) {
    return absl::InvalidArgumentError("must not be empty");
  }
  *out = text;
  return absl::OkStatus();
}

// Double quotes read back verbatim whatever the string holds (':', '#', leading spaces, "true").
std::string QuoteYamlString(const std::string& text) {
  std::string quoted = "\"";
  for (const char c : text) {
    const auto byte = static_cast<unsigned char>(c);
    if (c == '"' || c == '\\') {
      quoted += '\\';
      quoted += c;
    } else if (byte < 0x20 || byte == 0x7f) {
      quoted += absl::StrFormat("\\x%02x", byte);
    } else {
      quoted += c;
    }
  }
  quoted += '"';
  return quoted;
}

// Shortest text that parses back to exactly `value`.
template <typename Float>
std::string FormatFloat(Float value) {
  char buffer[64];
  const auto result = std::to_chars(buffer, buffer + sizeof(buffer), value);
  return std::string(buffer, result.ptr);
}

size_t EditDistance(absl::string_view a, absl::string_view b) {
  std::vector<size_t> previous(b.size() + 1), current(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) previous[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    current[0] = i;
    for (size_t j = 1; j <= b.size(); ++j) {
      const size_t substitute = previous[j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1);
      current[j] = std::min({previous[j] + 1, current[j - 1] + 1, substitute});
    }
    std::swap(previous, current);
  }
  return previous[b.size()];
}

}  // namespace

absl::Status ReadYamlField(const YAML::Node& node, const YamlField& field) {
  return std::visit(Overloaded{
                        [&](int* out) { return ReadInteger(node, field.constraint, out); },
                        [&](int64_t* out) { return ReadInteger(node, field.constraint, out); },
                        [&](uint64_t* out) { return ReadInteger(node, field.constraint, out); },
                        [&](float* out) { return ReadFloat(node, field.constraint, out); },
                        [&](double* out) { return ReadFloat(node, field.constraint, out); },
                        [&](bool* out) { return ReadBool(node, out); },
                        [&](std::string* out) { return ReadString(node, field, out); },
                    },
                    field.value);
}

std::string WriteYamlField(const YamlField& field) {
  return std::visit(Overloaded{
                        [](const int* v) { return absl::StrCat(*v); },
                        [](const int64_t* v) { return absl::StrCat(*v); },
                        [](const uint64_t* v) { return absl::StrCat(*v); },
                        [](const float* v) { return FormatFloat(*v); },
                        [](const double* v) { return FormatFloat(*v); },
                        [](const bool* v) { return std::string(*v ? "true" : "false"); },
                        [](const std::string* v) { return QuoteYamlString(*v); },
                    },
                    field.value);
}

std::string DescribeYamlNode(const YAML::Node& node) {
  if (!node.IsDefined() || node.IsNull()) return "nothing";
  if (node.IsSequence()) return "a sequence";
  if (node.IsMap()) return "a map";
  if (node.Tag() == kPlainTag) return absl::StrFormat("'%s'", node.Scalar());
  if (node.Tag() == kQuotedTag) return absl::StrFormat("the quoted string \"%s\"", node.Scalar());
  return absl::StrFormat("'%s' tagged %s", node.Scalar(), node.Tag());
}

absl::string_view ClosestKey(absl::string_view key,
                             const std::vector<absl::string_view>& candidates) {
  // Two edits catch a swapped, dropped or doubled letter without matching unrelated short keys.
  constexpr size_t kMaxDistance = 2;
  absl::string_view best;
  size_t best_distance = kMaxDistance + 1;
  for (const absl::string_view candidate : candidates) {
    const size_t distance = EditDistance(key, candidate);
    if (distance < best_distance) {
      best = candidate;
      best_distance = distance;
    }
  }
  return best;
}

}  // namespace loom
