// GPU loss and optimizer kernels (kernels/loss_optim.cu: sums, cross-entropy,
// AdamW) against the CPU backend on random data, plus a determinism check (a
// second run from the same inputs gives the same bits). Every test skips
// cleanly when no CUDA device is visible, and the whole file reduces to one
// skipped test in a CPU-only build.
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
#include "loss_optim.h"

namespace {

using moe::test::DeviceBuffer;
using moe::test::normal;
using moe::test::uniform;
using moe::test::random_ints;
using moe::test::cpu;
using moe::test::normwise_rel_err;
using moe::test::elementwise_rel_err;
using moe::test::same_bits;

namespace kn = moe::kernels;

// fp32 against the CPU's fp32 in another order or with device expf (2 ulp):
// see gpu_test_util.h. Most of these ops have no long sums, so their errors
// are a few ulps (~3e-7); the comparisons below say where one is exact.
constexpr double kTol = 1e-5;

// ------------------------------------------------------------- reductions --

TEST(GpuLossOptim, SumAndSumSquaresMatchCpu) {
  SKIP_WITHOUT_DEVICE();
  std::mt19937_64 rng(5);
  // Around the chunk size (8192) and a large n with many partials.
  for (size_t n : {size_t{1}, size_t{8191}, size_t{8192}, size_t{8193}, size_t{3000017}}) {
    const auto x = normal(n, rng, 0.25, 1.0);
    DeviceBuffer<float> d_x(x);
    const size_t ws_bytes = kn::reduce_workspace_bytes(n);
    DeviceBuffer<unsigned char> ws(ws_bytes);
    auto be = cpu();
    const double s_ref = be->sum(x.data(), n), q_ref = be->sum_squares(x.data(), n);
    double abs_sum = 0.0;
    for (float v : x) abs_sum += std::abs(static_cast<double>(v));

    const double s1 = kn::sum(d_x.get(), n, ws.get(), ws_bytes, nullptr);
    const double q1 = kn::sum_squares(d_x.get(), n, ws.get(), ws_bytes, nullptr);
    // fp64 accumulation in a different (fixed) order: far below fp32
    // rounding. Worst case, both sum chunks of 8192 and then the <= 367
    // chunks' partials: <= (8192 + 367) 2^-53 = 9.5e-13 of sum |x| (or of
    // the sum of squares), so 1e-11 holds for any order within the chunks.
    EXPECT_LE(std::abs(s1 - s_ref), kTol * abs_sum) << "n=" << n;
    EXPECT_LE(std::abs(s1 - s_ref), 1e-11 * abs_sum) << "n=" << n;
    EXPECT_LE(std::abs(q1 - q_ref), 1e-11 * q_ref) << "n=" << n;

    const double s2 = kn::sum(d_x.get(), n, ws.get(), ws_bytes, nullptr);
    const double q2 = kn::sum_squares(d_x.get(), n, ws.get(), ws_bytes, nullptr);
    EXPECT_EQ(std::memcmp(&s1, &s2, sizeof(double)), 0) << "determinism n=" << n;
    EXPECT_EQ(std::memcmp(&q1, &q2, sizeof(double)), 0) << "determinism n=" << n;
  }
  EXPECT_EQ(kn::sum(nullptr, 0, nullptr, 0, nullptr), 0.0);
}

// ---------------------------------------------------------- cross-entropy --

TEST(GpuLossOptim, CrossEntropyMatchesCpu) {
  SKIP_WITHOUT_DEVICE();
  std::mt19937_64 rng(6);
  struct Case {
    int N, V;
  };
  for (const Case c : {Case{1, 1}, Case{3, 7}, Case{64, 5003}, Case{9, 32768}}) {
    auto logits = normal(static_cast<size_t>(c.N) * c.V, rng, 0.0, 3.0);
    const auto targets = random_ints(c.N, 0, c.V - 1, rng);
    // One confident row: a loss of ~1e-5 = log(1 + tiny) needs an accurate z.
    if (c.V > 1) logits[static_cast<size_t>(targets[0])] = 25.f;
    const double gs = 1.0 / (3.0 * c.N);
    const std::string tag = "N=" + std::to_string(c.N) + " V=" + std::to_string(c.V);

    std::vector<float> loss_ref(c.N), d_ref(logits.size());
    cpu()->cross_entropy(loss_ref.data(), d_ref.data(), logits.data(), targets.data(), c.N, c.V,
                         gs);

    DeviceBuffer<float> d_logits(logits), d_d(logits.size()), d_loss(c.N);
    DeviceBuffer<int32_t> d_t(targets);
    // Separate dlogits.
    kn::cross_entropy(d_loss.get(), d_d.get(), d_logits.get(), d_t.get(), c.N, c.V, gs, nullptr);
    const auto loss1 = d_loss.download(), d1 = d_d.download();
    // Both in fp64 (max, sum of exp, m + log z - x_t, p - 1) rounded to fp32
    // once: within ~1 fp32 ulp, the confident row's ~1e-5 loss included (its
    // cancellation costs ~2^-53 * 25 = 3e-15 absolute).
    EXPECT_LT(elementwise_rel_err(loss1, loss_ref), kTol) << tag;
    EXPECT_LT(normwise_rel_err(d1, d_ref), kTol) << tag;
    EXPECT_TRUE(same_bits(d_logits.download(), logits)) << "logits clobbered " << tag;

    // Loss only.
    kn::cross_entropy<float>(d_loss.get(), nullptr, d_logits.get(), d_t.get(), c.N, c.V, gs, nullptr);
    EXPECT_TRUE(same_bits(d_loss.download(), loss1)) << "determinism " << tag;

    // In place over the logits: same bits as the separate output.
    kn::cross_entropy(d_loss.get(), d_logits.get(), d_logits.get(), d_t.get(), c.N, c.V, gs,
                      nullptr);
    EXPECT_TRUE(same_bits(d_loss.download(), loss1)) << "aliased loss " << tag;
    EXPECT_TRUE(same_bits(d_logits.download(), d1)) << "aliased dlogits " << tag;
  }
}

TEST(GpuLossOptim, CrossEntropyBadTargetGivesNan) {
  SKIP_WITHOUT_DEVICE();
  DeviceBuffer<float> d_logits(std::vector<float>{1.f, 2.f, 3.f, 4.f, 5.f, 6.f});
  DeviceBuffer<int32_t> d_t(std::vector<int32_t>{1, 3});
  DeviceBuffer<float> d_loss(2);
  kn::cross_entropy<float>(d_loss.get(), nullptr, d_logits.get(), d_t.get(), 2, 3, 1.0, nullptr);
  const auto loss = d_loss.download();
  EXPECT_TRUE(std::isfinite(loss[0]));
  EXPECT_TRUE(std::isnan(loss[1]));
}

// ------------------------------------------------------------------ AdamW --

TEST(GpuLossOptim, AdamWMatchesCpu) {
  SKIP_WITHOUT_DEVICE();
  std::mt19937_64 rng(7);
  const size_t n = 100003;
  auto p_ref = normal(n, rng, 0.0, 0.02);
  std::vector<float> m_ref(n, 0.f), v_ref(n, 0.f);
  DeviceBuffer<float> d_p(p_ref), d_m(m_ref), d_v(v_ref), d_g(n);
  auto be = cpu();
  moe::AdamWParams hp;
  hp.lr = 3e-3;
  hp.beta1 = 0.9;
  hp.beta2 = 0.95;
  hp.eps = 1e-8;
  hp.weight_decay = 0.1;
  hp.decay_count = n / 3;  // decay on the first third only (the trainer's decayed matrices)
  for (int64_t step = 1; step <= 5; ++step) {
    const auto g = normal(n, rng, 0.0, 1e-2 * static_cast<double>(step));
    d_g.upload(g);
    hp.step = step;
    hp.grad_scale = step % 2 ? 1.0 : 0.37;
    // Snapshot for the determinism re-run of this step.
    const auto p0 = d_p.download(), m0 = d_m.download(), v0 = d_v.download();
    be->adamw_step(p_ref.data(), g.data(), m_ref.data(), v_ref.data(), n, hp);
    kn::adamw_step(d_p.get(), d_g.get(), d_m.get(), d_v.get(), n, hp, nullptr);
    const auto p1 = d_p.download(), m1 = d_m.download(), v1 = d_v.download();
    // Both do the update in fp64 and round p, m, v to fp32 once: equal or one
    // fp32 ulp apart each step, a few ulps (~3e-7) after 5 steps.
    EXPECT_LT(normwise_rel_err(p1, p_ref), kTol) << "step " << step;
    EXPECT_LT(normwise_rel_err(m1, m_ref), kTol) << "step " << step;
    EXPECT_LT(elementwise_rel_err(v1, v_ref), kTol) << "step " << step;

    d_p.upload(p0);
    d_m.upload(m0);
    d_v.upload(v0);
    kn::adamw_step(d_p.get(), d_g.get(), d_m.get(), d_v.get(), n, hp, nullptr);
    EXPECT_TRUE(same_bits(d_p.download(), p1)) << "determinism step " << step;
    EXPECT_TRUE(same_bits(d_m.download(), m1)) << "determinism step " << step;
    EXPECT_TRUE(same_bits(d_v.download(), v1)) << "determinism step " << step;
  }
}

// ------------------------------------------------------------- bad inputs --

TEST(GpuLossOptim, LaunchersRejectBadArguments) {
  // Argument checks happen on the host before any launch: no device needed,
  // but the launchers must exist in this build.
  EXPECT_THROW(kn::cross_entropy<float>(nullptr, nullptr, nullptr, nullptr, 2, 0, 1.0, nullptr),
               moe::InternalError);
  moe::AdamWParams step0;  // step must be >= 1
  step0.decay_count = 4;
  step0.step = 0;
  EXPECT_THROW(kn::adamw_step(nullptr, nullptr, nullptr, nullptr, 4, step0, nullptr),
               moe::InternalError);
  float dummy = 0.f;
  EXPECT_THROW(kn::sum(&dummy, 100, nullptr, 0, nullptr), moe::InternalError);
}


}  // namespace

#else  // !MOE_WITH_CUDA

TEST(GpuLossOptim, Skipped) { GTEST_SKIP() << "built without CUDA"; }

#endif  // MOE_WITH_CUDA
