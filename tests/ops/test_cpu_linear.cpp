// Linear layers of the CPU backend (src/backend/cpu/linear.cpp), dense and
// grouped, against finite differences in fp64.
// Helpers and tolerances: support/cpu_test_util.h.
#include <gtest/gtest.h>

#include "support/cpu_test_util.h"

namespace moe {
namespace {

using namespace test;

// ---------------------------------------------------------------- linear ----

TEST_F(CpuOps, LinearForwardAndGradients) {
  const int N = 3, I = 4, O = 5;
  Vec x = randn(N * I, 1), W = randn(O * I, 2), R = randn(N * O, 3), y(N * O);
  be->linear_forward(y.data(), x.data(), W.data(), N, I, O);
  for (int n = 0; n < N; n++)
    for (int o = 0; o < O; o++) {
      double ref = 0;
      for (int i = 0; i < I; i++) ref += x[n * I + i] * W[o * I + i];
      // dgemm vs this loop: each within I u sum|x w| of the exact value in
      // any order; sum|x w| <= 7.2 here, so they differ by <= 6.4e-15.
      EXPECT_NEAR(y[n * O + o], ref, 1e-14);
    }
  auto L = [&] {
    be->linear_forward(y.data(), x.data(), W.data(), N, I, O);
    return dotv(R, y);
  };
  Vec fdx = fd_grad(x, L), fdW = fd_grad(W, L);

  // overwrite: dx starts as garbage; dW accumulates onto 0.25
  Vec dx = filled(N * I, 7.0), dW = filled(O * I, 0.25);
  be->linear_backward(dx.data(), dW.data(), R.data(), x.data(), W.data(), N, I, O, false);
  EXPECT_LT(rel_err(fdx, dx), kTol);
  EXPECT_LT(rel_err(fdW, minus(dW, 0.25)), kTol);

  // accumulate: dx += onto 0.5; null dx only touches dW
  Vec dx2 = filled(N * I, 0.5), dW2(O * I);
  be->linear_backward(dx2.data(), dW2.data(), R.data(), x.data(), W.data(), N, I, O, true);
  EXPECT_LT(rel_err(fdx, minus(dx2, 0.5)), kTol);
  Vec dW3(O * I);
  be->linear_backward(nullptr, dW3.data(), R.data(), x.data(), W.data(), N, I, O, false);
  EXPECT_LT(rel_err(fdW, dW3), kTol);
}

TEST_F(CpuOps, GroupedLinearWithEmptyGroup) {
  const int G = 3, I = 3, O = 4;
  const int64_t off[G + 1] = {0, 2, 2, 5};  // group 1 is empty
  const int N = 5;
  Vec x = randn(N * I, 4), W = randn(G * O * I, 5), R = randn(N * O, 6), y(N * O);
  be->grouped_linear_forward(y.data(), x.data(), W.data(), off, G, I, O);
  for (int g = 0; g < G; g++)
    for (int64_t n = off[g]; n < off[g + 1]; n++)
      for (int o = 0; o < O; o++) {
        double ref = 0;
        for (int i = 0; i < I; i++) ref += x[n * I + i] * W[(g * O + o) * I + i];
        EXPECT_NEAR(y[n * O + o], ref, 1e-14);  // as above: <= 2 * 3 u * 3.0 = 2e-15
      }
  auto L = [&] {
    be->grouped_linear_forward(y.data(), x.data(), W.data(), off, G, I, O);
    return dotv(R, y);
  };
  Vec fdx = fd_grad(x, L), fdW = fd_grad(W, L);
  Vec dx = filled(N * I, 9.0), dW = filled(G * O * I, 0.5);
  be->grouped_linear_backward(dx.data(), dW.data(), R.data(), x.data(), W.data(), off, G, I, O);
  EXPECT_LT(rel_err(fdx, dx), kTol);  // dx overwritten
  EXPECT_LT(rel_err(fdW, minus(dW, 0.5)), kTol);
  for (int j = 0; j < O * I; j++) EXPECT_EQ(dW[O * I + j], 0.5);  // empty group untouched
}

}  // namespace
}  // namespace moe
