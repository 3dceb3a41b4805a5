#include "bench/bench.h"

#include <cblas.h>
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <iostream>

#include "src/tensor.h"

namespace loom::bench {

std::map<std::string, BenchFn>& Registry() {
  static auto* registry = new std::map<std::string, BenchFn>();
  return *registry;
}

double Median(std::vector<double> values) {
  if (values.empty()) return 0.0;
  std::sort(values.begin(), values.end());
  const size_t n = values.size();
  return n % 2 ? values[n / 2] : 0.5 * (values[n / 2 - 1] + values[n / 2]);
}

double TimeSeconds(const std::function<void()>& fn) {
  const auto start = std::chrono::steady_clock::now();
  fn();
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

double MeasureSgemmGflops(int n, int repeats) {
  Buffer a(static_cast<size_t>(n) * n), b(static_cast<size_t>(n) * n), c(static_cast<size_t>(n) * n);
  for (size_t i = 0; i < a.numel(); ++i) {
    a.data()[i] = static_cast<float>((i * 7 % 13) - 6) * 0.01f;
    b.data()[i] = static_cast<float>((i * 5 % 11) - 5) * 0.01f;
  }
  auto run = [&] {
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, n, n, 1.0f, a.data(), n, b.data(),
                n, 0.0f, c.data(), n);
  };
  run();  // warm-up
  std::vector<double> rates;
  for (int r = 0; r < repeats; ++r) {
    const double s = TimeSeconds(run);
    rates.push_back(2.0 * n * n * static_cast<double>(n) / s / 1e9);
  }
  return Median(rates);
}

}  // namespace loom::bench

int main(int argc, char** argv) {
  using loom::bench::Registry;
  loom::bench::BenchOptions options;
  std::string name;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "--quick") {
      options.quick = true;
    } else if (arg.rfind("--threads=", 0) == 0) {
      options.threads = std::atoi(arg.c_str() + 10);
    } else if (arg.rfind("--repeats=", 0) == 0) {
      options.repeats = std::atoi(arg.c_str() + 10);
    } else if (name.empty() && arg[0] != '-') {
      name = arg;
    } else {
      std::fprintf(stderr, "loom_bench: unknown argument '%s'\n", arg.c_str());
      return 2;
    }
  }
  auto it = Registry().find(name);
  if (it == Registry().end()) {
    std::fprintf(stderr, "usage: loom_bench NAME [--threads=N] [--repeats=N] [--quick]\nNAME:");
    for (const auto& [n, fn] : Registry()) std::fprintf(stderr, " %s", n.c_str());
    std::fprintf(stderr, "\n");
    return name.empty() ? 2 : 1;
  }
  if (options.threads < 1 || options.repeats < 1) {
    std::fprintf(stderr, "loom_bench: --threads and --repeats must be >= 1\n");
    return 2;
  }
  omp_set_num_threads(options.threads);
  openblas_set_num_threads(options.threads);
  nlohmann::json result = it->second(options);
  result["benchmark"] = name;
  result["threads"] = options.threads;
  std::cout << result.dump() << std::endl;
  return 0;
}
