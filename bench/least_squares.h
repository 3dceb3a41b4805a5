// Fitting a cost model's coefficients to measured times: weighted least squares with weights 1/y
// (relative, not absolute, error: the times span orders of magnitude, and an unweighted fit would
// let the longest alone decide), coefficients kept non-negative (the planners read a negative
// term as work that makes a step faster). Shared by the calibration benchmarks.
#ifndef LOOM_BENCH_LEAST_SQUARES_H_
#define LOOM_BENCH_LEAST_SQUARES_H_

#include <array>
#include <vector>

namespace loom::bench {

using Features = std::array<double, 3>;

// y ~ x . coefficients, over the columns in `use` (the others held at 0). Columns are scaled to
// unit size first: a squared token count and a count of micro-batches differ by 10^7.
Features SolveSubset(const std::vector<Features>& x, const std::vector<double>& y,
                     const std::array<bool, 3>& use);

// The best fit, by relative residual, over every subset of columns whose coefficients all come
// out >= 0.
Features FitNonNegative(const std::vector<Features>& x, const std::vector<double>& y);

// |predicted - measured| / measured.
double RelativeError(double predicted, double measured);

}  // namespace loom::bench

#endif  // LOOM_BENCH_LEAST_SQUARES_H_
