#include "bench/least_squares.h"

#include <algorithm>
#include <cmath>

namespace loom::bench {

double RelativeError(double predicted, double measured) {
  return std::abs(predicted - measured) / measured;
}

Features SolveSubset(const std::vector<Features>& x, const std::vector<double>& y,
                     const std::array<bool, 3>& use) {
  std::vector<int> cols;
  for (int j = 0; j < 3; ++j) {
    if (use[static_cast<size_t>(j)]) cols.push_back(j);
  }
  Features scale{0.0, 0.0, 0.0};
  for (const Features& row : x) {
    for (size_t j = 0; j < 3; ++j) scale[j] = std::max(scale[j], std::abs(row[j]));
  }
  for (double& s : scale) s = s > 0 ? s : 1.0;
  const size_t k = cols.size();
  std::vector<std::vector<double>> m(k, std::vector<double>(k + 1, 0.0));  // normal equations
  for (size_t i = 0; i < x.size(); ++i) {
    const double w = 1.0 / y[i];
    for (size_t r = 0; r < k; ++r) {
      const size_t jr = static_cast<size_t>(cols[r]);
      for (size_t q = 0; q < k; ++q) {
        const size_t jq = static_cast<size_t>(cols[q]);
        m[r][q] += w * w * (x[i][jr] / scale[jr]) * (x[i][jq] / scale[jq]);
      }
      m[r][k] += w * w * (x[i][jr] / scale[jr]) * y[i];
    }
  }
  for (size_t p = 0; p < k; ++p) {  // Gaussian elimination with partial pivoting
    size_t best = p;
    for (size_t r = p + 1; r < k; ++r) {
      if (std::abs(m[r][p]) > std::abs(m[best][p])) best = r;
    }
    std::swap(m[p], m[best]);
    for (size_t r = 0; r < k; ++r) {
      if (r == p || m[p][p] == 0.0) continue;
      const double f = m[r][p] / m[p][p];
      for (size_t q = p; q <= k; ++q) m[r][q] -= f * m[p][q];
    }
  }
  Features c{0.0, 0.0, 0.0};
  for (size_t r = 0; r < k; ++r) {
    const size_t j = static_cast<size_t>(cols[r]);
    c[j] = (m[r][r] != 0.0 ? m[r][k] / m[r][r] : 0.0) / scale[j];
  }
  return c;
}

Features FitNonNegative(const std::vector<Features>& x, const std::vector<double>& y) {
  Features best{0.0, 0.0, 0.0};
  double best_residual = INFINITY;
  for (int mask = 1; mask < 8; ++mask) {
    const std::array<bool, 3> use{(mask & 1) != 0, (mask & 2) != 0, (mask & 4) != 0};
    const Features c = SolveSubset(x, y, use);
    if (c[0] < 0 || c[1] < 0 || c[2] < 0) continue;
    double residual = 0.0;
    for (size_t i = 0; i < x.size(); ++i) {
      const double r = RelativeError(c[0] * x[i][0] + c[1] * x[i][1] + c[2] * x[i][2], y[i]);
      residual += r * r;
    }
    if (residual < best_residual) {
      best_residual = residual;
      best = c;
    }
  }
  return best;
}

}  // namespace loom::bench
