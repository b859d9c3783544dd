// Reductions, cross-entropy and AdamW of the CPU backend
// (src/backend/cpu/loss_optim.cpp) against hand values and finite differences.
// Helpers and tolerances: support/cpu_test_util.h.
#include <gtest/gtest.h>

#include "support/cpu_test_util.h"

namespace moe {
namespace {

using namespace test;

// ------------------------------------------------------------ reductions ----

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

}  // namespace
}  // namespace moe
