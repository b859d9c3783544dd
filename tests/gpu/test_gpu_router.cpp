// GPU router kernels (kernels/router.cu) on random data: top-K selection
// against an independent fp64 host reference (ties, hand-written cases) and
// the CPU backend (NaN and infinite scores), gate-score forward/backward,
// top-K gate backward and the auxiliary balance loss against the CPU backend,
// plus a determinism check (a second run from the same inputs gives the same
// bits). Every test skips cleanly when no CUDA device is visible, and the
// whole file reduces to one skipped test in a CPU-only build.
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
#include <tuple>
#include <vector>

#include "backend/backend.h"
#include "backend/cuda/cuda_device.h"
#include "support/gpu_test_util.h"
#include "core/error.h"
#include "router.h"
#include "support/route_cases.h"

namespace {

using moe::test::DeviceBuffer;
using moe::test::normal;
using moe::test::uniform;
using moe::test::cpu;
using moe::test::normwise_rel_err;
using moe::test::same_bits;
using moe::test::elementwise_rel_err;

// ----------------------------------------------------------------- Router --

struct Route {
  std::vector<int32_t> idx;
  std::vector<float> gates;
};

struct RouteCase {
  int E, K;
  bool multiplicative, normalize;
  double route_scale;
  int n_group = 1, topk_group = 1;  // group-limited routing (1, 1: off)
  moe::RouteSpec spec() const {
    moe::RouteSpec s{E, K, multiplicative ? moe::BiasMode::Multiplicative : moe::BiasMode::Additive,
                     normalize, route_scale};
    s.n_group = n_group;
    s.topk_group = topk_group;
    return s;
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
         " scale=" + std::to_string(c.route_scale) + " groups " + std::to_string(c.topk_group) +
         "/" + std::to_string(c.n_group);
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
  EXPECT_EQ(idx, moe::test::reference_group_topk(s, bias, N, c.E, c.K, c.multiplicative,
                                                 c.n_group, c.topk_group));
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

// Group-limited routing (n_group / topk_group): the hand-worked cases of
// route_cases.h, then many adversarial tokens (NaN, +-inf, ties, all-NaN;
// sigmoid scores under a negative bias) over 1 .. 32 groups: the kernel picks
// exactly what the CPU backend and the independent reference pick.
TEST(GpuRouter, GroupLimitedMatchesTheCpu) {
  SKIP_WITHOUT_DEVICE();
  for (const auto& hc : moe::test::group_route_cases()) {
    for (bool normalize : {false, true}) {
      SCOPED_TRACE(std::string(hc.name) + (normalize ? " norm" : ""));
      const RouteCase c{static_cast<int>(hc.scores.size()), hc.K, hc.multiplicative, normalize,
                        1.0, hc.n_group, hc.topk_group};
      expect_gpu_matches_cpu(hc.scores, hc.bias, 1, c);
      DeviceBuffer<float> d_s(hc.scores), d_b(hc.bias), d_g(hc.K);
      DeviceBuffer<int32_t> d_i(hc.K);
      moe::kernels::topk_route(d_i.get(), d_g.get(), d_s.get(),
                               hc.bias.empty() ? nullptr : d_b.get(), 1, c.spec(), nullptr);
      MOE_CUDA_CHECK(cudaDeviceSynchronize());
      EXPECT_EQ(d_i.download(), hc.want);
    }
  }
  std::mt19937_64 rng(29);
  const int N = 517;
  for (const RouteCase c :
       {RouteCase{8, 2, false, false, 1.0, 4, 2}, RouteCase{64, 6, false, true, 1.0, 8, 3},
        RouteCase{70, 8, true, false, 1.0, 7, 2}, RouteCase{40, 10, false, false, 1.0, 4, 1},
        RouteCase{32, 4, false, false, 1.0, 32, 5}, RouteCase{96, 8, true, true, 2.5, 32, 4},
        RouteCase{256, 8, false, true, 2.5, 8, 4}, RouteCase{64, 6, false, false, 1.0, 8, 8}}) {
    SCOPED_TRACE(describe(c));
    const auto s = moe::test::nonfinite_scores(N, c.E, 300 + c.E + c.n_group);
    const auto b = c.multiplicative ? uniform(c.E, rng, 0.5, 1.5) : uniform(c.E, rng, -1.0, 0.05);
    expect_gpu_matches_cpu(s, b, N, c);
    expect_gpu_matches_cpu(s, {}, N, c);  // null bias
    expect_gpu_matches_cpu(sigmoid_scores(static_cast<size_t>(N) * c.E, rng), b, N, c);
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
  for (const auto& [E, G, TG, K] : {std::tuple{64, 33, 1, 1}, std::tuple{66, 33, 1, 1},
                                    std::tuple{12, 5, 1, 1}, std::tuple{12, 4, 5, 1},
                                    std::tuple{12, 4, 1, 4}, std::tuple{12, 0, 1, 1}}) {
    moe::RouteSpec spec{E, K};
    spec.n_group = G;
    spec.topk_group = TG;
    EXPECT_THROW(moe::kernels::topk_route(i.get(), f.get(), f.get(), f.get(), 1, spec, nullptr),
                 moe::InternalError)
        << E << " " << G << " " << TG << " " << K;
  }
}

namespace kn = moe::kernels;

// See gpu_test_util.h. Here every op is a few roundings per element: the
// scores are expf (2 ulp on the GPU, < 1 on the CPU) with softmax's
// normaliser and backward dot in double on both sides; the top-K and
// aux-loss gradients are fp64 on both sides, rounded once and added to ds0;
// the aux loss is a double sum in both (~1e-15 apart; integer counts,
// exact). So ~3e-7 expected, and 1e-5 is loose.
constexpr double kTol = 1e-5;

// Per token, K distinct experts in [0,E) in random order.
std::vector<int32_t> random_picks(int N, int E, int K, std::mt19937_64& rng) {
  std::vector<int32_t> idx(static_cast<size_t>(N) * K), perm(E);
  for (int n = 0; n < N; ++n) {
    std::iota(perm.begin(), perm.end(), 0);
    std::shuffle(perm.begin(), perm.end(), rng);
    std::copy(perm.begin(), perm.begin() + K, idx.begin() + static_cast<size_t>(n) * K);
  }
  return idx;
}

struct Shape {
  int N, E;
};
constexpr Shape kShapes[] = {{1, 1}, {7, 8}, {33, 64}, {257, 160}, {1000, 37}};

// --------------------------------------------------------- gate scores --

TEST(GpuRouterGrad, ScoresForwardMatchesCpu) {
  SKIP_WITHOUT_DEVICE();
  std::mt19937_64 rng(11);
  for (bool softmax : {false, true}) {
    const auto fn = softmax ? moe::GateFn::Softmax : moe::GateFn::Sigmoid;
    for (const auto [N, E] : kShapes) {
      const auto logits = normal(static_cast<size_t>(N) * E, rng, 0.0, 3.0);
      std::vector<float> ref(logits.size());
      cpu()->router_scores_forward(ref.data(), logits.data(), N, E, fn);
      DeviceBuffer<float> dl(logits), ds(logits.size());
      kn::router_scores_forward(ds.get(), dl.get(), N, E, fn, nullptr);
      const auto got = ds.download();
      EXPECT_LT(normwise_rel_err(got, ref), kTol) << "softmax=" << softmax << " N=" << N
                                                  << " E=" << E;
      kn::router_scores_forward(ds.get(), dl.get(), N, E, fn, nullptr);
      EXPECT_TRUE(same_bits(ds.download(), got)) << "softmax=" << softmax << " N=" << N;
    }
  }
}

TEST(GpuRouterGrad, ScoresBackwardMatchesCpu) {
  SKIP_WITHOUT_DEVICE();
  std::mt19937_64 rng(12);
  for (bool softmax : {false, true}) {
    const auto fn = softmax ? moe::GateFn::Softmax : moe::GateFn::Sigmoid;
    for (const auto [N, E] : kShapes) {
      const size_t n = static_cast<size_t>(N) * E;
      const auto logits = normal(n, rng, 0.0, 2.0), dscores = normal(n, rng);
      std::vector<float> scores(n), ref(n);
      cpu()->router_scores_forward(scores.data(), logits.data(), N, E, fn);
      cpu()->router_scores_backward(ref.data(), dscores.data(), scores.data(), N, E, fn);
      DeviceBuffer<float> dds(dscores), dsc(scores), ddl(n);
      kn::router_scores_backward(ddl.get(), dds.get(), dsc.get(), N, E, fn, nullptr);
      const auto got = ddl.download();
      EXPECT_LT(normwise_rel_err(got, ref), kTol) << "softmax=" << softmax << " N=" << N
                                                  << " E=" << E;
      kn::router_scores_backward(ddl.get(), dds.get(), dsc.get(), N, E, fn, nullptr);
      EXPECT_TRUE(same_bits(ddl.download(), got)) << "softmax=" << softmax << " N=" << N;
    }
  }
}

// ---------------------------------------------------- top-K backward --

TEST(GpuRouterGrad, TopkRouteBackwardMatchesCpu) {
  SKIP_WITHOUT_DEVICE();
  std::mt19937_64 rng(13);
  struct Case {
    int N, E, K;
  };
  for (bool normalize : {false, true}) {
    for (double scale : {1.0, 2.5}) {
      for (const Case c : {Case{1, 1, 1}, Case{9, 8, 2}, Case{300, 64, 6}, Case{1000, 160, 8}}) {
        const size_t ne = static_cast<size_t>(c.N) * c.E, nk = static_cast<size_t>(c.N) * c.K;
        const auto scores = uniform(ne, rng, 0.05, 1.0);
        const auto dgates = normal(nk, rng);
        const auto idx = random_picks(c.N, c.E, c.K, rng);
        const auto ds0 = normal(ne, rng);
        moe::RouteSpec spec;
        spec.E = c.E;
        spec.K = c.K;
        spec.normalize = normalize;
        spec.route_scale = scale;
        auto ref = ds0;
        cpu()->topk_route_backward(ref.data(), dgates.data(), scores.data(), idx.data(), c.N,
                                   spec);
        DeviceBuffer<float> dds(ds0), ddg(dgates), dsc(scores);
        DeviceBuffer<int32_t> didx(idx);
        kn::topk_route_backward(dds.get(), ddg.get(), dsc.get(), didx.get(), c.N, spec, nullptr);
        const auto got = dds.download();
        EXPECT_LT(normwise_rel_err(got, ref), kTol)
            << "normalize=" << normalize << " N=" << c.N << " E=" << c.E << " K=" << c.K;
        dds.upload(ds0);
        kn::topk_route_backward(dds.get(), ddg.get(), dsc.get(), didx.get(), c.N, spec, nullptr);
        EXPECT_TRUE(same_bits(dds.download(), got)) << "normalize=" << normalize << " N=" << c.N;
      }
    }
  }
}

// --------------------------------------------------------- aux loss --

TEST(GpuRouterGrad, AuxLossMatchesCpu) {
  SKIP_WITHOUT_DEVICE();
  std::mt19937_64 rng(14);
  struct Case {
    int groups, L, E, K;
  };
  // normalize: DeepSeek-V3's sequence-wise loss (affinities normalised per
  // token). Its S_t and dot are summed per token in the CPU's order, but a
  // GPU may contract the dot's multiply-adds: compared within kTol, not bits.
  for (const bool normalize : {false, true}) {
    for (const Case c : {Case{1, 1, 1, 1}, Case{1, 5, 8, 2}, Case{3, 100, 64, 6},
                         Case{4, 700, 300, 8}, Case{16, 64, 16, 1}}) {
      const int N = c.groups * c.L;
      const size_t ne = static_cast<size_t>(N) * c.E;
      const auto scores = uniform(ne, rng, 0.0, 1.0);
      const auto idx = random_picks(N, c.E, c.K, rng);
      const auto ds0 = normal(ne, rng);
      const moe::AuxLossArgs args{c.groups, c.L, c.E, c.K, 0.01, 0.5, normalize};
      auto ref = ds0;
      const double ref_loss =
          cpu()->aux_loss_forward_backward(ref.data(), scores.data(), idx.data(), args);
      const double ref_loss_only =
          cpu()->aux_loss_forward_backward(nullptr, scores.data(), idx.data(), args);

      DeviceBuffer<float> dds(ds0), dsc(scores);
      DeviceBuffer<int32_t> didx(idx);
      const double loss =
          kn::aux_loss_forward_backward(dds.get(), dsc.get(), didx.get(), args, nullptr);
      const auto got = dds.download();
      EXPECT_LT(std::abs(loss - ref_loss), kTol * std::abs(ref_loss))
          << "normalize=" << normalize << " groups=" << c.groups << " L=" << c.L << " E=" << c.E;
      EXPECT_LT(normwise_rel_err(got, ref), kTol)
          << "normalize=" << normalize << " groups=" << c.groups << " L=" << c.L;

      const double loss_only =
          kn::aux_loss_forward_backward(nullptr, dsc.get(), didx.get(), args, nullptr);
      EXPECT_LT(std::abs(loss_only - ref_loss_only), kTol * std::abs(ref_loss_only));
      EXPECT_EQ(loss_only, loss);  // same kernel and loss path, with or without the gradient

      dds.upload(ds0);
      const double loss2 =
          kn::aux_loss_forward_backward(dds.get(), dsc.get(), didx.get(), args, nullptr);
      EXPECT_EQ(loss2, loss);
      EXPECT_TRUE(same_bits(dds.download(), got)) << "groups=" << c.groups;
    }
  }
}

// -------------------------------------------------------- bad arguments --

TEST(GpuRouterGrad, BadSizesThrow) {
  SKIP_WITHOUT_DEVICE();
  EXPECT_THROW(kn::router_scores_forward(nullptr, nullptr, 4, 0, moe::GateFn::Sigmoid, nullptr),
               moe::InternalError);
  EXPECT_THROW(kn::topk_route_backward(nullptr, nullptr, nullptr, nullptr, 4,
                                       moe::RouteSpec{4, 5}, nullptr),
               moe::InternalError);
  EXPECT_THROW(kn::aux_loss_forward_backward(nullptr, nullptr, nullptr,
                                             moe::AuxLossArgs{1, 4, 9000, 2, 0.1, 1.0}, nullptr),
               moe::InternalError);
  // Empty problems are no-ops.
  kn::router_scores_forward(nullptr, nullptr, 0, 4, moe::GateFn::Softmax, nullptr);
  EXPECT_EQ(kn::aux_loss_forward_backward(nullptr, nullptr, nullptr,
                                          moe::AuxLossArgs{0, 4, 8, 2, 0.1, 1.0}, nullptr),
            0.0);
}

}  // namespace

#else  // !MOE_WITH_CUDA

TEST(GpuRouterGrad, SkippedWithoutCuda) { GTEST_SKIP() << "built without CUDA (MOE_WITH_CUDA off)"; }

#endif
