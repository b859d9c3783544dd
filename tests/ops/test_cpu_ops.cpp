// Op-level tests of the CPU backend, the reference every GPU kernel is
// checked against. Gradients are checked in fp64 against central finite
// differences on every input element: L = sum(R * output) with random R.
//
// Tolerances. Values are compared in fp64 (u = 2^-53 = 1.1e-16) but in
// CpuOpsPrecision (fp32 against fp64, derived there) and where a float result
// is exact (a copied score, bit-identity across thread counts). In fp64 a
// different BLAS kernel or thread count moves a result by a few u of
// sum|terms|, far below every tolerance here:
//   - finite differences (kStep, kTol): central differences err by
//     h^2/6 |f'''| ~ 1e-13 (0 for the bilinear ops) plus the rounding of L,
//     ~u |L| / h ~ 1e-10 |L|; observed ~1e-10 relative. kTol = 1e-6 leaves
//     1e4, while a wrong or missing backward term is O(1e-2 .. 1) relative;
//   - values against hand formulas: a handful of fp64 operations on both
//     sides, so a few ulps; each absolute tolerance is several ulps of the
//     values it compares (ulp(1) = 2.2e-16, ulp(4) = 8.9e-16), and about one
//     only where both sides evaluate the same expression (said there).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>
#include <memory>
#include <random>
#include <vector>

#include "backend/backend.h"
#include "core/error.h"
#include "support/route_cases.h"

namespace moe {
namespace {

using Vec = std::vector<double>;

constexpr double kStep = 1e-6;
constexpr double kTol = 1e-6;

Vec randn(size_t n, uint64_t seed, double scale = 1.0) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<double> dist(0.0, scale);
  Vec v(n);
  for (auto& x : v) x = dist(rng);
  return v;
}

Vec filled(size_t n, double c) { return Vec(n, c); }

double dotv(const Vec& a, const Vec& b) {
  double s = 0.0;
  for (size_t i = 0; i < a.size(); i++) s += a[i] * b[i];
  return s;
}

// ||fd - an|| / max(||fd||, 1e-12)
double rel_err(const Vec& fd, const Vec& an) {
  EXPECT_EQ(fd.size(), an.size());
  double num = 0.0, den = 0.0;
  for (size_t i = 0; i < fd.size(); i++) {
    num += (fd[i] - an[i]) * (fd[i] - an[i]);
    den += fd[i] * fd[i];
  }
  return std::sqrt(num) / std::max(std::sqrt(den), 1e-12);
}

// Central differences of f with respect to every element of x (x restored).
Vec fd_grad(Vec& x, const std::function<double()>& f) {
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
Vec minus(const Vec& an, double c) {
  Vec r(an);
  for (auto& x : r) x -= c;
  return r;
}

class CpuOps : public ::testing::Test {
 protected:
  std::unique_ptr<Backend<double>> be = make_cpu_backend<double>(2);
};

// ---------------------------------------------------------------- memory ----

TEST_F(CpuOps, MemoryZeroedAlignedAndCopies) {
  for (size_t bytes : {size_t(0), size_t(1), size_t(100), size_t(4096)}) {
    auto* p = static_cast<unsigned char*>(be->alloc_bytes(bytes));
    ASSERT_NE(p, nullptr);
    EXPECT_EQ(reinterpret_cast<uintptr_t>(p) % 64, 0u);
    for (size_t i = 0; i < bytes; i++) ASSERT_EQ(p[i], 0) << i;
    be->free_bytes(p);
  }
  double* d = alloc_array<double>(*be, 5);
  double src[5] = {1, 2, 3, 4, 5}, dst[5] = {};
  be->to_device(d, src, sizeof(src));
  double* d2 = alloc_array<double>(*be, 5);
  be->copy(d2, d, sizeof(src));
  be->to_host(dst, d2, sizeof(dst));
  for (int i = 0; i < 5; i++) EXPECT_EQ(dst[i], src[i]);
  be->zero(d2, sizeof(src));
  for (int i = 0; i < 5; i++) EXPECT_EQ(d2[i], 0.0);
  be->free_bytes(d);
  be->free_bytes(d2);
}

// Synchronous: nothing for a communicator to order after (NcclComm takes the
// CUDA backend's stream from here).
TEST(CpuBackend, HasNoNativeStream) {
  EXPECT_EQ(make_cpu_backend<float>(1)->native_stream(), nullptr);
  EXPECT_EQ(make_cpu_backend<double>(1)->native_stream(), nullptr);
}

TEST_F(CpuOps, SumAndSumSquares) {
  // several reduction chunks plus a partial one; small integer values, so
  // every partial sum is an exact integer in double and any order (chunks,
  // threads) gives the same bits: EXPECT_EQ.
  Vec x(10007);
  double s = 0, ss = 0;
  for (size_t i = 0; i < x.size(); i++) {
    x[i] = static_cast<double>(static_cast<int>(i % 7) - 3);
    s += x[i];
    ss += x[i] * x[i];
  }
  EXPECT_EQ(be->sum(x.data(), x.size()), s);
  EXPECT_EQ(be->sum_squares(x.data(), x.size()), ss);
  EXPECT_EQ(be->sum_squares(x.data(), 0), 0.0);
  // float input accumulates in double: 0.1f^2 is exact in double (48 bits);
  // chunks of 4096 then 245 chunk sums err by <= (4096 + 245) 2^-53 * 1e4 =
  // 5e-9 (an fp32 accumulation would be off by ~1e-2).
  auto bf = make_cpu_backend<float>(2);
  std::vector<float> xf(1000000, 0.1f);
  EXPECT_NEAR(bf->sum_squares(xf.data(), xf.size()), 1e6 * double(0.1f) * double(0.1f), 1e-6);
}

TEST_F(CpuOps, AddAndScale) {
  Vec y = {1, 2, 3}, x = {10, 20, 30};
  be->add_inplace(y.data(), x.data(), 3);
  be->scale_inplace(y.data(), 0.5, 3);
  EXPECT_EQ(y, (Vec{5.5, 11, 16.5}));
}

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

// ------------------------------------------------------------------ rope ----

TEST_F(CpuOps, RopeGradientNormsAndHandValue) {
  const int B = 2, S = 3, H = 2, hd = 4, W = 3 * H * hd;
  const double theta = 10000.0;
  Vec qkv0 = randn(B * S * W, 12), R = randn(B * S * W, 13);
  Vec x = qkv0, out;
  auto L = [&] {
    out = x;
    be->rope_forward(out.data(), B, S, H, hd, theta);
    return dotv(R, out);
  };
  Vec fd = fd_grad(x, L);
  Vec g = R;
  be->rope_backward(g.data(), B, S, H, hd, theta);
  EXPECT_LT(rel_err(fd, g), kTol);

  // a rotation: every head vector keeps its norm; v and position 0 untouched
  L();
  for (int n = 0; n < B * S; n++)
    for (int h = 0; h < 3 * H; h++) {
      double a = 0, b = 0;
      for (int d = 0; d < hd; d++) {
        a += qkv0[n * W + h * hd + d] * qkv0[n * W + h * hd + d];
        b += out[n * W + h * hd + d] * out[n * W + h * hd + d];
      }
      EXPECT_NEAR(a, b, 1e-12);  // a rotation in double: ~2 ulps per element, norms ~4
      if (h >= 2 * H || n % S == 0) {
        for (int d = 0; d < hd; d++) EXPECT_EQ(out[n * W + h * hd + d], qkv0[n * W + h * hd + d]);
      }
    }
  // and the backward is its inverse
  Vec back = out;
  be->rope_backward(back.data(), B, S, H, hd, theta);
  EXPECT_LT(rel_err(qkv0, back), 1e-14);  // two rotations in double: ~4 u = 4.4e-16

  // by hand at pos 1 (row 1), q head 0 = [1,2,3,4]: pairs (0,2) turn by 1 rad,
  // (1,3) by 1 * 10000^(-1/2) = 0.01 rad. The kernel evaluates the same
  // double expression (a cos - b sin; pow gives 0.01 correctly rounded):
  // equal up to an ulp, 8.9e-16 at 4.02.
  Vec h(B * S * W, 0.0);
  const double v[4] = {1, 2, 3, 4};
  for (int d = 0; d < 4; d++) h[1 * W + d] = v[d];
  be->rope_forward(h.data(), B, S, H, hd, theta);
  EXPECT_NEAR(h[W + 0], 1 * std::cos(1.0) - 3 * std::sin(1.0), 1e-15);
  EXPECT_NEAR(h[W + 2], 3 * std::cos(1.0) + 1 * std::sin(1.0), 1e-15);
  EXPECT_NEAR(h[W + 1], 2 * std::cos(0.01) - 4 * std::sin(0.01), 1e-15);
  EXPECT_NEAR(h[W + 3], 4 * std::cos(0.01) + 2 * std::sin(0.01), 1e-15);
}

// ------------------------------------------------------------- attention ----

// Full-matrix causal softmax attention in fp64.
void naive_attention(Vec& out, Vec& lse, const Vec& qkv, int B, int S, int H, int hd) {
  const int W = 3 * H * hd, OW = H * hd;
  out.assign(B * S * OW, 0.0);
  lse.assign(B * H * S, 0.0);
  for (int b = 0; b < B; b++)
    for (int h = 0; h < H; h++) {
      std::vector<Vec> P(S, Vec(S, 0.0));
      for (int i = 0; i < S; i++) {
        Vec s(S, -INFINITY);
        double m = -INFINITY;
        for (int j = 0; j <= i; j++) {
          double d = 0;
          for (int c = 0; c < hd; c++)
            d += qkv[(b * S + i) * W + h * hd + c] * qkv[(b * S + j) * W + OW + h * hd + c];
          s[j] = d / std::sqrt(double(hd));
          m = std::max(m, s[j]);
        }
        double z = 0;
        for (int j = 0; j <= i; j++) z += std::exp(s[j] - m);
        lse[(b * H + h) * S + i] = m + std::log(z);
        for (int j = 0; j <= i; j++) P[i][j] = std::exp(s[j] - m) / z;
      }
      for (int i = 0; i < S; i++)
        for (int j = 0; j < S; j++)
          for (int c = 0; c < hd; c++)
            out[(b * S + i) * OW + h * hd + c] +=
                P[i][j] * qkv[(b * S + j) * W + 2 * OW + h * hd + c];
    }
}

// Forward against naive_attention, backward against finite differences.
void check_attention(Backend<double>& be, int B, int S, int H, int hd) {
  const int W = 3 * H * hd;
  Vec qkv = randn(B * S * W, 14), R = randn(B * S * H * hd, 15);
  Vec out(B * S * H * hd), lse(B * H * S), nout, nlse;
  be.attention_forward(out.data(), lse.data(), qkv.data(), B, S, H, hd);
  naive_attention(nout, nlse, qkv, B, S, H, hd);
  // fp64, dgemm tiles vs plain loops: <= ~S u sum|terms| apart in any order
  // (S = 150: ~5e-14 normwise at worst).
  EXPECT_LT(rel_err(nout, out), 1e-13);
  EXPECT_LT(rel_err(nlse, lse), 1e-13);

  auto L = [&] {
    be.attention_forward(out.data(), lse.data(), qkv.data(), B, S, H, hd);
    return dotv(R, out);
  };
  Vec fd = fd_grad(qkv, L);
  L();
  Vec dqkv = filled(B * S * W, 3.0);  // overwritten
  be.attention_backward(dqkv.data(), R.data(), out.data(), lse.data(), qkv.data(), B, S, H, hd);
  EXPECT_LT(rel_err(fd, dqkv), kTol);
}

TEST_F(CpuOps, AttentionMatchesNaiveAndFd) { check_attention(*be, 2, 5, 2, 4); }

// Longer than the CPU kernel's row block (64): several query and key blocks,
// the last one partial.
TEST_F(CpuOps, AttentionBlocksMatchNaiveAndFd) { check_attention(*be, 1, 150, 1, 4); }

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

TEST_F(CpuOps, AuxLossHandValueAndGradient) {
  // 2 groups of 2 tokens, E = 2, K = 1, alpha = 0.1.
  // g0 picks {0,0}: f = 2/(1*2)*[2,0] = [2,0], P = [.7,.3] -> 0.1*1.4 = 0.14
  // g1 picks {0,1}: f = [1,1], P = [.4,.6]                 -> 0.1*1.0 = 0.10
  Vec s = {0.6, 0.4, 0.8, 0.2, 0.5, 0.5, 0.3, 0.7};
  const std::vector<int32_t> idx = {0, 0, 0, 1};
  Vec ds = filled(8, 1.0);  // +=
  const double loss =
      be->aux_loss_forward_backward(ds.data(), s.data(), idx.data(), 2, 2, 2, 1, 0.1, 2.0);
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
    return be->aux_loss_forward_backward(nullptr, sc.data(), ix.data(), G, Lg, E, K, 0.01, 1.0);
  };
  Vec fd = fd_grad(sc, L);
  Vec d(N * E, 0.0);
  be->aux_loss_forward_backward(d.data(), sc.data(), ix.data(), G, Lg, E, K, 0.01, 1.0);
  EXPECT_LT(rel_err(fd, d), kTol);
}

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

// ------------------------------------------------------------------ loss ----

TEST_F(CpuOps, CrossEntropyValuesGradientAndAliasing) {
  // 3 classes by hand: logits [1,2,3]
  Vec lg = {1, 2, 3, 1, 2, 3}, loss(2), d(6);
  const std::vector<int32_t> tgt = {0, 2};
  be->cross_entropy(loss.data(), d.data(), lg.data(), tgt.data(), 2, 3, 0.5);
  const double z = std::exp(1.0) + std::exp(2.0) + std::exp(3.0);
  EXPECT_NEAR(loss[0], 2.4076059644443806, 1e-14);
  EXPECT_NEAR(loss[0], std::log(z) - 1, 1e-14);
  EXPECT_NEAR(loss[1], std::log(z) - 3, 1e-14);
  for (int j = 0; j < 3; j++) {
    const double p = std::exp(j + 1.0) / z;
    EXPECT_NEAR(d[j], 0.5 * (p - (j == 0)), 1e-15);
    EXPECT_NEAR(d[3 + j], 0.5 * (p - (j == 2)), 1e-15);
  }
  // max subtraction: huge logits stay finite
  Vec big = {1000, 1001, 1002};
  Vec lb(1);
  be->cross_entropy(lb.data(), nullptr, big.data(), tgt.data(), 1, 3, 1.0);
  EXPECT_NEAR(lb[0], std::log(z) - 1, 1e-12);

  // random rows vs FD of grad_scale * sum(losses)
  const int N = 4, V = 7;
  const double gs = 0.25;
  Vec x = randn(N * V, 28, 2.0), l(N);
  const std::vector<int32_t> t = {3, 0, 6, 3};
  auto L = [&] {
    be->cross_entropy(l.data(), nullptr, x.data(), t.data(), N, V, gs);
    return gs * (l[0] + l[1] + l[2] + l[3]);
  };
  Vec fd = fd_grad(x, L);
  Vec dx(N * V), l1(N);
  const Vec x0 = x;
  be->cross_entropy(l1.data(), dx.data(), x.data(), t.data(), N, V, gs);
  EXPECT_EQ(x, x0);  // forward-only and separate dlogits leave logits alone
  EXPECT_LT(rel_err(fd, dx), kTol);
  // aliasing: dlogits == logits gives the same losses and gradient
  Vec xa = x, l2(N);
  be->cross_entropy(l2.data(), xa.data(), xa.data(), t.data(), N, V, gs);
  EXPECT_EQ(l2, l1);
  EXPECT_EQ(xa, dx);

  const std::vector<int32_t> bad = {7};
  EXPECT_THROW(be->cross_entropy(l.data(), nullptr, x.data(), bad.data(), 1, V, 1.0),
               InternalError);
}

// ------------------------------------------------------------- optimizer ----

TEST_F(CpuOps, AdamWOneAndTwoSteps) {
  AdamWParams hp;
  hp.lr = 0.01;
  hp.beta1 = 0.9;
  hp.beta2 = 0.95;
  hp.eps = 1e-8;
  hp.weight_decay = 0.1;
  hp.grad_scale = 0.5;
  hp.step = 1;
  Vec p = {1.0, -2.0, 0.5}, g = {0.1, -0.3, 0.0}, m(3), v(3);
  be->adamw_step(p.data(), g.data(), m.data(), v.data(), 3, hp);
  // step 1: g' = 0.5 g; m = 0.1 g'; v = 0.05 g'^2; mhat = g', vhat = g'^2
  EXPECT_NEAR(m[0], 0.005, 1e-17);
  EXPECT_NEAR(v[0], 0.05 * 0.0025, 1e-18);
  EXPECT_NEAR(p[0], 1.0 * 0.999 - 0.01 * 0.05 / (0.05 + 1e-8), 1e-15);
  EXPECT_NEAR(p[1], -2.0 * 0.999 + 0.01 * 0.15 / (0.15 + 1e-8), 1e-15);
  EXPECT_NEAR(p[2], 0.5 * 0.999, 1e-15);  // zero gradient: decay only

  // step 2 with gradient 0.2 (scaled 0.1) on element 0
  hp.step = 2;
  Vec g2 = {0.2, 0.0, 0.0};
  const double p0 = p[0];
  be->adamw_step(p.data(), g2.data(), m.data(), v.data(), 3, hp);
  const double m2 = 0.9 * 0.005 + 0.1 * 0.1, v2 = 0.95 * 0.000125 + 0.05 * 0.01;
  const double mhat = m2 / (1 - 0.81), vhat = v2 / (1 - 0.9025);
  EXPECT_NEAR(m[0], m2, 1e-17);
  EXPECT_NEAR(v[0], v2, 1e-18);
  EXPECT_NEAR(p[0], p0 * 0.999 - 0.01 * mhat / (std::sqrt(vhat) + 1e-8), 1e-15);
}

TEST_F(CpuOps, AdamWDecaysOnlyTheLeadingElements) {
  AdamWParams hp;
  hp.lr = 0.01;
  hp.weight_decay = 0.1;
  hp.decay_count = 2;
  const Vec p0 = {1.0, -2.0, 0.5, 3.0}, g = {0.1, -0.3, 0.2, -0.4};
  Vec p = p0, m(4), v(4);
  be->adamw_step(p.data(), g.data(), m.data(), v.data(), 4, hp);
  // Two calls, decayed head then undecayed tail, are the same update.
  Vec q = p0, mq(4), vq(4);
  hp.decay_count = SIZE_MAX;
  be->adamw_step(q.data(), g.data(), mq.data(), vq.data(), 2, hp);
  hp.weight_decay = 0.0;
  be->adamw_step(q.data() + 2, g.data() + 2, mq.data() + 2, vq.data() + 2, 2, hp);
  // Exact: the same per-element double expression; the undecayed tail is
  // multiplied by 1.0 either way (decay_count, or 1 - lr * 0).
  EXPECT_EQ(p, q);
  EXPECT_EQ(m, mq);
  EXPECT_EQ(v, vq);
  // Step 1 with |g| >> eps: p - lr * sign(g), times 0.999 on the head only
  // (off by lr * eps / |g| <= 1e-9).
  EXPECT_NEAR(p[0], 1.0 * 0.999 - 0.01, 1e-8);
  EXPECT_NEAR(p[3], 3.0 + 0.01, 1e-8);
}

// ------------------------------------------- precision and determinism ----

// fp32 (inputs rounded to float, sgemm) against fp64 on the same values,
// normwise. All roundings aligned would give at most 1.7e-5 (attention out),
// 3.5e-6 (lse) and 7.7e-6 (linear, K = 32); a normwise error over 512 and 768
// outputs sits near the typical ~sqrt(K) u instead: 8.6e-8 (out) and 3.7e-8
// (lse) emulated in fp32 for sequential sums, ~1e-7 (linear). 1e-5 is ~100x
// that for any BLAS kernel or thread count; a bf16-sized error (4e-3) fails.
TEST(CpuOpsPrecision, FloatMatchesDouble) {
  auto bd = make_cpu_backend<double>(2);
  auto bf = make_cpu_backend<float>(2);
  const int B = 2, S = 16, H = 2, hd = 8, W = 3 * H * hd, N = B * S, OW = H * hd;
  Vec qkv = randn(N * W, 29);
  std::vector<float> qkvf(qkv.begin(), qkv.end());
  Vec out(N * OW), lse(B * H * S);
  std::vector<float> outf(N * OW), lsef(B * H * S);
  bd->rope_forward(qkv.data(), B, S, H, hd, 10000.0);
  bf->rope_forward(qkvf.data(), B, S, H, hd, 10000.0);
  bd->attention_forward(out.data(), lse.data(), qkv.data(), B, S, H, hd);
  bf->attention_forward(outf.data(), lsef.data(), qkvf.data(), B, S, H, hd);
  EXPECT_LT(rel_err(out, Vec(outf.begin(), outf.end())), 1e-5);
  EXPECT_LT(rel_err(lse, Vec(lsef.begin(), lsef.end())), 1e-5);

  const int I = 32, O = 24;
  Vec x = randn(N * I, 30), Wt = randn(O * I, 31), y(N * O);
  std::vector<float> xf(x.begin(), x.end()), Wf(Wt.begin(), Wt.end()), yf(N * O);
  bd->linear_forward(y.data(), x.data(), Wt.data(), N, I, O);
  bf->linear_forward(yf.data(), xf.data(), Wf.data(), N, I, O);
  EXPECT_LT(rel_err(y, Vec(yf.begin(), yf.end())), 1e-5);
}

// Thread counts 1 and 2 must give bit-identical results, exact by
// construction: attention runs one (batch, head) tile per OpenMP iteration
// with BLAS set to one thread inside (attention.cpp), so nt only changes
// which thread computes a tile, never how; rmsnorm works by rows and by
// fixed column blocks, sum_squares by fixed chunks of 4096. (Multi-threaded
// GEMMs, e.g. linear_forward, are not compared across thread counts:
// OpenBLAS's Haswell/Zen sgemm rounds differently with 1 and 2 threads.)
template <typename T>
void check_thread_independence() {
  auto b1 = make_cpu_backend<T>(1);
  auto b2 = make_cpu_backend<T>(2);
  auto cast = [](const Vec& v) { return std::vector<T>(v.begin(), v.end()); };
  for (const int S : {33, 137}) {  // one and several row blocks of the attention kernel
    const int B = 2, H = 3, hd = 8, W = 3 * H * hd, N = B * S, OW = H * hd;
    const std::vector<T> qkv = cast(randn(N * W, 32)), dout = cast(randn(N * OW, 33));
    std::vector<T> out1(N * OW), out2(N * OW), lse1(B * H * S), lse2(B * H * S);
    std::vector<T> dq1(N * W), dq2(N * W);
    b1->attention_forward(out1.data(), lse1.data(), qkv.data(), B, S, H, hd);
    b2->attention_forward(out2.data(), lse2.data(), qkv.data(), B, S, H, hd);
    b1->attention_backward(dq1.data(), dout.data(), out1.data(), lse1.data(), qkv.data(), B, S,
                           H, hd);
    b2->attention_backward(dq2.data(), dout.data(), out2.data(), lse2.data(), qkv.data(), B, S,
                           H, hd);
    EXPECT_EQ(0, std::memcmp(out1.data(), out2.data(), out1.size() * sizeof(T))) << "S=" << S;
    EXPECT_EQ(0, std::memcmp(lse1.data(), lse2.data(), lse1.size() * sizeof(T))) << "S=" << S;
    EXPECT_EQ(0, std::memcmp(dq1.data(), dq2.data(), dq1.size() * sizeof(T))) << "S=" << S;
  }

  const int R = 97, D = 200;  // several column blocks for dw
  const std::vector<T> x = cast(randn(R * D, 34)), w = cast(randn(D, 35)),
                       dy = cast(randn(R * D, 36));
  std::vector<T> y(R * D), rstd(R), dx1(R * D), dx2(R * D), dw1(D), dw2(D);
  b1->rmsnorm_forward(y.data(), rstd.data(), x.data(), w.data(), R, D, 1e-6);
  b1->rmsnorm_backward(dx1.data(), nullptr, dw1.data(), dy.data(), x.data(), w.data(), rstd.data(), R, D);
  b2->rmsnorm_backward(dx2.data(), nullptr, dw2.data(), dy.data(), x.data(), w.data(), rstd.data(), R, D);
  EXPECT_EQ(0, std::memcmp(dx1.data(), dx2.data(), dx1.size() * sizeof(T)));
  EXPECT_EQ(0, std::memcmp(dw1.data(), dw2.data(), dw1.size() * sizeof(T)));

  const std::vector<T> big = cast(randn(50000, 37));
  EXPECT_EQ(b1->sum_squares(big.data(), big.size()), b2->sum_squares(big.data(), big.size()));
}

TEST(CpuOpsDeterminism, ThreadCountIndependentDouble) { check_thread_independence<double>(); }
TEST(CpuOpsDeterminism, ThreadCountIndependentFloat) { check_thread_independence<float>(); }

}  // namespace
}  // namespace moe
