#include "runtime/world.h"

#include <unistd.h>

#include <cstdlib>

#include "absl/status/status.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"

namespace loom {
namespace {

// Reads a non-negative integer variable; nullopt when unset, an error when set but malformed.
absl::StatusOr<std::optional<int>> ReadInt(const EnvLookup& env, absl::string_view name) {
  std::optional<std::string> text = env(name);
  if (!text.has_value()) return std::optional<int>();
  int value = 0;
  if (!absl::SimpleAtoi(*text, &value) || value < 0) {
    return absl::InvalidArgumentError(absl::StrCat("environment variable ", name, "='", *text,
                                                   "' is not a non-negative integer"));
  }
  return std::optional<int>(value);
}

// Fills `*out` from variable `name` when set, else with `fallback`.
absl::Status ReadIntOr(const EnvLookup& env, absl::string_view name, int fallback, int* out) {
  absl::StatusOr<std::optional<int>> value = ReadInt(env, name);
  if (!value.ok()) return value.status();
  *out = value->value_or(fallback);
  return absl::OkStatus();
}

absl::Status CheckBelow(absl::string_view what, int value, absl::string_view bound_name,
                        int bound) {
  if (value >= bound) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, " ", value, " is not below ", bound_name, " ", bound));
  }
  return absl::OkStatus();
}

// Reads the launcher variables for rank and size (both must be set together) and the optional
// local and node ones, then checks they are consistent.
struct Names {
  absl::string_view source, rank, size, local_rank, local_size, node, num_nodes;
  // Slurm sets SLURM_PROCID in the batch script too, without a job step: one process, no launcher.
  bool rank_alone_is_no_launcher = false;
};

absl::StatusOr<std::optional<WorldInfo>> ReadLauncher(const EnvLookup& env, const Names& names) {
  absl::StatusOr<std::optional<int>> rank = ReadInt(env, names.rank);
  if (!rank.ok()) return rank.status();
  absl::StatusOr<std::optional<int>> size = ReadInt(env, names.size);
  if (!size.ok()) return size.status();
  if (!size->has_value() && (!rank->has_value() || names.rank_alone_is_no_launcher)) {
    return std::optional<WorldInfo>();
  }
  if (!rank->has_value() || !size->has_value()) {
    return absl::InvalidArgumentError(absl::StrCat("environment sets only one of ", names.rank,
                                                   " and ", names.size, " (", names.source, ")"));
  }
  WorldInfo info;
  info.source = std::string(names.source);
  info.rank = **rank;
  info.size = **size;
  if (info.size < 1) {
    return absl::InvalidArgumentError(absl::StrCat(names.size, " must be at least 1"));
  }
  absl::Status status = CheckBelow(names.rank, info.rank, names.size, info.size);
  if (!status.ok()) return status;
  for (const auto& [name, out] :
       {std::pair{names.local_rank, &info.local_rank},
        std::pair{names.local_size, &info.local_size}, std::pair{names.node, &info.node},
        std::pair{names.num_nodes, &info.num_nodes}}) {
    if (name.empty()) {
      *out = -1;
      continue;
    }
    status = ReadIntOr(env, name, -1, out);
    if (!status.ok()) return status;
  }
  if (info.local_rank >= 0 && info.local_size >= 0) {
    status = CheckBelow(names.local_rank, info.local_rank, names.local_size, info.local_size);
    if (!status.ok()) return status;
  }
  if (info.node >= 0 && info.num_nodes >= 0) {
    status = CheckBelow(names.node, info.node, names.num_nodes, info.num_nodes);
    if (!status.ok()) return status;
  }
  return std::optional<WorldInfo>(std::move(info));
}

}  // namespace

EnvLookup ProcessEnv() {
  return [](absl::string_view name) -> std::optional<std::string> {
    const char* value = std::getenv(std::string(name).c_str());
    if (value == nullptr) return std::nullopt;
    return std::string(value);
  };
}

std::string HostName() {
  char name[256] = {};
  if (gethostname(name, sizeof(name) - 1) != 0) return "unknown-host";
  return name;
}

absl::StatusOr<WorldInfo> DetectWorld(const EnvLookup& env) {
  static constexpr Names kLaunchers[] = {
      {"openmpi", "OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_LOCAL_RANK",
       "OMPI_COMM_WORLD_LOCAL_SIZE", "", ""},
      {"pmi", "PMI_RANK", "PMI_SIZE", "MPI_LOCALRANKID", "MPI_LOCALNRANKS", "", ""},
      {"slurm", "SLURM_PROCID", "SLURM_STEP_NUM_TASKS", "SLURM_LOCALID", "", "SLURM_NODEID",
       "SLURM_STEP_NUM_NODES", /*rank_alone_is_no_launcher=*/true},
  };
  for (const Names& names : kLaunchers) {
    absl::StatusOr<std::optional<WorldInfo>> info = ReadLauncher(env, names);
    if (!info.ok()) return info.status();
    if (info->has_value()) {
      WorldInfo world = std::move(**info);
      world.hostname = HostName();
      if (world.size == 1) {
        world.local_rank = 0;
        world.local_size = 1;
        world.node = 0;
        world.num_nodes = 1;
      }
      return world;
    }
  }
  WorldInfo singleton;
  singleton.hostname = HostName();
  singleton.source = "singleton";
  return singleton;
}

}  // namespace loom
