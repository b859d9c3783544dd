// The router ops of the CPU backend (src/backend/cpu/router.cpp): gate
// scores, biased top-K with its tie and non-finite order, the aux loss,
// against hand values, references and finite differences in fp64.
// Helpers and tolerances: support/cpu_test_util.h.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <random>
#include <string>
#include <tuple>

#include "support/cpu_test_util.h"
#include "support/route_cases.h"

namespace moe {
namespace {

using namespace test;

// ---------------------------------------------------------------- router ----

TEST_F(CpuOps, RouterScoresSigmoidAndSoftmax) {
  const int N = 3, E = 5;
  for (GateFn fn : {GateFn::Sigmoid, GateFn::Softmax}) {
    Vec l = randn(N * E, 18, 2.0), R = randn(N * E, 19), s(N * E);
    be->router_scores_forward(s.data(), l.data(), N, E, fn);
    for (int n = 0; n < N; n++) {
      double z = 0;
      for (int e = 0; e < E; e++) z += std::exp(l[n * E + e]);
      for (int e = 0; e < E; e++) {
        const double x = l[n * E + e];
        EXPECT_NEAR(s[n * E + e], fn == GateFn::Sigmoid ? 1 / (1 + std::exp(-x)) : std::exp(x) / z,
                    1e-15);
      }
    }
    auto L = [&] {
      be->router_scores_forward(s.data(), l.data(), N, E, fn);
      return dotv(R, s);
    };
    Vec fd = fd_grad(l, L);
    L();
    Vec dl = filled(N * E, 2.0);  // overwritten
    be->router_scores_backward(dl.data(), R.data(), s.data(), N, E, fn);
    EXPECT_LT(rel_err(fd, dl), kTol) << (fn == GateFn::Sigmoid ? "sigmoid" : "softmax");
  }
  // softmax is max-subtracted: huge logits stay finite
  Vec big = {1000, 1001, 999, 1000, 1000}, s(5);
  be->router_scores_forward(s.data(), big.data(), 1, 5, GateFn::Softmax);
  for (double v : s) EXPECT_TRUE(std::isfinite(v));
  EXPECT_NEAR(be->sum(s.data(), 5), 1.0, 1e-15);  // 5 quotients, 4 adds: <= ~8 u = 9e-16
}

TEST_F(CpuOps, TopkRouteBackwardNormalizeAndScale) {
  const int N = 4, E = 6, K = 3;
  // scores 0.1..0.6 with random order per token plus tiny noise: every key
  // differs by >= ~0.08, far beyond the FD step, so selection never flips.
  std::mt19937_64 rng(20);
  Vec s(N * E);
  for (int n = 0; n < N; n++) {
    std::vector<int> p = {0, 1, 2, 3, 4, 5};
    std::shuffle(p.begin(), p.end(), rng);
    for (int e = 0; e < E; e++) s[n * E + e] = 0.1 * (p[e] + 1) + 0.01 * std::sin(n * E + e);
  }
  const std::vector<float> bias = {0.f, 0.05f, -0.02f, 0.f, 0.03f, 0.f};
  Vec R = randn(N * K, 21);
  for (bool normalize : {false, true})
    for (double scale : {1.0, 2.5}) {
      RouteSpec spec{E, K, BiasMode::Additive, normalize, scale};
      std::vector<int32_t> idx(N * K), idx0(N * K);
      Vec g(N * K);
      be->topk_route(idx0.data(), g.data(), s.data(), bias.data(), N, spec);
      auto L = [&] {
        be->topk_route(idx.data(), g.data(), s.data(), bias.data(), N, spec);
        EXPECT_EQ(idx, idx0);  // selection stable under the FD step
        return dotv(R, g);
      };
      Vec fd = fd_grad(s, L);
      Vec ds = filled(N * E, 0.75);  // +=
      be->topk_route_backward(ds.data(), R.data(), s.data(), idx0.data(), N, spec);
      EXPECT_LT(rel_err(fd, minus(ds, 0.75)), kTol)
          << "normalize=" << normalize << " scale=" << scale;
    }
}

TEST_F(CpuOps, TopkTieBreakingAndBias) {
  const int E = 4, K = 2;
  std::vector<int32_t> idx(K);
  Vec g(K);
  const std::vector<float> zero(E, 0.f), one(E, 1.f);
  RouteSpec add{E, K, BiasMode::Additive, false, 1.0};
  RouteSpec mul{E, K, BiasMode::Multiplicative, false, 1.0};

  Vec s = {0.5, 0.5, 0.5, 0.5};  // all equal: lowest indices, in order
  be->topk_route(idx.data(), g.data(), s.data(), zero.data(), 1, add);
  EXPECT_EQ(idx, (std::vector<int32_t>{0, 1}));
  s = {0.3, 0.5, 0.5, 0.5};
  be->topk_route(idx.data(), g.data(), s.data(), zero.data(), 1, add);
  EXPECT_EQ(idx, (std::vector<int32_t>{1, 2}));
  s = {0.2, 0.9, 0.9, 0.1};  // equal maxima after a higher one is gone
  be->topk_route(idx.data(), g.data(), s.data(), one.data(), 1, mul);
  EXPECT_EQ(idx, (std::vector<int32_t>{1, 2}));

  // the bias changes the selection, the gates stay the unbiased s
  s = {0.5, 0.4, 0.3, 0.2};
  const std::vector<float> badd = {0.f, 0.f, 0.25f, 0.f};  // keys .5 .4 .55 .2
  be->topk_route(idx.data(), g.data(), s.data(), badd.data(), 1, add);
  EXPECT_EQ(idx, (std::vector<int32_t>{2, 0}));
  EXPECT_EQ(g, (Vec{0.3, 0.5}));
  const std::vector<float> bmul = {1.f, 1.f, 2.f, 1.f};  // keys .5 .4 .6 .2
  be->topk_route(idx.data(), g.data(), s.data(), bmul.data(), 1, mul);
  EXPECT_EQ(idx, (std::vector<int32_t>{2, 0}));
  EXPECT_EQ(g, (Vec{0.3, 0.5}));
  // multiplicative tie: 0.2*2 == 0.4*1 -> lower index first
  s = {0.2, 0.4, 0.1, 0.1};
  const std::vector<float> btie = {2.f, 1.f, 1.f, 1.f};
  be->topk_route(idx.data(), g.data(), s.data(), btie.data(), 1, mul);
  EXPECT_EQ(idx, (std::vector<int32_t>{0, 1}));
  EXPECT_EQ(g, (Vec{0.2, 0.4}));
  // normalised and scaled gates: s / sum(selected s) * route_scale
  RouteSpec norm{E, K, BiasMode::Additive, true, 2.0};
  s = {0.5, 0.4, 0.3, 0.2};
  be->topk_route(idx.data(), g.data(), s.data(), badd.data(), 1, norm);
  EXPECT_EQ(idx, (std::vector<int32_t>{2, 0}));
  EXPECT_NEAR(g[0], 0.3 / 0.8 * 2.0, 1e-15);
  EXPECT_NEAR(g[1], 0.5 / 0.8 * 2.0, 1e-15);
  // several tokens at once, float backend too
  auto bf = make_cpu_backend<float>(2);
  std::vector<float> sf = {0.5f, 0.5f, 0.5f, 0.5f, 0.1f, 0.2f, 0.3f, 0.4f}, gf(4);
  std::vector<int32_t> idx2(4);
  bf->topk_route(idx2.data(), gf.data(), sf.data(), zero.data(), 2, add);
  EXPECT_EQ(idx2, (std::vector<int32_t>{0, 1, 3, 2}));
}

// A diverged step's NaN or infinite scores (or keys: a NaN bias, inf - inf,
// inf * 0): every token still gets K distinct experts in [0, E), in the
// documented order (topk_order.h), so dispatch never sees an index out of
// range; and a picked NaN score reaches its gate, so the loss shows it.
TEST(CpuTopkNonFinite, HandCasesPickTheDocumentedOrder) {
  auto be = make_cpu_backend<float>(2);
  for (const auto& c : test::nonfinite_route_cases()) {
    SCOPED_TRACE(c.name);
    const int E = int(c.scores.size());
    const BiasMode mode = c.multiplicative ? BiasMode::Multiplicative : BiasMode::Additive;
    const float* bias = c.bias.empty() ? nullptr : c.bias.data();
    for (bool normalize : {false, true}) {
      std::vector<int32_t> idx(c.K, -7);
      std::vector<float> g(c.K, -7.f);
      be->topk_route(idx.data(), g.data(), c.scores.data(), bias, 1,
                     RouteSpec{E, c.K, mode, normalize, 1.0});
      EXPECT_EQ(idx, c.want);
      EXPECT_EQ(idx, test::reference_topk(c.scores, c.bias, 1, E, c.K, c.multiplicative));
      bool nan_picked = false;
      for (int k = 0; k < c.K; ++k) nan_picked |= std::isnan(c.scores[c.want[k]]);
      for (int k = 0; k < c.K; ++k) {
        const float s = c.scores[c.want[k]];
        if (normalize && nan_picked) {
          EXPECT_TRUE(std::isnan(g[k])) << k;  // the sum of the picked is NaN
        } else if (!normalize && std::isnan(s)) {
          EXPECT_TRUE(std::isnan(g[k])) << k;
        } else if (!normalize) {
          EXPECT_EQ(g[k], s) << k;  // the unbiased score, infinities included
        }
      }
    }
  }
}

// Many tokens, E above a warp's 32 lanes, ties, NaN, +-inf and all-NaN
// tokens, every bias mode: distinct in-range picks equal to the reference.
TEST(CpuTopkNonFinite, RandomTokensGetDistinctValidExperts) {
  auto be = make_cpu_backend<float>(2);
  const int N = 211;
  for (const auto& [E, K] : {std::pair{8, 2}, std::pair{70, 8}, std::pair{40, 32}}) {
    const auto s = test::nonfinite_scores(N, E, 1000 + E);
    std::mt19937_64 rng(E);
    std::uniform_real_distribution<float> u(0.5f, 1.5f);
    std::vector<float> b(E);
    for (auto& x : b) x = u(rng);
    for (int mode = 0; mode < 3; ++mode) {  // null bias, additive, multiplicative
      SCOPED_TRACE("E=" + std::to_string(E) + " K=" + std::to_string(K) +
                   " mode=" + std::to_string(mode));
      const bool mult = mode == 2;
      const std::vector<float> bias = mode == 0 ? std::vector<float>{} : b;
      std::vector<int32_t> idx(size_t(N) * K, -7);
      std::vector<float> g(size_t(N) * K);
      be->topk_route(idx.data(), g.data(), s.data(), mode == 0 ? nullptr : bias.data(), N,
                     RouteSpec{E, K, mult ? BiasMode::Multiplicative : BiasMode::Additive,
                               false, 1.0});
      for (int t = 0; t < N; ++t) {
        std::vector<int32_t> row(idx.begin() + size_t(t) * K, idx.begin() + size_t(t + 1) * K);
        for (int32_t e : row) ASSERT_TRUE(e >= 0 && e < E) << "token " << t << ": " << e;
        std::sort(row.begin(), row.end());
        ASSERT_EQ(std::adjacent_find(row.begin(), row.end()), row.end()) << "token " << t;
      }
      EXPECT_EQ(idx, test::reference_topk(s, bias, N, E, K, mult));
    }
  }
}

// ------------------------------------------------- group-limited routing ----

RouteSpec group_spec(int E, int K, bool mult, bool normalize, int G, int TG) {
  RouteSpec spec{E, K, mult ? BiasMode::Multiplicative : BiasMode::Additive, normalize, 1.0};
  spec.n_group = G;
  spec.topk_group = TG;
  return spec;
}

// What transformers' glm4_moe / deepseek_v3 compute: the dropped groups'
// keys set to 0.0 (masked_fill(~score_mask, 0.0)), then plain top-K.
std::vector<int32_t> zero_masked_topk(const std::vector<float>& s, const std::vector<float>& b,
                                      int E, int K, int G, const std::vector<int32_t>& kept_of) {
  std::vector<float> key(E);
  const int m = E / G;
  for (int e = 0; e < E; ++e) {
    const bool kept = std::find(kept_of.begin(), kept_of.end(), e / m) != kept_of.end();
    key[e] = kept ? (b.empty() ? s[e] : s[e] + b[e]) : 0.f;
  }
  return test::reference_topk(key, {}, 1, E, K, false);
}

// DeepSeek-V3's rule on hand-worked tokens: ties between and within groups,
// NaN and +-inf keys and group scores, one group holding every top score,
// negative biased keys in the kept group, multiplicative bias. Each case
// that lists `plain` picks differently from plain top-K.
TEST(CpuTopkGroups, HandCasesPickDeepSeekV3Groups) {
  auto be = make_cpu_backend<float>(2);
  for (const auto& c : test::group_route_cases()) {
    SCOPED_TRACE(c.name);
    const int E = int(c.scores.size());
    const float* bias = c.bias.empty() ? nullptr : c.bias.data();
    for (bool normalize : {false, true}) {
      std::vector<int32_t> idx(c.K, -7);
      std::vector<float> g(c.K, -7.f);
      be->topk_route(idx.data(), g.data(), c.scores.data(), bias, 1,
                     group_spec(E, c.K, c.multiplicative, normalize, c.n_group, c.topk_group));
      EXPECT_EQ(idx, c.want);
      EXPECT_EQ(idx, test::reference_group_topk(c.scores, c.bias, 1, E, c.K, c.multiplicative,
                                                c.n_group, c.topk_group));
      EXPECT_LE(test::groups_touched(idx, 1, E, c.K, c.n_group)[0], c.topk_group);
      if (!c.plain.empty()) {
        EXPECT_EQ(c.plain, test::reference_topk(c.scores, c.bias, 1, E, c.K, c.multiplicative));
        EXPECT_NE(c.want, c.plain);
      }
      for (int k = 0; k < c.K && !normalize; ++k) {
        const float sv = c.scores[idx[k]];
        if (std::isnan(sv)) {
          EXPECT_TRUE(std::isnan(g[k]));
        } else {
          EXPECT_EQ(g[k], sv) << k;  // gates: the unbiased score
        }
      }
    }
  }
  // The -inf vs 0.0 case: transformers' 0.0 mask would pick the dropped
  // group's experts 2 and 3 (0.0 > -0.2); we never pick them.
  const std::vector<float> s = {0.6f, 0.5f, 0.4f, 0.45f}, b = {-0.8f, -0.8f, -0.9f, -0.9f};
  EXPECT_EQ(zero_masked_topk(s, b, 4, 2, 2, {0}), (std::vector<int32_t>{2, 3}));
  std::vector<int32_t> idx(2);
  std::vector<float> g(2);
  be->topk_route(idx.data(), g.data(), s.data(), b.data(), 1, group_spec(4, 2, false, false, 2, 1));
  EXPECT_EQ(idx, (std::vector<int32_t>{0, 1}));
  EXPECT_EQ(g, (std::vector<float>{0.6f, 0.5f}));
}

// Many tokens: NaN, +-inf, exact ties, all-NaN tokens; sigmoid-like scores
// with a negative Loss-Free bias (kept keys below 0); groups of 1 .. 16
// experts, up to 32 groups; every bias mode. Equal to the reference, distinct
// and in range, never more than topk_group groups per token.
TEST(CpuTopkGroups, RandomAdversarialTokensMatchTheReference) {
  auto be = make_cpu_backend<float>(2);
  const int N = 157;
  struct Shape { int E, K, G, TG; };
  for (const Shape sh : {Shape{8, 2, 4, 2}, Shape{64, 6, 8, 3}, Shape{70, 8, 7, 2},
                         Shape{40, 10, 4, 1}, Shape{32, 4, 32, 5}, Shape{96, 8, 32, 4},
                         Shape{48, 16, 3, 2}}) {
    for (int data = 0; data < 2; ++data) {  // non-finite scores; sigmoid scores, negative bias
      std::mt19937_64 rng(sh.E * 31 + sh.G + data);
      std::vector<float> s;
      if (data == 0) {
        s = test::nonfinite_scores(N, sh.E, 7000 + sh.E + sh.G);
      } else {
        std::uniform_real_distribution<float> u(0.f, 1.f);
        s.resize(size_t(N) * sh.E);
        for (auto& x : s) x = u(rng);
      }
      std::uniform_real_distribution<float> ub(-1.f, 0.05f), um(0.5f, 1.5f);
      std::vector<float> badd(sh.E), bmul(sh.E);
      for (auto& x : badd) x = ub(rng);
      for (auto& x : bmul) x = um(rng);
      for (int mode = 0; mode < 3; ++mode) {  // null bias, additive, multiplicative
        SCOPED_TRACE("E=" + std::to_string(sh.E) + " K=" + std::to_string(sh.K) + " G=" +
                     std::to_string(sh.G) + " TG=" + std::to_string(sh.TG) +
                     " data=" + std::to_string(data) + " mode=" + std::to_string(mode));
        const bool mult = mode == 2;
        const std::vector<float> bias = mode == 0 ? std::vector<float>{} : mult ? bmul : badd;
        std::vector<int32_t> idx(size_t(N) * sh.K, -7);
        std::vector<float> g(size_t(N) * sh.K);
        be->topk_route(idx.data(), g.data(), s.data(), bias.empty() ? nullptr : bias.data(), N,
                       group_spec(sh.E, sh.K, mult, false, sh.G, sh.TG));
        for (int t = 0; t < N; ++t) {
          std::vector<int32_t> row(idx.begin() + size_t(t) * sh.K,
                                   idx.begin() + size_t(t + 1) * sh.K);
          for (int32_t e : row) ASSERT_TRUE(e >= 0 && e < sh.E) << "token " << t << ": " << e;
          std::sort(row.begin(), row.end());
          ASSERT_EQ(std::adjacent_find(row.begin(), row.end()), row.end()) << "token " << t;
        }
        EXPECT_EQ(idx, test::reference_group_topk(s, bias, N, sh.E, sh.K, mult, sh.G, sh.TG));
        const auto touched = test::groups_touched(idx, N, sh.E, sh.K, sh.G);
        EXPECT_LE(*std::max_element(touched.begin(), touched.end()), sh.TG);
        if (data == 1 && sh.TG < sh.K) {  // the limit binds: plain top-K would spread wider
          EXPECT_NE(idx, test::reference_topk(s, bias, N, sh.E, sh.K, mult));
        }
      }
    }
  }
}

// topk_group == n_group keeps every group: the selection and gates are plain
// top-K's bit for bit (as n_group 1), in fp32 and fp64, normalised or not.
TEST(CpuTopkGroups, EveryGroupKeptIsPlainTopKBitForBit) {
  const int N = 97, E = 64, K = 6;
  const auto s = test::nonfinite_scores(N, E, 4242);
  std::mt19937_64 rng(5);
  std::uniform_real_distribution<float> ub(-0.5f, 0.5f);
  std::vector<float> b(E);
  for (auto& x : b) x = ub(rng);
  std::vector<double> sd(s.begin(), s.end());
  auto bf = make_cpu_backend<float>(2);
  auto bd = make_cpu_backend<double>(2);
  for (int G : {1, 2, 8, 32, 64}) {
    for (bool normalize : {false, true}) {
      SCOPED_TRACE("G=" + std::to_string(G) + (normalize ? " norm" : ""));
      RouteSpec plain{E, K, BiasMode::Additive, normalize, 1.5};
      RouteSpec all = plain;
      all.n_group = all.topk_group = G;
      std::vector<int32_t> i0(size_t(N) * K), i1(size_t(N) * K);
      std::vector<float> g0(i0.size()), g1(i0.size());
      bf->topk_route(i0.data(), g0.data(), s.data(), b.data(), N, plain);
      bf->topk_route(i1.data(), g1.data(), s.data(), b.data(), N, all);
      EXPECT_EQ(i1, i0);
      EXPECT_EQ(0, std::memcmp(g0.data(), g1.data(), g0.size() * sizeof(float)));
      EXPECT_EQ(i1, test::reference_group_topk(s, b, N, E, K, false, G, G));
      EXPECT_EQ(i1, test::reference_topk(s, b, N, E, K, false));
      std::vector<double> d0(i0.size()), d1(i0.size());
      bd->topk_route(i0.data(), d0.data(), sd.data(), b.data(), N, plain);
      bd->topk_route(i1.data(), d1.data(), sd.data(), b.data(), N, all);
      EXPECT_EQ(i1, i0);
      EXPECT_EQ(0, std::memcmp(d0.data(), d1.data(), d0.size() * sizeof(double)));
    }
  }
}

TEST(CpuTopkGroups, BadGroupsThrow) {
  auto be = make_cpu_backend<float>(1);
  std::vector<float> s(12, 0.5f), g(12);
  std::vector<int32_t> idx(12);
  for (const auto& [G, TG, K] : {std::tuple{5, 1, 2}, std::tuple{4, 5, 2}, std::tuple{4, 0, 2},
                                 std::tuple{4, 1, 4}, std::tuple{0, 1, 2}}) {
    SCOPED_TRACE(std::to_string(G) + " " + std::to_string(TG) + " " + std::to_string(K));
    EXPECT_THROW(be->topk_route(idx.data(), g.data(), s.data(), nullptr, 1,
                                group_spec(12, K, false, false, G, TG)),
                 InternalError);
  }
}

TEST_F(CpuOps, AuxLossHandValueAndGradient) {
  // 2 groups of 2 tokens, E = 2, K = 1, alpha = 0.1.
  // g0 picks {0,0}: f = 2/(1*2)*[2,0] = [2,0], P = [.7,.3] -> 0.1*1.4 = 0.14
  // g1 picks {0,1}: f = [1,1], P = [.4,.6]                 -> 0.1*1.0 = 0.10
  Vec s = {0.6, 0.4, 0.8, 0.2, 0.5, 0.5, 0.3, 0.7};
  const std::vector<int32_t> idx = {0, 0, 0, 1};
  Vec ds = filled(8, 1.0);  // +=
  const double loss =
      be->aux_loss_forward_backward(ds.data(), s.data(), idx.data(), {2, 2, 2, 1, 0.1, 2.0, false});
  EXPECT_NEAR(loss, 0.24, 1e-15);
  // dL/ds_ti = alpha f_gi / L, times grad_scale 2
  const Vec want = {1.2, 1.0, 1.2, 1.0, 1.1, 1.1, 1.1, 1.1};
  for (int i = 0; i < 8; i++) EXPECT_NEAR(ds[i], want[i], 1e-15) << i;

  // random case vs FD: 3 groups of 4 tokens, E = 5, K = 2
  const int G = 3, Lg = 4, E = 5, K = 2, N = G * Lg;
  Vec sc = randn(N * E, 22);
  std::vector<int32_t> ix(N * K);
  for (int t = 0; t < N; t++) {
    ix[t * K] = t % E;
    ix[t * K + 1] = (t * 3 + 1) % E == t % E ? (t + 2) % E : (t * 3 + 1) % E;
  }
  auto L = [&] {
    return be->aux_loss_forward_backward(nullptr, sc.data(), ix.data(),
                                         {G, Lg, E, K, 0.01, 1.0, false});
  };
  Vec fd = fd_grad(sc, L);
  Vec d(N * E, 0.0);
  be->aux_loss_forward_backward(d.data(), sc.data(), ix.data(), {G, Lg, E, K, 0.01, 1.0, false});
  EXPECT_LT(rel_err(fd, d), kTol);
}

// DeepSeek-V3's sequence-wise loss (normalize_affinities): P from
// s'_ti = s_ti / S_t, S_t = sum_j s_tj; dL/ds_tj = alpha/L (f_j/S_t - sum_i f_i s_ti/S_t^2).
TEST_F(CpuOps, SeqAuxLossNormalisedHandValueAndGradient) {
  // 2 groups of 2 tokens, E = 2, K = 1, alpha = 0.1, grad_scale = 2.
  // g0: s = [.6,.2] (S .8, s' [.75,.25]), [.1,.3] (S .4, s' [.25,.75]); picks {0,0}:
  //     f = [2,0], P = [.5,.5] -> 0.1 * 2 * .5 = 0.1 (unnormalised Eq. 2: 0.07)
  // g1: s = [.5,.5] (s' [.5,.5]), [.2,.6] (S .8, s' [.25,.75]); picks {0,1}:
  //     f = [1,1], P = [.375,.625] -> 0.1 * 1 = 0.1 (sum_i P_i = 1)
  Vec s = {0.6, 0.2, 0.1, 0.3, 0.5, 0.5, 0.2, 0.6};
  const std::vector<int32_t> idx = {0, 0, 0, 1};
  Vec ds = filled(8, 1.0);  // +=
  const double loss =
      be->aux_loss_forward_backward(ds.data(), s.data(), idx.data(), {2, 2, 2, 1, 0.1, 2.0, true});
  EXPECT_NEAR(loss, 0.2, 1e-15);
  // grad_scale * alpha / L = 0.1 times (f_j / S - dot / S^2):
  //   t0: dot = 2 * .6 = 1.2: [2/.8 - 1.2/.64, -1.2/.64] = [.625, -1.875]
  //   t1: dot = 2 * .1 = .2:  [2/.4 - .2/.16, -.2/.16] = [3.75, -1.25]
  //   g1: f = [1,1], dot = S: 1/S - S/S^2 = 0 (a balanced f has no gradient)
  const Vec want = {1.0625, 0.8125, 1.375, 0.875, 1.0, 1.0, 1.0, 1.0};
  for (int i = 0; i < 8; i++) EXPECT_NEAR(ds[i], want[i], 1e-15) << i;
  // The loss only (null dscores) is the same value.
  EXPECT_EQ(
      be->aux_loss_forward_backward(nullptr, s.data(), idx.data(), {2, 2, 2, 1, 0.1, 2.0, true}),
      loss);

  // random positive scores vs FD: 3 groups of 4 tokens, E = 5, K = 2
  const int G = 3, Lg = 4, E = 5, K = 2, N = G * Lg;
  Vec sc = randn(N * E, 23);
  for (double& v : sc) v = 1.0 / (1.0 + std::exp(-v));  // sigmoid scores
  std::vector<int32_t> ix(N * K);
  for (int t = 0; t < N; t++) {
    ix[t * K] = (t * 2) % E;
    ix[t * K + 1] = (t * 2 + 1 + t / 3) % E == ix[t * K] ? (t + 3) % E : (t * 2 + 1 + t / 3) % E;
  }
  const double alpha = 0.01, gs = 0.7;
  auto L = [&] {
    return be->aux_loss_forward_backward(nullptr, sc.data(), ix.data(),
                                         {G, Lg, E, K, alpha, 1.0, true});
  };
  Vec fd = fd_grad(sc, L);
  Vec d = filled(N * E, 0.25);  // +=
  be->aux_loss_forward_backward(d.data(), sc.data(), ix.data(), {G, Lg, E, K, alpha, gs, true});
  for (double& v : fd) v *= gs;
  EXPECT_LT(rel_err(fd, minus(d, 0.25)), kTol);
  // Not the unnormalised loss's gradient (which is constant per group).
  Vec d0(N * E, 0.0);
  be->aux_loss_forward_backward(d0.data(), sc.data(), ix.data(), {G, Lg, E, K, alpha, gs, false});
  EXPECT_GT(rel_err(fd, d0), 0.1);
}

}  // namespace
}  // namespace moe
