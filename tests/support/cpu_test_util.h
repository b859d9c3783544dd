// Shared helpers of the CPU op tests (tests/ops/test_cpu_*.cpp): random
// inputs, central finite differences, errors, and the fp64 backend fixture.
//
// Tolerances. Values are compared in fp64 (u = 2^-53 = 1.1e-16) but in
// CpuOpsPrecision (fp32 against fp64, derived in test_cpu_backend.cpp) and
// where a float result is exact (a copied score, bit-identity across thread
// counts). In fp64 a different BLAS kernel or thread count moves a result by
// a few u of sum|terms|, far below every tolerance here:
//   - finite differences (kStep, kTol): central differences err by
//     h^2/6 |f'''| ~ 1e-13 (0 for the bilinear ops) plus the rounding of L,
//     ~u |L| / h ~ 1e-10 |L|; observed ~1e-10 relative. kTol = 1e-6 leaves
//     1e4, while a wrong or missing backward term is O(1e-2 .. 1) relative;
//   - values against hand formulas: a handful of fp64 operations on both
//     sides, so a few ulps; each absolute tolerance is several ulps of the
//     values it compares (ulp(1) = 2.2e-16, ulp(4) = 8.9e-16), and about one
//     only where both sides evaluate the same expression (said there).
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <functional>
#include <memory>
#include <random>
#include <vector>

#include "backend/backend.h"
#include "core/error.h"

namespace moe::test {

using Vec = std::vector<double>;

inline constexpr double kStep = 1e-6;
inline constexpr double kTol = 1e-6;

inline Vec randn(size_t n, uint64_t seed, double scale = 1.0) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<double> dist(0.0, scale);
  Vec v(n);
  for (auto& x : v) x = dist(rng);
  return v;
}

inline Vec filled(size_t n, double c) { return Vec(n, c); }

inline double dotv(const Vec& a, const Vec& b) {
  double s = 0.0;
  for (size_t i = 0; i < a.size(); i++) s += a[i] * b[i];
  return s;
}

// ||fd - an|| / max(||fd||, 1e-12)
inline double rel_err(const Vec& fd, const Vec& an) {
  EXPECT_EQ(fd.size(), an.size());
  double num = 0.0, den = 0.0;
  for (size_t i = 0; i < fd.size(); i++) {
    num += (fd[i] - an[i]) * (fd[i] - an[i]);
    den += fd[i] * fd[i];
  }
  return std::sqrt(num) / std::max(std::sqrt(den), 1e-12);
}

// Central differences of f with respect to every element of x (x restored).
inline Vec fd_grad(Vec& x, const std::function<double()>& f) {
  Vec g(x.size());
  for (size_t i = 0; i < x.size(); i++) {
    const double s = x[i];
    x[i] = s + kStep;
    const double fp = f();
    x[i] = s - kStep;
    const double fm = f();
    x[i] = s;
    g[i] = (fp - fm) / (2 * kStep);
  }
  return g;
}

// an - c elementwise: the part an op added on top of a prefilled constant.
inline Vec minus(const Vec& an, double c) {
  Vec r(an);
  for (auto& x : r) x -= c;
  return r;
}

class CpuOps : public ::testing::Test {
 protected:
  std::unique_ptr<Backend<double>> be = make_cpu_backend<double>(2);
};

}  // namespace moe::test
