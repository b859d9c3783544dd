// RoPE and causal attention of the CPU backend (src/backend/cpu/attention.cpp)
// against hand values, a naive fp64 attention and finite differences.
// Helpers and tolerances: support/cpu_test_util.h.
#include <gtest/gtest.h>

#include "support/cpu_test_util.h"

namespace moe {
namespace {

using namespace test;

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

}  // namespace
}  // namespace moe
