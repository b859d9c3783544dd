// GPU kernels (kernels/*.cu) against independent fp64 host references on
// random data. Every test skips cleanly when no CUDA device is visible, and the
// whole file reduces to one skipped test in a CPU-only build.
#include <gtest/gtest.h>

#ifdef MOE_WITH_CUDA

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <numeric>
#include <random>
#include <string>
#include <tuple>
#include <vector>

#include "backend/cuda/cuda_device.h"
#include "gpu_test_util.h"
#include "core/error.h"
#include "kernels.h"
#include "route_cases.h"

namespace {

using moe::test::DeviceBuffer;
using moe::test::normal;
using moe::test::uniform;
using moe::test::normwise_rel_err;
using moe::test::elementwise_rel_err;

// ---------------------------------------------------------------- RMSNorm --

constexpr double kEps = 1e-6;

struct Shape {
  int N, D;
};
// Odd sizes, D below / above / not a multiple of the block, and N large
// enough for several dw chunks (including a partial last chunk).
const Shape kNormShapes[] = {{1, 1}, {3, 7}, {64, 256}, {37, 1030}, {5000, 96}, {20011, 64}};
// No D = 1 here: there dx = r g eps / (x^2 + eps) is pure cancellation (about
// 1e-12 of its terms), which no fp32 kernel resolves and no model uses.
const Shape kNormBackwardShapes[] = {{1, 300}, {3, 7},      {64, 256},
                                     {37, 1030}, {5000, 96}, {20011, 64}};

// x with a random scale per row (1e-3 .. 1e3), so the statistics matter.
std::vector<float> scaled_rows(int N, int D, std::mt19937_64& rng) {
  std::vector<float> x = normal(static_cast<size_t>(N) * D, rng);
  std::uniform_real_distribution<double> log_scale(-3.0, 3.0);
  for (int n = 0; n < N; ++n) {
    const double s = std::pow(10.0, log_scale(rng));
    for (int j = 0; j < D; ++j) x[static_cast<size_t>(n) * D + j] *= static_cast<float>(s);
  }
  return x;
}

// fp64 reference: r = 1/sqrt(mean(x^2) + eps), y = x r w.
void rmsnorm_forward_ref(std::vector<double>& y, std::vector<double>& rstd,
                         const std::vector<float>& x, const std::vector<float>& w, int N, int D) {
  y.assign(static_cast<size_t>(N) * D, 0.0);
  rstd.assign(N, 0.0);
  for (int n = 0; n < N; ++n) {
    const float* xr = &x[static_cast<size_t>(n) * D];
    double ss = 0.0;
    for (int j = 0; j < D; ++j) ss += static_cast<double>(xr[j]) * xr[j];
    const double r = 1.0 / std::sqrt(ss / D + kEps);
    rstd[n] = r;
    for (int j = 0; j < D; ++j) y[static_cast<size_t>(n) * D + j] = xr[j] * r * w[j];
  }
}

TEST(GpuRmsNorm, ForwardMatchesFp64Reference) {
  SKIP_WITHOUT_DEVICE();
  std::mt19937_64 rng(1234);
  for (const Shape sh : kNormShapes) {
    SCOPED_TRACE("N=" + std::to_string(sh.N) + " D=" + std::to_string(sh.D));
    const auto x = scaled_rows(sh.N, sh.D, rng);
    const auto w = normal(sh.D, rng, 1.0, 0.2);
    std::vector<double> y_ref, rstd_ref;
    rmsnorm_forward_ref(y_ref, rstd_ref, x, w, sh.N, sh.D);

    DeviceBuffer<float> dx(x), dw(w), dy(x.size()), drstd(sh.N);
    moe::kernels::rmsnorm_forward(dy.get(), drstd.get(), dx.get(), dw.get(), sh.N, sh.D,
                                  static_cast<float>(kEps), nullptr);
    MOE_CUDA_CHECK(cudaDeviceSynchronize());
    // Against fp64, elementwise, worst case: sum(x^2) has positive terms, a
    // thread sums <= ceil(1030 / 256) = 5 of them, then an 8-level tree: <=
    // 13 u relative; r = 1/sqrtf(...) adds 3 roundings and halves the rest,
    // y = x r w 2 more: < 1e-6 in all, 1e-5 holds for any order.
    EXPECT_LT(elementwise_rel_err(drstd.download(), rstd_ref), 1e-5);
    EXPECT_LT(elementwise_rel_err(dy.download(), y_ref), 1e-5);
  }
}

TEST(GpuRmsNorm, ResidualFusedForwardMatchesFp64Reference) {
  SKIP_WITHOUT_DEVICE();
  std::mt19937_64 rng(77);
  for (const Shape sh : kNormShapes) {
    SCOPED_TRACE("N=" + std::to_string(sh.N) + " D=" + std::to_string(sh.D));
    const auto resid = scaled_rows(sh.N, sh.D, rng), delta = scaled_rows(sh.N, sh.D, rng);
    const auto w = normal(sh.D, rng, 1.0, 0.2);
    std::vector<float> sum(resid.size());
    for (size_t i = 0; i < sum.size(); ++i) sum[i] = resid[i] + delta[i];  // fp32, like the kernel
    std::vector<double> y_ref, rstd_ref;
    rmsnorm_forward_ref(y_ref, rstd_ref, sum, w, sh.N, sh.D);

    DeviceBuffer<float> dr(resid), dd(delta), dw(w), dsum(sum.size()), dy(sum.size()),
        drstd(sh.N);
    moe::kernels::residual_rmsnorm_forward(dsum.get(), dy.get(), drstd.get(), dr.get(), dd.get(),
                                           dw.get(), sh.N, sh.D, static_cast<float>(kEps),
                                           nullptr);
    MOE_CUDA_CHECK(cudaDeviceSynchronize());
    EXPECT_EQ(dsum.download(), sum);  // the add is one fp32 rounding on both sides
    EXPECT_LT(elementwise_rel_err(drstd.download(), rstd_ref), 1e-5);
    EXPECT_LT(elementwise_rel_err(dy.download(), y_ref), 1e-5);
  }
}

TEST(GpuRmsNorm, BackwardMatchesFp64ReferenceAndAccumulates) {
  SKIP_WITHOUT_DEVICE();
  std::mt19937_64 rng(99);
  for (const Shape sh : kNormBackwardShapes) {
    SCOPED_TRACE("N=" + std::to_string(sh.N) + " D=" + std::to_string(sh.D));
    const int N = sh.N, D = sh.D;
    const size_t ND = static_cast<size_t>(N) * D;
    const auto x = scaled_rows(N, D, rng);
    const auto w = normal(D, rng, 1.0, 0.2);
    const auto dy = normal(ND, rng);
    std::vector<double> y_ref, rstd_ref;
    rmsnorm_forward_ref(y_ref, rstd_ref, x, w, N, D);
    // The kernel consumes the saved rstd; give it the correctly rounded one so
    // this test measures the backward alone.
    std::vector<float> rstd(N);
    for (int n = 0; n < N; ++n) rstd[n] = static_cast<float>(rstd_ref[n]);

    // fp64 reference gradients (from the fp32 inputs the kernel sees).
    std::vector<double> gdx(ND), gdw(D, 0.0);
    for (int n = 0; n < N; ++n) {
      const size_t row = static_cast<size_t>(n) * D;
      const double r = rstd[n];
      double gx = 0.0;
      for (int j = 0; j < D; ++j) gx += static_cast<double>(dy[row + j]) * w[j] * x[row + j];
      const double c = gx / D * r * r;
      for (int j = 0; j < D; ++j) {
        gdx[row + j] = r * (static_cast<double>(dy[row + j]) * w[j] - x[row + j] * c);
        gdw[j] += static_cast<double>(dy[row + j]) * x[row + j] * r;
      }
    }
    // dx and dw accumulate: start them at random values of the gradients' size.
    double gdx_max = 0.0, gdw_max = 0.0;
    for (double v : gdx) gdx_max = std::max(gdx_max, std::abs(v));
    for (double v : gdw) gdw_max = std::max(gdw_max, std::abs(v));
    const auto dx0 = normal(ND, rng, 0.0, gdx_max / 3);
    const auto dw0 = normal(D, rng, 0.0, gdw_max / 3);
    std::vector<double> dx_ref(ND), dw_ref(D);
    for (size_t i = 0; i < ND; ++i) dx_ref[i] = dx0[i] + gdx[i];
    for (int j = 0; j < D; ++j) dw_ref[j] = dw0[j] + gdw[j];

    DeviceBuffer<float> d_x(x), d_w(w), d_dy(dy), d_rstd(rstd);
    DeviceBuffer<char> ws(moe::kernels::rmsnorm_backward_workspace_bytes(N, D));
    const auto run = [&](std::vector<float>& dx_out, std::vector<float>& dw_out) {
      DeviceBuffer<float> d_dx(dx0), d_dw(dw0);
      moe::kernels::rmsnorm_backward(d_dx.get(), static_cast<float*>(nullptr), d_dw.get(),
                                     d_dy.get(), d_x.get(), d_w.get(),
                                     d_rstd.get(), N, D, ws.get(),
                                     moe::kernels::rmsnorm_backward_workspace_bytes(N, D),
                                     nullptr);
      MOE_CUDA_CHECK(cudaDeviceSynchronize());
      dx_out = d_dx.download();
      dw_out = d_dw.download();
    };
    std::vector<float> dx1, dw1, dx2, dw2;
    run(dx1, dw1);
    // Against fp64, normwise (sums of both signs): dx's row sum over D <= 1030
    // terms is a short per-thread sum and a tree (errors ~ sqrt(13) u of the
    // terms' size); dw sums N <= 20011 rows as <= 256 chunks of >= 32 rows in
    // row order, then the chunks in order (sqrt(79 + 254) u ~ 1e-6 typical).
    EXPECT_LT(normwise_rel_err(dx1, dx_ref), 1e-5);
    EXPECT_LT(normwise_rel_err(dw1, dw_ref), 1e-5);
    // No float atomics: a second run gives the same bits.
    run(dx2, dw2);
    EXPECT_EQ(dx1, dx2);
    EXPECT_EQ(dw1, dw2);
  }
}

TEST(GpuRmsNorm, EmptyBatchIsANoOpAndBadArgumentsThrow) {
  SKIP_WITHOUT_DEVICE();
  EXPECT_EQ(moe::kernels::rmsnorm_backward_workspace_bytes(0, 64), 0u);
  EXPECT_NO_THROW(moe::kernels::rmsnorm_forward<float>(nullptr, nullptr, nullptr, nullptr, 0, 64,
                                                       1e-6f, nullptr));
  EXPECT_NO_THROW(moe::kernels::rmsnorm_backward<float>(nullptr, nullptr, nullptr, nullptr,
                                                        nullptr, nullptr, nullptr, 0, 64, nullptr,
                                                        0, nullptr));
  DeviceBuffer<float> buf(64);
  float* p = buf.get();
  EXPECT_THROW(moe::kernels::rmsnorm_backward(p, p, p, p, p, p, p, 1, 64, p, 4, nullptr),
               moe::InternalError);  // workspace too small
  EXPECT_THROW(moe::kernels::rmsnorm_forward(p, p, p, p, 1, 0, 1e-6f, nullptr),
               moe::InternalError);
}

// ----------------------------------------------------------------- Router --

struct Route {
  std::vector<int32_t> idx;
  std::vector<float> gates;
};

struct RouteCase {
  int E, K;
  bool multiplicative, normalize;
  double route_scale;
  moe::RouteSpec spec() const {
    return {E, K, multiplicative ? moe::BiasMode::Multiplicative : moe::BiasMode::Additive,
            normalize, route_scale};
  }
};

// Host reference. The key is formed in fp32, as the numerical contract says
// (router and bias in fp32), so that exact ties are the same ties on host and
// device; the order (key descending, index ascending) and the gates are
// computed independently, the gates in fp64.
std::vector<double> topk_ref(std::vector<int32_t>& idx, const std::vector<float>& s,
                             const std::vector<float>& b, int N, const RouteCase& c) {
  idx.assign(static_cast<size_t>(N) * c.K, -1);
  std::vector<double> gates(static_cast<size_t>(N) * c.K);
  std::vector<int> order(c.E);
  std::vector<float> key(c.E);
  for (int t = 0; t < N; ++t) {
    const float* st = &s[static_cast<size_t>(t) * c.E];
    for (int e = 0; e < c.E; ++e) key[e] = c.multiplicative ? st[e] * b[e] : st[e] + b[e];
    std::iota(order.begin(), order.end(), 0);
    std::stable_sort(order.begin(), order.end(), [&](int a, int z) { return key[a] > key[z]; });
    double sum = 0.0;
    for (int k = 0; k < c.K; ++k) sum += st[order[k]];
    for (int k = 0; k < c.K; ++k) {
      const size_t o = static_cast<size_t>(t) * c.K + k;
      idx[o] = order[k];
      gates[o] = (c.normalize ? st[order[k]] / sum : st[order[k]]) * c.route_scale;
    }
  }
  return gates;
}

Route run_topk(const std::vector<float>& s, const std::vector<float>& b, int N,
               const RouteCase& c) {
  DeviceBuffer<float> d_s(s), d_b(b), d_g(static_cast<size_t>(N) * c.K);
  DeviceBuffer<int32_t> d_i(static_cast<size_t>(N) * c.K);
  moe::kernels::topk_route(d_i.get(), d_g.get(), d_s.get(), d_b.get(), N, c.spec(), nullptr);
  MOE_CUDA_CHECK(cudaDeviceSynchronize());
  return {d_i.download(), d_g.download()};
}

void expect_matches_reference(const std::vector<float>& s, const std::vector<float>& b, int N,
                              const RouteCase& c) {
  std::vector<int32_t> idx_ref;
  const auto gates_ref = topk_ref(idx_ref, s, b, N, c);
  const Route got = run_topk(s, b, N, c);
  ASSERT_EQ(got.idx, idx_ref);  // exact: the same fp32 keys (one add or multiply each)
  if (!c.normalize && c.route_scale == 1.0) {
    // gates are the selected scores themselves: bit-exact.
    for (size_t i = 0; i < gates_ref.size(); ++i)
      ASSERT_EQ(got.gates[i], static_cast<float>(gates_ref[i])) << "slot " << i;
  } else {
    // s / sum(picked s) * scale: a sum of K positive terms (<= (K-1) u), a
    // division and a multiplication: <= (K+1) u = 5.4e-7 for K <= 8, the
    // largest K any normalised case here uses (route_scale is exact in fp32).
    EXPECT_LT(elementwise_rel_err(got.gates, gates_ref), 1e-6);
  }
}

std::string describe(const RouteCase& c) {
  return "E=" + std::to_string(c.E) + " K=" + std::to_string(c.K) +
         (c.multiplicative ? " mult" : " add") + (c.normalize ? " norm" : "") +
         " scale=" + std::to_string(c.route_scale);
}

std::vector<float> sigmoid_scores(size_t n, std::mt19937_64& rng) {
  auto v = normal(n, rng, 0.0, 2.0);
  for (auto& x : v) x = static_cast<float>(1.0 / (1.0 + std::exp(-static_cast<double>(x))));
  return v;
}

TEST(GpuRouter, RandomScoresAndBiasMatchReference) {
  SKIP_WITHOUT_DEVICE();
  std::mt19937_64 rng(7);
  const int N = 1003;
  const RouteCase cases[] = {
      {8, 1, false, false, 1.0},   {8, 2, false, false, 1.0},  {64, 6, false, false, 1.0},
      {64, 8, true, false, 1.0},   {100, 8, false, true, 1.0}, {256, 8, false, true, 2.5},
      {160, 6, true, true, 16.0},  {16, 16, false, false, 1.0}, {40, 32, true, false, 1.0},
      {33, 4, false, false, 0.75}, {1, 1, false, true, 1.0}};
  for (const RouteCase& c : cases) {
    SCOPED_TRACE(describe(c));
    const auto s = sigmoid_scores(static_cast<size_t>(N) * c.E, rng);
    const auto b = c.multiplicative ? uniform(c.E, rng, 0.5, 1.5) : uniform(c.E, rng, -0.1, 0.1);
    expect_matches_reference(s, b, N, c);
  }
}

TEST(GpuRouter, ExactTiesGoToTheLowerIndex) {
  SKIP_WITHOUT_DEVICE();
  std::mt19937_64 rng(11);
  // Scores and biases on a coarse dyadic grid: s+b and s*b are exact in fp32,
  // so most tokens have many exactly tied keys.
  const int N = 2000;
  for (const RouteCase c : {RouteCase{8, 3, false, false, 1.0}, RouteCase{64, 8, false, true, 1.0},
                            RouteCase{64, 8, true, false, 1.0}, RouteCase{37, 5, true, true, 1.0},
                            RouteCase{70, 32, false, false, 1.0}}) {
    SCOPED_TRACE(describe(c));
    std::uniform_int_distribution<int> level(1, 4);
    std::vector<float> s(static_cast<size_t>(N) * c.E), b(c.E);
    for (auto& x : s) x = level(rng) / 8.0f;                        // {1,2,3,4}/8
    for (auto& x : b) x = c.multiplicative ? level(rng) / 2.0f      // {1,2,3,4}/2
                                           : (level(rng) - 2) / 8.0f;  // {-1..2}/8
    expect_matches_reference(s, b, N, c);
  }
}

TEST(GpuRouter, HandWrittenCases) {
  SKIP_WITHOUT_DEVICE();
  const auto route = [](std::vector<float> s, std::vector<float> b, int K, bool mult) {
    return run_topk(s, b, 1, RouteCase{static_cast<int>(b.size()), K, mult, false, 1.0});
  };
  // All equal: lowest indices, in index order.
  Route r = route({0.5f, 0.5f, 0.5f, 0.5f}, {0, 0, 0, 0}, 2, false);
  EXPECT_EQ(r.idx, (std::vector<int32_t>{0, 1}));
  // A tie between experts 1 and 2 behind a larger expert 3.
  r = route({0.1f, 0.9f, 0.9f, 0.95f}, {0, 0, 0, 0}, 3, false);
  EXPECT_EQ(r.idx, (std::vector<int32_t>{3, 1, 2}));
  // Keys tie (0.5) with different scores: index 0 first; gates are the scores.
  r = route({0.5f, 0.25f, 0.125f}, {0.0f, 0.25f, 0.0f}, 2, false);
  EXPECT_EQ(r.idx, (std::vector<int32_t>{0, 1}));
  EXPECT_EQ(r.gates, (std::vector<float>{0.5f, 0.25f}));
  // The bias decides the selection but never the gates (additive).
  r = route({0.9f, 0.8f, 0.1f, 0.2f}, {-1.0f, 0.0f, 0.0f, 1.0f}, 2, false);
  EXPECT_EQ(r.idx, (std::vector<int32_t>{3, 1}));
  EXPECT_EQ(r.gates, (std::vector<float>{0.2f, 0.8f}));
  // ... and multiplicative.
  r = route({0.9f, 0.8f, 0.1f, 0.2f}, {0.1f, 1.0f, 1.0f, 5.0f}, 2, true);
  EXPECT_EQ(r.idx, (std::vector<int32_t>{3, 1}));
  EXPECT_EQ(r.gates, (std::vector<float>{0.2f, 0.8f}));
  // Normalised over the two picked (0.75 + 0.5) and scaled by 2.
  const Route n = run_topk({0.25f, 0.75f, 0.5f}, {0, 0, 0}, 1, RouteCase{3, 2, false, true, 2.0});
  EXPECT_EQ(n.idx, (std::vector<int32_t>{1, 2}));
  EXPECT_FLOAT_EQ(n.gates[0], 0.75f / 1.25f * 2.0f);
  EXPECT_FLOAT_EQ(n.gates[1], 0.5f / 1.25f * 2.0f);
}

// A null bias selects on the scores alone, whatever the bias mode says (the
// Backend contract; the CPU backend does the same). The launcher used to
// reject it as a null pointer.
TEST(GpuRouter, NullBiasSelectsOnScoresAlone) {
  SKIP_WITHOUT_DEVICE();
  std::mt19937_64 rng(13);
  const int N = 777;
  for (const RouteCase c :
       {RouteCase{64, 6, false, false, 1.0}, RouteCase{40, 8, true, true, 2.0}}) {
    SCOPED_TRACE(describe(c));
    const auto s = sigmoid_scores(static_cast<size_t>(N) * c.E, rng);
    // Reference: an additive zero bias (s + 0 == s exactly).
    RouteCase plain = c;
    plain.multiplicative = false;
    std::vector<int32_t> idx_ref;
    const auto gates_ref = topk_ref(idx_ref, s, std::vector<float>(c.E, 0.f), N, plain);
    DeviceBuffer<float> d_s(s), d_g(static_cast<size_t>(N) * c.K);
    DeviceBuffer<int32_t> d_i(static_cast<size_t>(N) * c.K);
    moe::kernels::topk_route(d_i.get(), d_g.get(), d_s.get(), nullptr, N, c.spec(), nullptr);
    MOE_CUDA_CHECK(cudaDeviceSynchronize());
    EXPECT_EQ(d_i.download(), idx_ref);
    EXPECT_LT(elementwise_rel_err(d_g.download(), gates_ref), 1e-6);
  }
}

// NaN and infinite scores or keys (a diverged step): the kernel used to keep
// its INT_MAX sentinel for a NaN key and dispatch then wrote row -1. Now it
// picks exactly what the CPU backend picks (the order of topk_order.h), so
// every index is a valid, distinct expert; gates carry the NaN when picked.
void expect_gpu_matches_cpu(const std::vector<float>& s, const std::vector<float>& bias, int N,
                            const RouteCase& c) {
  const size_t slots = static_cast<size_t>(N) * c.K;
  std::vector<int32_t> idx_cpu(slots, -7);
  std::vector<float> g_cpu(slots);
  moe::test::cpu()->topk_route(
      idx_cpu.data(), g_cpu.data(), s.data(), bias.empty() ? nullptr : bias.data(), N, c.spec());
  DeviceBuffer<float> d_s(s), d_b(bias), d_g(slots);
  DeviceBuffer<int32_t> d_i(std::vector<int32_t>(slots, -7));
  moe::kernels::topk_route(d_i.get(), d_g.get(), d_s.get(), bias.empty() ? nullptr : d_b.get(),
                           N, c.spec(), nullptr);
  MOE_CUDA_CHECK(cudaDeviceSynchronize());
  const auto idx = d_i.download();
  const auto g = d_g.download();
  // Exact: the same fp32 scores and bias on both sides, one IEEE add or
  // multiply per key, and the same total order (topk_order.h).
  ASSERT_EQ(idx, idx_cpu);
  EXPECT_EQ(idx, moe::test::reference_topk(s, bias, N, c.E, c.K, c.multiplicative));
  for (int32_t e : idx) ASSERT_TRUE(e >= 0 && e < c.E) << e;
  for (size_t i = 0; i < slots; ++i) {
    if (std::isnan(g_cpu[i])) {
      EXPECT_TRUE(std::isnan(g[i])) << "slot " << i;
    } else if (!c.normalize || std::isinf(g_cpu[i])) {
      EXPECT_EQ(g[i], g_cpu[i]) << "slot " << i;
    } else {
      // Normalised gates: the GPU's in fp32 within (K+1) u of the exact value
      // (K <= 8: 5.4e-7), the CPU's in double rounded once (u/2): <= 6e-7 |g|
      // apart in the worst case, inside 1e-6 max(1, |g|).
      EXPECT_NEAR(g[i], g_cpu[i], 1e-6 * std::max(1.0f, std::fabs(g_cpu[i]))) << "slot " << i;
    }
  }
}

TEST(GpuRouter, NonFiniteHandCasesMatchTheCpu) {
  SKIP_WITHOUT_DEVICE();
  for (const auto& hc : moe::test::nonfinite_route_cases()) {
    for (bool normalize : {false, true}) {
      SCOPED_TRACE(std::string(hc.name) + (normalize ? " norm" : ""));
      const RouteCase c{static_cast<int>(hc.scores.size()), hc.K, hc.multiplicative, normalize,
                        1.0};
      expect_gpu_matches_cpu(hc.scores, hc.bias, 1, c);
      const Route r = run_topk(hc.scores,
                               hc.bias.empty() ? std::vector<float>(hc.scores.size(), 0.f)
                                               : hc.bias,
                               1, c);
      EXPECT_EQ(r.idx, hc.want);
    }
  }
}

TEST(GpuRouter, NonFiniteRandomScoresMatchTheCpu) {
  SKIP_WITHOUT_DEVICE();
  std::mt19937_64 rng(17);
  const int N = 1001;
  for (const RouteCase c : {RouteCase{8, 2, false, false, 1.0}, RouteCase{64, 6, false, true, 1.0},
                            RouteCase{70, 8, true, false, 1.0}, RouteCase{40, 32, false, false, 1.0},
                            RouteCase{100, 8, true, true, 2.5}}) {
    SCOPED_TRACE(describe(c));
    const auto s = moe::test::nonfinite_scores(N, c.E, 100 + c.E);
    const auto b = c.multiplicative ? uniform(c.E, rng, 0.5, 1.5) : uniform(c.E, rng, -0.1, 0.1);
    expect_gpu_matches_cpu(s, b, N, c);
    expect_gpu_matches_cpu(s, {}, N, c);  // null bias
  }
}

TEST(GpuRouter, BadSizesThrow) {
  SKIP_WITHOUT_DEVICE();
  DeviceBuffer<float> f(64);
  DeviceBuffer<int32_t> i(64);
  EXPECT_THROW(moe::kernels::topk_route(i.get(), f.get(), f.get(), f.get(), 1,
                                        moe::RouteSpec{4, 5}, nullptr),
               moe::InternalError);  // K > E
  EXPECT_THROW(moe::kernels::topk_route(i.get(), f.get(), f.get(), f.get(), 1,
                                        moe::RouteSpec{64, 33}, nullptr),
               moe::InternalError);  // K > 32
  EXPECT_NO_THROW(moe::kernels::topk_route(nullptr, nullptr, nullptr, nullptr, 0,
                                           moe::RouteSpec{8, 2}, nullptr));
}

}  // namespace

#else  // !MOE_WITH_CUDA

TEST(GpuKernels, Skipped) { GTEST_SKIP() << "built without CUDA"; }

#endif  // MOE_WITH_CUDA
