// Token dispatch of the CPU backend (src/backend/cpu/dispatch.cpp): the plan,
// combine and row permutation, against hand values and finite differences.
// Helpers and tolerances: support/cpu_test_util.h.
#include <gtest/gtest.h>

#include "support/cpu_test_util.h"

namespace moe {
namespace {

using namespace test;

// -------------------------------------------------------------- dispatch ----

TEST_F(CpuOps, DispatchPlanStableAndCounts) {
  // 4 tokens, K = 2, E = 4: expert 3 gets nothing.
  const std::vector<int32_t> idx = {2, 0, 0, 2, 2, 1, 0, 2};
  std::vector<int32_t> row(8, -1);
  std::vector<int64_t> counts(4, -1);
  be->dispatch_plan(row.data(), counts.data(), idx.data(), 4, 4, 2);
  EXPECT_EQ(counts, (std::vector<int64_t>{3, 1, 4, 0}));
  // expert 0 rows [0,3) in slot order 1,2,6; expert 1 row 3; expert 2 rows [4,8): 0,3,4,7
  EXPECT_EQ(row, (std::vector<int32_t>{4, 0, 1, 5, 6, 3, 2, 7}));

  // all tokens on one expert; the others empty
  const std::vector<int32_t> one = {1, 1, 1};
  std::vector<int32_t> row2(3);
  std::vector<int64_t> c2(3);
  be->dispatch_plan(row2.data(), c2.data(), one.data(), 3, 3, 1);
  EXPECT_EQ(c2, (std::vector<int64_t>{0, 3, 0}));
  EXPECT_EQ(row2, (std::vector<int32_t>{0, 1, 2}));

  const std::vector<int32_t> bad = {0, 5};
  EXPECT_THROW(be->dispatch_plan(row2.data(), c2.data(), bad.data(), 2, 3, 1), InternalError);
}

// A plan for the combine/permute tests: 3 tokens, K = 2, E = 3.
struct SmallPlan {
  static constexpr int N = 3, K = 2, E = 3;
  std::vector<int32_t> row = std::vector<int32_t>(N * K);
  std::vector<int64_t> counts = std::vector<int64_t>(E);
  explicit SmallPlan(Backend<double>& be) {
    const std::vector<int32_t> idx = {2, 0, 0, 1, 2, 1};
    be.dispatch_plan(row.data(), counts.data(), idx.data(), N, E, K);
  }
};

TEST_F(CpuOps, CombineForwardBackward) {
  SmallPlan p(*be);
  const int N = p.N, K = p.K, D = 4;
  Vec yp = randn(N * K * D, 23), gates = randn(N * K, 24), R = randn(N * D, 25), y;
  auto fwd = [&] {
    y = filled(N * D, 0.5);  // +=
    be->combine_forward(y.data(), yp.data(), gates.data(), p.row.data(), N, K, D);
  };
  fwd();
  for (int t = 0; t < N; t++)
    for (int d = 0; d < D; d++) {
      double ref = 0.5;
      for (int k = 0; k < K; k++) ref += gates[t * K + k] * yp[p.row[t * K + k] * D + d];
      // the kernel's loop in the kernel's order: equal up to an ulp (|y| <= 3.3)
      EXPECT_NEAR(y[t * D + d], ref, 1e-15);
    }
  auto L = [&] {
    fwd();
    return dotv(R, y);
  };
  Vec fdyp = fd_grad(yp, L), fdg = fd_grad(gates, L);
  Vec dyp = filled(N * K * D, 8.0), dg = filled(N * K, 8.0);  // both overwritten
  be->combine_backward(dyp.data(), dg.data(), R.data(), yp.data(), gates.data(), p.row.data(), N, K,
                       D);
  EXPECT_LT(rel_err(fdyp, dyp), kTol);
  EXPECT_LT(rel_err(fdg, dg), kTol);
}

TEST_F(CpuOps, PermuteRowsBackward) {
  SmallPlan p(*be);
  const int N = p.N, K = p.K, D = 3;
  Vec x = randn(N * D, 26), R = randn(N * K * D, 27), xp(N * K * D);
  be->permute_rows(xp.data(), x.data(), p.row.data(), N, K, D);
  for (int t = 0; t < N; t++)
    for (int k = 0; k < K; k++)
      for (int d = 0; d < D; d++) EXPECT_EQ(xp[p.row[t * K + k] * D + d], x[t * D + d]);
  auto L = [&] {
    be->permute_rows(xp.data(), x.data(), p.row.data(), N, K, D);
    return dotv(R, xp);
  };
  Vec fd = fd_grad(x, L);
  Vec dx = filled(N * D, -2.0);  // +=
  be->permute_rows_backward(dx.data(), R.data(), p.row.data(), N, K, D);
  EXPECT_LT(rel_err(fd, minus(dx, -2.0)), kTol);
}

}  // namespace
}  // namespace moe
