// Elementwise ops of the CPU backend (src/backend/cpu/elementwise.cpp): add /
// scale, the token embedding and SwiGLU, against hand values and finite
// differences in fp64.
// Helpers and tolerances: support/cpu_test_util.h.
#include <gtest/gtest.h>

#include "support/cpu_test_util.h"

namespace moe {
namespace {

using namespace test;

// ----------------------------------------------------------- add / scale ----

TEST_F(CpuOps, AddAndScale) {
  Vec y = {1, 2, 3}, x = {10, 20, 30};
  be->add_inplace(y.data(), x.data(), 3);
  be->scale_inplace(y.data(), 0.5, 3);
  EXPECT_EQ(y, (Vec{5.5, 11, 16.5}));
}

// ------------------------------------------------------------- embedding ----

TEST_F(CpuOps, EmbeddingRepeatedTokens) {
  const int V = 5, D = 3, N = 6;
  const int32_t tok[N] = {1, 3, 1, 1, 0, 3};
  Vec table = randn(V * D, 7), R = randn(N * D, 8), y(N * D);
  be->embedding_forward(y.data(), table.data(), tok, N, D);
  for (int n = 0; n < N; n++)
    for (int d = 0; d < D; d++) EXPECT_EQ(y[n * D + d], table[tok[n] * D + d]);
  auto L = [&] {
    be->embedding_forward(y.data(), table.data(), tok, N, D);
    return dotv(R, y);
  };
  Vec fd = fd_grad(table, L);
  Vec dt = filled(V * D, 1.5);  // +=
  be->embedding_backward(dt.data(), R.data(), tok, N, D);
  EXPECT_LT(rel_err(fd, minus(dt, 1.5)), kTol);
  for (int d = 0; d < D; d++) EXPECT_EQ(dt[2 * D + d], 1.5);  // token 2 unused
}

// ---------------------------------------------------------------- swiglu ----

TEST_F(CpuOps, SwigluForwardAndGradient) {
  const int N = 3, F = 4;
  Vec a = randn(N * 2 * F, 16, 2.0), R = randn(N * F, 17), h(N * F);
  be->swiglu_forward(h.data(), a.data(), N, F);
  for (int n = 0; n < N; n++)
    for (int j = 0; j < F; j++) {
      const double a1 = a[n * 2 * F + j], a3 = a[n * 2 * F + F + j];
      // the kernel's x * (1 / (1 + e)) * a3: ~2 ulps of |h| <= 7.1 (8.9e-16 each)
      EXPECT_NEAR(h[n * F + j], a1 / (1 + std::exp(-a1)) * a3, 1e-14);
    }
  auto L = [&] {
    be->swiglu_forward(h.data(), a.data(), N, F);
    return dotv(R, h);
  };
  Vec fd = fd_grad(a, L);
  Vec da = filled(N * 2 * F, 4.0);  // overwritten
  be->swiglu_backward(da.data(), R.data(), a.data(), N, F);
  EXPECT_LT(rel_err(fd, da), kTol);
}

}  // namespace
}  // namespace moe
