#include "launch/world_layout.h"

#include <sched.h>

#include <cstdint>
#include <map>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#ifdef LOOM_HAVE_CUDA
#include "src/cuda/cuda_device.h"
#endif

namespace loom {
namespace {

// A rank's placement travels as fixed-size int32 records (the runtime gathers numbers, not
// strings): local rank, threads, GPU, then the host and cpu strings one character per element.
constexpr size_t kTextChars = 64;  // HOST_NAME_MAX; longer cpu lists are cut with "..."
constexpr size_t kRecord = 3 + 2 * kTextChars;

void PutText(const std::string& text, int32_t* out) {
  std::string t = text.size() <= kTextChars ? text : text.substr(0, kTextChars - 3) + "...";
  for (size_t i = 0; i < kTextChars; ++i) out[i] = i < t.size() ? static_cast<uint8_t>(t[i]) : 0;
}

std::string GetText(const int32_t* in) {
  std::string t;
  for (size_t i = 0; i < kTextChars && in[i] != 0; ++i) t += static_cast<char>(in[i]);
  return t;
}

// "0-3,8,10-11" from sorted numbers.
std::string Ranges(const std::vector<int>& values) {
  std::vector<std::string> parts;
  for (size_t i = 0; i < values.size();) {
    size_t j = i;
    while (j + 1 < values.size() && values[j + 1] == values[j] + 1) ++j;
    parts.push_back(j == i ? absl::StrCat(values[i]) : absl::StrCat(values[i], "-", values[j]));
    i = j + 1;
  }
  return absl::StrJoin(parts, ",");
}

// The cores this process may run on: mpirun --bind-to core or srun --cpu-bind narrow it.
std::string AllowedCpus() {
  cpu_set_t set;
  CPU_ZERO(&set);
  if (sched_getaffinity(0, sizeof(set), &set) != 0) return "?";
  std::vector<int> cpus;
  for (int c = 0; c < CPU_SETSIZE; ++c) {
    if (CPU_ISSET(c, &set)) cpus.push_back(c);
  }
  return Ranges(cpus);
}

// The device the nccl backend picks (local rank modulo visible devices); -1 for CPU ranks.
int GpuOf(const Communicator& comm) {
#ifdef LOOM_HAVE_CUDA
  if (comm.backend() == Backend::kNccl) {
    absl::StatusOr<int> devices = CudaDeviceCount();
    if (devices.ok() && *devices > 0) return comm.world().local_rank % *devices;
  }
#else
  (void)comm;
#endif
  return -1;
}

}  // namespace

absl::StatusOr<std::vector<RankPlacement>> GatherWorldLayout(Communicator& comm, int threads) {
  std::vector<int32_t> mine(kRecord);
  mine[0] = comm.world().local_rank;
  mine[1] = threads;
  mine[2] = GpuOf(comm);
  PutText(comm.world().hostname, &mine[3]);
  PutText(AllowedCpus(), &mine[3 + kTextChars]);
  std::vector<int32_t> all(kRecord * static_cast<size_t>(comm.size()));
  if (absl::Status s = comm.AllGather(comm.world_group(), mine, all); !s.ok()) return s;
  std::vector<RankPlacement> ranks;
  std::map<std::string, int> seen_on_host;  // for launchers that leave the local rank unknown
  for (int r = 0; r < comm.size(); ++r) {
    const int32_t* rec = &all[kRecord * static_cast<size_t>(r)];
    RankPlacement p;
    p.rank = r;
    p.host = GetText(rec + 3);
    const int counted = seen_on_host[p.host]++;
    p.local_rank = rec[0] >= 0 ? rec[0] : counted;
    p.threads = rec[1];
    p.gpu = rec[2];
    p.cpus = GetText(rec + 3 + kTextChars);
    ranks.push_back(std::move(p));
  }
  return ranks;
}

std::string FormatWorldLayout(const std::vector<RankPlacement>& ranks, const Communicator& comm) {
  std::map<std::string, std::vector<int>> by_host;
  for (const RankPlacement& p : ranks) by_host[p.host].push_back(p.rank);
  std::string out = absl::StrFormat(
      "world: %d rank%s, %s backend (%s), %d host%s\n", ranks.size(), ranks.size() == 1 ? "" : "s",
      BackendName(comm.backend()), comm.world().source, by_host.size(),
      by_host.size() == 1 ? "" : "s");
  for (const auto& [host, members] : by_host) {
    absl::StrAppend(&out, absl::StrFormat("  host %s: rank%s %s\n", host,
                                          members.size() == 1 ? "" : "s", Ranges(members)));
  }
  // Thousands of ranks would bury the log; the host lines above still show the whole world.
  if (ranks.size() > 32) return out;
  for (const RankPlacement& p : ranks) {
    const std::string device =
        p.gpu >= 0 ? absl::StrFormat("GPU %d, ", p.gpu) : std::string("CPU, ");
    absl::StrAppend(&out, absl::StrFormat("  rank %d: host %s, local rank %d, %s%d thread%s on "
                                          "cpus %s\n",
                                          p.rank, p.host, p.local_rank, device, p.threads,
                                          p.threads == 1 ? "" : "s", p.cpus));
  }
  return out;
}

}  // namespace loom
