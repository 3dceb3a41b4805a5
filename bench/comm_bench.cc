// comm: what moving data between ranks costs, as a fraction of the memcpy bandwidth measured in
// the same run.
//
// Run as one process, it measures the local backend (2 and 4 ranks as threads); run under
// mpirun (scripts/bench_comm.sh does both), it measures the mpi backend at the job's size and what
// creating an MPI group communicator costs. For each message size from 4 KiB to 64 MiB:
//   - all-reduce (fp32 sum) bus bandwidth: bytes / time * 2(n-1)/n, the data each rank must send
//     and receive in a bandwidth-optimal all-reduce (the nccl-tests convention);
//   - ring bandwidth: every rank sends `bytes` to the next and receives `bytes` from the previous
//     rank in one Exchange; bytes / time is what one link of the ring carries.
// The yardstick is memcpy bandwidth: bytes copied per second (each byte read once and written
// once) for 64 MiB, out of cache, measured by rank 0 alone. Messages up to a few MiB stay in cache
// and can beat it (a fraction above 1); small ones are bound by latency, reported as well. Times
// are rank 0's, from a barrier to the end of the operations, median over repeats.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <memory>
#include <vector>

#include "bench/bench.h"
#include "runtime/local_world.h"
#include "runtime/mpi_communicator.h"
#include "runtime/world.h"

namespace loom::bench {
namespace {

constexpr size_t kMiB = size_t{1} << 20;

std::vector<size_t> MessageSizes(bool quick) {
  std::vector<size_t> sizes;
  for (size_t bytes = 4096; bytes <= (quick ? kMiB : 64 * kMiB); bytes *= 4) sizes.push_back(bytes);
  return sizes;
}

double Seconds(const std::chrono::steady_clock::time_point& start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

// Enough back-to-back operations per timing that small messages are not lost in clock noise.
int Iterations(size_t bytes) {
  return static_cast<int>(std::clamp<size_t>(16 * kMiB / bytes, 1, 256));
}

double MemcpyGBs(size_t bytes, int repeats) {
  std::vector<char> source(bytes, 1), target(bytes, 0);
  std::memcpy(target.data(), source.data(), bytes);  // warm-up: pages touched
  const int iterations = Iterations(bytes);
  std::vector<double> rates;
  for (int r = 0; r < repeats; ++r) {
    const double s = TimeSeconds([&] {
      for (int i = 0; i < iterations; ++i) {
        std::memcpy(target.data(), source.data(), bytes);
        // Keeps the copies from being merged or dropped.
        asm volatile("" : : "r"(target.data()) : "memory");
      }
    });
    rates.push_back(static_cast<double>(bytes) * iterations / s / 1e9);
  }
  return Median(rates);
}

struct SizeResult {
  size_t bytes = 0;
  double allreduce_s = 0;
  double ring_s = 0;
};

// Runs on every rank; fills `results` on rank 0.
absl::Status MeasureSizes(Communicator& comm, const BenchOptions& options,
                          std::vector<SizeResult>& results) {
  const Group& world = comm.world_group();
  const int next = world.NextOf(comm.rank());
  const int prev = world.PrevOf(comm.rank());
  for (size_t bytes : MessageSizes(options.quick)) {
    std::vector<float> data(bytes / sizeof(float), 1.0f), incoming(bytes / sizeof(float));
    const SendSpec sends[] = {{data, next, 1}};
    const RecvSpec recvs[] = {{incoming, prev, 1}};
    auto time = [&](auto&& op) -> absl::StatusOr<double> {
      absl::Status status = op();  // warm-up
      std::vector<double> times;
      const int iterations = Iterations(bytes);
      for (int r = 0; status.ok() && r < options.repeats; ++r) {
        status = comm.Barrier(world);
        const auto start = std::chrono::steady_clock::now();
        for (int i = 0; status.ok() && i < iterations; ++i) status = op();
        times.push_back(Seconds(start) / iterations);
      }
      if (!status.ok()) return status;
      return Median(times);
    };
    absl::StatusOr<double> allreduce =
        time([&] { return comm.AllReduce(world, data, ReduceOp::kSum); });
    if (!allreduce.ok()) return allreduce.status();
    absl::StatusOr<double> ring = time([&] { return comm.Exchange(sends, recvs); });
    if (!ring.ok()) return ring.status();
    if (comm.rank() == 0) results.push_back({bytes, *allreduce, *ring});
  }
  return absl::OkStatus();
}

nlohmann::json Report(const std::vector<SizeResult>& results, int ranks, double memcpy_gbs) {
  std::printf("  %d ranks\n  %10s %14s %9s %10s %12s %9s %10s\n", ranks, "bytes", "allreduce GB/s",
              "/memcpy", "us", "ring GB/s", "/memcpy", "us");
  nlohmann::json rows = nlohmann::json::array();
  for (const SizeResult& r : results) {
    const double bus = static_cast<double>(r.bytes) / r.allreduce_s / 1e9 * 2.0 * (ranks - 1) /
                       static_cast<double>(ranks);
    const double ring = static_cast<double>(r.bytes) / r.ring_s / 1e9;
    std::printf("  %10zu %14.3f %9.3f %10.1f %12.3f %9.3f %10.1f\n", r.bytes, bus, bus / memcpy_gbs,
                r.allreduce_s * 1e6, ring, ring / memcpy_gbs, r.ring_s * 1e6);
    rows.push_back({{"bytes", r.bytes},
                    {"allreduce_busbw_gbs", bus},
                    {"allreduce_fraction", bus / memcpy_gbs},
                    {"allreduce_us", r.allreduce_s * 1e6},
                    {"ring_gbs", ring},
                    {"ring_fraction", ring / memcpy_gbs},
                    {"ring_us", r.ring_s * 1e6}});
  }
  return {{"ranks", ranks}, {"sizes", rows}};
}

nlohmann::json LocalBench(const BenchOptions& options, double memcpy_gbs) {
  nlohmann::json runs = nlohmann::json::array();
  for (int ranks : {2, 4}) {
    auto world = LocalWorld::Create(ranks, absl::Minutes(2));
    std::vector<SizeResult> results;
    absl::Status status =
        (*world)->Run([&](Communicator& comm) { return MeasureSizes(comm, options, results); });
    if (!status.ok()) return {{"error", status.ToString()}};
    runs.push_back(Report(results, ranks, memcpy_gbs));
  }
  return runs;
}

// Median cost of a new group communicator, measured on fresh communicators (whose caches are
// empty): the whole world in reverse order (the world in order needs none) and, with more than two
// ranks, the pair [1 0]; and of finding a cached one.
nlohmann::json GroupCreation(const Communicator& comm, const BenchOptions& options) {
  std::vector<double> world_ms, pair_ms, cached_us;
  const int n = comm.size();
  std::vector<int> reversed;
  for (int r = n - 1; r >= 0; --r) reversed.push_back(r);
  const Group world_reversed = *Group::Make(reversed);
  const Group pair = *Group::Make({1, 0});
  for (int trial = 0; trial < options.repeats; ++trial) {
    absl::StatusOr<std::unique_ptr<Communicator>> fresh = MakeMpiCommunicator(absl::Minutes(2));
    if (!fresh.ok()) return {{"error", fresh.status().ToString()}};
    Communicator& c = **fresh;
    (void)c.Barrier(c.world_group());
    auto start = std::chrono::steady_clock::now();
    absl::Status status = c.PrepareGroup(world_reversed);
    world_ms.push_back(Seconds(start) * 1e3);
    start = std::chrono::steady_clock::now();
    if (status.ok()) status = c.PrepareGroup(world_reversed);
    cached_us.push_back(Seconds(start) * 1e6);
    if (status.ok() && n > 2 && pair.Contains(c.rank())) {
      start = std::chrono::steady_clock::now();
      status = c.PrepareGroup(pair);
      pair_ms.push_back(Seconds(start) * 1e3);
    }
    if (status.ok()) status = c.Barrier(c.world_group());
    if (!status.ok()) return {{"error", status.ToString()}};
  }
  if (comm.rank() == 0) {
    std::printf(
        "  MPI group communicator creation (median of %d fresh communicators): world "
        "reversed %.3f ms",
        options.repeats, Median(world_ms));
    if (n > 2) std::printf(", pair [1 0] %.3f ms", Median(pair_ms));
    std::printf(", cached %.1f us\n", Median(cached_us));
  }
  nlohmann::json result = {{"world_reversed_ms", Median(world_ms)},
                           {"cached_lookup_us", Median(cached_us)},
                           {"samples", options.repeats}};
  if (n > 2) result["pair_ms"] = Median(pair_ms);
  return result;
}

nlohmann::json CommBench(const BenchOptions& options) {
  const int memcpy_repeats = std::max(options.repeats, 5);
  absl::StatusOr<WorldInfo> launcher = DetectWorld(ProcessEnv());
  const bool under_mpirun = launcher.ok() && launcher->size > 1;
  if (!under_mpirun) {
    const double memcpy_gbs = MemcpyGBs(64 * kMiB, memcpy_repeats);
    std::printf("comm: local backend (ranks as threads), memcpy %.2f GB/s\n", memcpy_gbs);
    return {{"backend", "local"},
            {"memcpy_gbs", memcpy_gbs},
            {"runs", LocalBench(options, memcpy_gbs)}};
  }
  absl::StatusOr<std::unique_ptr<Communicator>> comm = MakeMpiCommunicator(absl::Minutes(2));
  if (!comm.ok()) return {{"backend", "mpi"}, {"error", comm.status().ToString()}};
  const int ranks = (*comm)->size();
  // Rank 0 alone measures memcpy, while the others wait, so the processes do not share the cores.
  double memcpy_gbs = 0;
  (void)(*comm)->Barrier((*comm)->world_group());
  if ((*comm)->rank() == 0) {
    memcpy_gbs = MemcpyGBs(64 * kMiB, memcpy_repeats);
    std::printf("comm: mpi backend, %d processes, memcpy %.2f GB/s\n", ranks, memcpy_gbs);
  }
  (void)(*comm)->Barrier((*comm)->world_group());
  std::vector<SizeResult> results;
  absl::Status status = MeasureSizes(**comm, options, results);
  if (!status.ok()) return {{"backend", "mpi"}, {"error", status.ToString()}};
  nlohmann::json run = (*comm)->rank() == 0 ? Report(results, ranks, memcpy_gbs) : nlohmann::json();
  nlohmann::json groups = GroupCreation(**comm, options);
  return {
      {"backend", "mpi"}, {"memcpy_gbs", memcpy_gbs}, {"runs", {run}}, {"group_creation", groups}};
}

Registrar reg("comm", CommBench);

}  // namespace
}  // namespace loom::bench
