// RMSNorm of the CPU backend (src/backend/cpu/rmsnorm.cpp), plain and fused
// with the residual add, against finite differences in fp64.
// Helpers and tolerances: support/cpu_test_util.h.
#include <gtest/gtest.h>

#include "support/cpu_test_util.h"

namespace moe {
namespace {

using namespace test;

// --------------------------------------------------------------- rmsnorm ----

TEST_F(CpuOps, RmsNormForwardAndGradients) {
  const int N = 3, D = 6;
  const double eps = 1e-6;
  Vec x = randn(N * D, 9), w = randn(D, 10), R = randn(N * D, 11), y(N * D), rstd(N);
  be->rmsnorm_forward(y.data(), rstd.data(), x.data(), w.data(), N, D, eps);
  for (int n = 0; n < N; n++) {
    double ms = 0;
    for (int d = 0; d < D; d++) ms += x[n * D + d] * x[n * D + d] / D;
    const double r = 1 / std::sqrt(ms + eps);
    // The kernel's formula with the 6 squares in another order: a few ulps
    // of rstd ~1 and of |y| <= 1.9.
    EXPECT_NEAR(rstd[n], r, 1e-14);
    for (int d = 0; d < D; d++) EXPECT_NEAR(y[n * D + d], x[n * D + d] * r * w[d], 1e-14);
  }
  auto L = [&] {
    be->rmsnorm_forward(y.data(), rstd.data(), x.data(), w.data(), N, D, eps);
    return dotv(R, y);
  };
  Vec fdx = fd_grad(x, L), fdw = fd_grad(w, L);
  L();                                                // rstd of the unperturbed x
  Vec dx = filled(N * D, 0.5), dw = filled(D, -1.0);  // both +=
  be->rmsnorm_backward(dx.data(), nullptr, dw.data(), R.data(), x.data(), w.data(), rstd.data(), N, D);
  EXPECT_LT(rel_err(fdx, minus(dx, 0.5)), kTol);
  EXPECT_LT(rel_err(fdw, minus(dw, -1.0)), kTol);
}

TEST_F(CpuOps, ResidualRmsNormIsAddThenNorm) {
  const int N = 4, D = 10;
  const double eps = 1e-6;
  const Vec resid = randn(N * D, 12), delta = randn(N * D, 13), w = randn(D, 14);
  Vec sum(N * D), y(N * D), rstd(N), y_ref(N * D), rstd_ref(N);
  be->residual_rmsnorm_forward(sum.data(), y.data(), rstd.data(), resid.data(), delta.data(),
                               w.data(), N, D, eps);
  Vec sum_ref = resid;
  be->add_inplace(sum_ref.data(), delta.data(), N * D);
  be->rmsnorm_forward(y_ref.data(), rstd_ref.data(), sum_ref.data(), w.data(), N, D, eps);
  // Bit-identical: the model's results did not change with the fusion. Exact
  // by construction: the fused kernel does the same single add and calls the
  // same row function (rmsnorm.cpp: rmsnorm_row) on it.
  EXPECT_EQ(sum, sum_ref);
  EXPECT_EQ(y, y_ref);
  EXPECT_EQ(rstd, rstd_ref);
  for (int i = 0; i < N * D; i++) EXPECT_NEAR(sum[i], resid[i] + delta[i], 1e-15);  // same add
}

}  // namespace
}  // namespace moe
