// The benchmark harness behind scripts/bench.sh NAME. Each benchmark prints a readable table and
// returns the figures as one JSON object, which the harness prints as the last line.
#ifndef LOOM_BENCH_BENCH_H_
#define LOOM_BENCH_BENCH_H_

#include <functional>
#include <map>
#include <string>
#include <vector>

#include "nlohmann/json.hpp"

namespace loom::bench {

struct BenchOptions {
  int threads = 2;      // OpenMP / OpenBLAS threads
  int repeats = 5;      // timed repetitions; figures are medians
  bool quick = false;   // smaller sizes, for a smoke run in tests
};

using BenchFn = std::function<nlohmann::json(const BenchOptions&)>;

// Name -> benchmark; filled by static Registrar objects in each bench/*.cc file.
std::map<std::string, BenchFn>& Registry();
struct Registrar {
  Registrar(const std::string& name, BenchFn fn) { Registry()[name] = std::move(fn); }
};

// Median of a list of timings.
double Median(std::vector<double> values);
// Seconds of wall time of fn().
double TimeSeconds(const std::function<void()>& fn);
// fp32 sgemm rate through OpenBLAS with the current thread count, in GFLOP/s (median of repeats,
// square matrices of side n): the yardstick every kernel figure is divided by.
double MeasureSgemmGflops(int n, int repeats);

}  // namespace loom::bench

#endif  // LOOM_BENCH_BENCH_H_
