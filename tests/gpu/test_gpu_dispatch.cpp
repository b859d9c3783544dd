// GPU token dispatch (kernels/dispatch.cu) against the CPU backend ops on
// random data. Every test skips cleanly when no CUDA device is visible, and
// the whole file reduces to one skipped test in a CPU-only build.
#include <gtest/gtest.h>

#ifdef MOE_WITH_CUDA

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <memory>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "backend/backend.h"
#include "backend/cuda/cuda_device.h"
#include "core/error.h"
#include "support/gpu_test_util.h"
#include "dispatch.h"

namespace {

using moe::test::DeviceBuffer;
using moe::test::normal;
using moe::test::uniform;
using moe::test::cpu;
using moe::test::normwise_rel_err;
using moe::test::same_bits;

// --------------------------------------------------------------- dispatch --

struct DispatchCase {
  std::string name;
  int N, E, K;
  std::vector<int32_t> idx;
};

// Random distinct experts per token (as top-K gives), and the edge cases.
std::vector<DispatchCase> dispatch_cases() {
  std::mt19937_64 rng(99);
  std::vector<DispatchCase> cases;
  auto random_case = [&](const std::string& name, int N, int E, int K, int used) {
    DispatchCase c{name, N, E, K, {}};
    std::vector<int32_t> experts(used);
    std::iota(experts.begin(), experts.end(), 0);
    for (int t = 0; t < N; ++t) {
      std::shuffle(experts.begin(), experts.end(), rng);
      for (int k = 0; k < K; ++k) c.idx.push_back(experts[k]);
    }
    return c;
  };
  cases.push_back(random_case("random", 257, 16, 4, 16));
  cases.push_back(random_case("many chunks", 5003, 64, 6, 64));
  cases.push_back(random_case("zero-token experts", 1000, 64, 2, 5));
  cases.push_back(random_case("K=1", 33, 8, 1, 8));
  cases.push_back(random_case("E=1", 100, 1, 1, 1));
  {
    DispatchCase c{"all on one expert", 3000, 8, 1, std::vector<int32_t>(3000, 5)};
    cases.push_back(c);
  }
  {
    // Duplicates within a token too (the op does not require distinct experts).
    DispatchCase c{"one expert, K=3", 2000, 4, 3, std::vector<int32_t>(6000, 0)};
    cases.push_back(c);
  }
  cases.push_back(random_case("large E", 700, 5000, 8, 5000));
  return cases;
}

TEST(GpuDispatch, PlanMatchesCpuExactly) {
  SKIP_WITHOUT_DEVICE();
  auto be = cpu();
  for (const auto& c : dispatch_cases()) {
    SCOPED_TRACE(c.name);
    const size_t pairs = static_cast<size_t>(c.N) * c.K;
    std::vector<int32_t> row_ref(pairs);
    std::vector<int64_t> counts_ref(c.E);
    be->dispatch_plan(row_ref.data(), counts_ref.data(), c.idx.data(), c.N, c.E, c.K);

    DeviceBuffer<int32_t> d_idx(c.idx), d_row(pairs);
    DeviceBuffer<int64_t> d_counts(std::vector<int64_t>(c.E, -7));  // overwritten
    const size_t ws_bytes = moe::kernels::dispatch_plan_workspace_bytes(c.N, c.E, c.K);
    DeviceBuffer<unsigned char> ws(ws_bytes);
    moe::kernels::dispatch_plan(d_row.get(), d_counts.get(), d_idx.get(), c.N, c.E, c.K,
                                ws.get(), ws_bytes, nullptr);
    MOE_CUDA_CHECK(cudaDeviceSynchronize());
    const auto row = d_row.download();
    EXPECT_EQ(d_counts.download(), counts_ref);
    EXPECT_EQ(row, row_ref);

    moe::kernels::dispatch_plan(d_row.get(), d_counts.get(), d_idx.get(), c.N, c.E, c.K,
                                ws.get(), ws_bytes, nullptr);
    MOE_CUDA_CHECK(cudaDeviceSynchronize());
    EXPECT_EQ(d_row.download(), row);
  }
}

TEST(GpuDispatch, PlanRejectsBadArguments) {
  SKIP_WITHOUT_DEVICE();
  DeviceBuffer<int32_t> idx(std::vector<int32_t>(8, 0)), row(8);
  DeviceBuffer<int64_t> counts(4);
  EXPECT_THROW(moe::kernels::dispatch_plan(row.get(), counts.get(), idx.get(), 8, 4, 1, nullptr,
                                           0, nullptr),
               moe::InternalError);  // no workspace
  EXPECT_THROW(moe::kernels::dispatch_plan(row.get(), counts.get(), idx.get(), 8, 0, 1, nullptr,
                                           0, nullptr),
               moe::InternalError);  // E = 0
}

// An expert index outside [0, E) (topk_route never makes one, whatever the
// scores) gets row -1, is not counted, and every row kernel skips that slot:
// no read or write out of bounds (memcheck runs this under gpu_sanitizer).
TEST(GpuDispatch, OutOfRangeIndexIsSkippedNotWrittenOutOfBounds) {
  SKIP_WITHOUT_DEVICE();
  const int N = 4, K = 2, E = 3, D = 3;
  const std::vector<int32_t> idx = {0, 1, 5, 2, -1, 0, 1, 2};
  DeviceBuffer<int32_t> d_idx(idx), d_row(idx.size());
  DeviceBuffer<int64_t> d_counts(E);
  const size_t ws_bytes = moe::kernels::dispatch_plan_workspace_bytes(N, E, K);
  DeviceBuffer<unsigned char> ws(ws_bytes);
  moe::kernels::dispatch_plan(d_row.get(), d_counts.get(), d_idx.get(), N, E, K, ws.get(),
                              ws_bytes, nullptr);
  // Valid pairs by expert, in (token, slot) order: e0 {0, 5}, e1 {1, 6}, e2 {3, 7}.
  const std::vector<int32_t> row = d_row.download();
  EXPECT_EQ(row, (std::vector<int32_t>{0, 2, -1, 4, -1, 1, 3, 5}));
  EXPECT_EQ(d_counts.download(), (std::vector<int64_t>{2, 2, 2}));
  const int rows = 6;  // exactly the valid pairs: a write to row -1 would land outside

  std::vector<float> x(N * D), yp(rows * D), gates(N * K);
  for (int i = 0; i < N * D; ++i) x[i] = float(i + 1);
  for (int i = 0; i < rows * D; ++i) yp[i] = float(100 + i);
  for (int i = 0; i < N * K; ++i) gates[i] = float(i + 1) / 8;
  DeviceBuffer<float> d_x(x), d_yp(yp), d_gates(gates);

  DeviceBuffer<float> d_xp(std::vector<float>(rows * D, -1.f));
  moe::kernels::permute_rows(d_xp.get(), d_x.get(), d_row.get(), N, K, D, nullptr);
  DeviceBuffer<float> d_dx(std::vector<float>(N * D, 0.f)), d_y(std::vector<float>(N * D, 0.f));
  moe::kernels::permute_rows_backward(d_dx.get(), d_yp.get(), d_row.get(), N, K, D, nullptr);
  moe::kernels::combine_forward(d_y.get(), d_yp.get(), d_gates.get(), d_row.get(), N, K, D,
                                nullptr);
  DeviceBuffer<float> d_dyp(std::vector<float>(rows * D, -1.f)),
      d_dg(std::vector<float>(N * K, -1.f));
  moe::kernels::combine_backward(d_dyp.get(), d_dg.get(), d_x.get(), d_yp.get(), d_gates.get(),
                                 d_row.get(), N, K, D, nullptr);
  MOE_CUDA_CHECK(cudaDeviceSynchronize());

  // Exact comparisons below although sums and products are involved: x and
  // yp are small integers and the gates multiples of 1/8, so every product
  // and sum is exact in fp32 and the order cannot matter.
  std::vector<float> xp_ref(rows * D), dx_ref(N * D, 0.f), y_ref(N * D, 0.f),
      dyp_ref(rows * D), dg_ref(N * K, 0.f);
  for (int slot = 0; slot < N * K; ++slot) {
    const int r = row[slot], t = slot / K;
    if (r < 0) continue;
    for (int d = 0; d < D; ++d) {
      xp_ref[r * D + d] = x[t * D + d];
      dx_ref[t * D + d] += yp[r * D + d];
      y_ref[t * D + d] += gates[slot] * yp[r * D + d];
      dyp_ref[r * D + d] = gates[slot] * x[t * D + d];
      dg_ref[slot] += x[t * D + d] * yp[r * D + d];
    }
  }
  EXPECT_EQ(d_xp.download(), xp_ref);
  EXPECT_EQ(d_dx.download(), dx_ref);
  EXPECT_EQ(d_y.download(), y_ref);
  EXPECT_EQ(d_dyp.download(), dyp_ref);
  EXPECT_EQ(d_dg.download(), dg_ref);  // 0 for the skipped slots
}

TEST(GpuDispatch, RowOpsMatchCpu) {
  SKIP_WITHOUT_DEVICE();
  auto be = cpu();
  std::mt19937_64 rng(5);
  const int Ds[] = {1, 37, 300};
  for (const auto& c : dispatch_cases()) {
    for (const int D : Ds) {
      SCOPED_TRACE(c.name + " D=" + std::to_string(D));
      const size_t pairs = static_cast<size_t>(c.N) * c.K;
      const size_t nD = static_cast<size_t>(c.N) * D, pD = pairs * D;
      std::vector<int32_t> row(pairs);
      std::vector<int64_t> counts(c.E);
      be->dispatch_plan(row.data(), counts.data(), c.idx.data(), c.N, c.E, c.K);
      DeviceBuffer<int32_t> d_row(row);

      const auto x = normal(nD, rng), xp_in = normal(pD, rng), gates = normal(pairs, rng);
      DeviceBuffer<float> d_x(x), d_xp_in(xp_in), d_gates(gates);

      // permute_rows: a copy, exact.
      std::vector<float> xp_ref(pD);
      be->permute_rows(xp_ref.data(), x.data(), row.data(), c.N, c.K, D);
      DeviceBuffer<float> d_xp(pD);
      moe::kernels::permute_rows(d_xp.get(), d_x.get(), d_row.get(), c.N, c.K, D, nullptr);
      MOE_CUDA_CHECK(cudaDeviceSynchronize());
      EXPECT_TRUE(same_bits(d_xp.download(), xp_ref));

      // permute_rows_backward: dx += sum_k dxp[row].
      const auto dx0 = normal(nD, rng);
      std::vector<float> dx_ref = dx0;
      be->permute_rows_backward(dx_ref.data(), xp_in.data(), row.data(), c.N, c.K, D);
      DeviceBuffer<float> d_dx(dx0);
      moe::kernels::permute_rows_backward(d_dx.get(), d_xp_in.get(), d_row.get(), c.N, c.K, D,
                                          nullptr);
      MOE_CUDA_CHECK(cudaDeviceSynchronize());
      const auto dx = d_dx.download();
      // dx0 plus <= K = 8 rows, perhaps in another order: <= K u of the terms'
      // sum even in the worst case (~5e-7 relative to them).
      EXPECT_LT(normwise_rel_err(dx, dx_ref), 1e-5);

      // combine_forward: y += sum_k g yp[row].
      const auto y0 = normal(nD, rng);
      std::vector<float> y_ref = y0;
      be->combine_forward(y_ref.data(), xp_in.data(), gates.data(), row.data(), c.N, c.K, D);
      DeviceBuffer<float> d_y(y0);
      moe::kernels::combine_forward(d_y.get(), d_xp_in.get(), d_gates.get(), d_row.get(), c.N,
                                    c.K, D, nullptr);
      MOE_CUDA_CHECK(cudaDeviceSynchronize());
      const auto y = d_y.download();
      // y0 plus <= 8 products (2K + 1 roundings, FMA contraction or not).
      EXPECT_LT(normwise_rel_err(y, y_ref), 1e-5);

      // combine_backward: dyp (one fp32 product of the same two inputs on both
      // sides, correctly rounded: the same bits) and dgates (dots of D <= 300
      // terms: fp64 on the CPU, an fp32 per-thread sum and shuffle tree on the
      // GPU, ~10 roundings deep: ~1e-6).
      std::vector<float> dyp_ref(pD), dg_ref(pairs);
      be->combine_backward(dyp_ref.data(), dg_ref.data(), x.data(), xp_in.data(), gates.data(),
                           row.data(), c.N, c.K, D);
      DeviceBuffer<float> d_dyp(std::vector<float>(pD, NAN)), d_dg(std::vector<float>(pairs, NAN));
      auto run_combine_backward = [&] {
        moe::kernels::combine_backward(d_dyp.get(), d_dg.get(), d_x.get(), d_xp_in.get(),
                                       d_gates.get(), d_row.get(), c.N, c.K, D, nullptr);
        MOE_CUDA_CHECK(cudaDeviceSynchronize());
      };
      run_combine_backward();
      const auto dyp = d_dyp.download(), dg = d_dg.download();
      EXPECT_TRUE(same_bits(dyp, dyp_ref));
      EXPECT_LT(normwise_rel_err(dg, dg_ref), 1e-5);

      // gather_rows with the plan as the index (a permutation), exact.
      std::vector<float> g_ref(pD);
      be->gather_rows(g_ref.data(), xp_in.data(), row.data(), static_cast<int64_t>(pairs), D);
      DeviceBuffer<float> d_g(pD);
      moe::kernels::gather_rows(d_g.get(), d_xp_in.get(), d_row.get(),
                                static_cast<int64_t>(pairs), D, nullptr);
      MOE_CUDA_CHECK(cudaDeviceSynchronize());
      EXPECT_TRUE(same_bits(d_g.download(), g_ref));

      // Second runs: same bits.
      d_dx.upload(dx0);
      moe::kernels::permute_rows_backward(d_dx.get(), d_xp_in.get(), d_row.get(), c.N, c.K, D,
                                          nullptr);
      d_y.upload(y0);
      moe::kernels::combine_forward(d_y.get(), d_xp_in.get(), d_gates.get(), d_row.get(), c.N,
                                    c.K, D, nullptr);
      run_combine_backward();
      EXPECT_TRUE(same_bits(d_dx.download(), dx));
      EXPECT_TRUE(same_bits(d_y.download(), y));
      EXPECT_TRUE(same_bits(d_dyp.download(), dyp));
      EXPECT_TRUE(same_bits(d_dg.download(), dg));
    }
  }
}


}  // namespace

#else  // !MOE_WITH_CUDA

TEST(GpuDispatch, Skipped) { GTEST_SKIP() << "built without CUDA"; }

#endif  // MOE_WITH_CUDA
