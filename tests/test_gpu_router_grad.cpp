// GPU router gate-score forward/backward, top-K gate backward and auxiliary
// balance loss kernels (kernels/router.cu) against the CPU backend on
// random data, plus a determinism check (a second run from the same inputs
// gives the same bits). Every test skips cleanly when no CUDA device is
// visible, and the whole file reduces to one skipped test in a CPU-only build.
#include <gtest/gtest.h>

#ifdef MOE_WITH_CUDA

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <memory>
#include <numeric>
#include <random>
#include <vector>

#include "backend/backend.h"
#include "backend/cuda/cuda_device.h"
#include "gpu_test_util.h"
#include "core/error.h"
#include "router.h"

namespace {

using moe::test::DeviceBuffer;
using moe::test::normal;
using moe::test::uniform;
using moe::test::cpu;
using moe::test::normwise_rel_err;
using moe::test::same_bits;

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
  for (const Case c : {Case{1, 1, 1, 1}, Case{1, 5, 8, 2}, Case{3, 100, 64, 6},
                       Case{4, 700, 300, 8}, Case{16, 64, 16, 1}}) {
    const int N = c.groups * c.L;
    const size_t ne = static_cast<size_t>(N) * c.E;
    const auto scores = uniform(ne, rng, 0.0, 1.0);
    const auto idx = random_picks(N, c.E, c.K, rng);
    const auto ds0 = normal(ne, rng);
    const double alpha = 0.01, grad_scale = 0.5;
    auto ref = ds0;
    const double ref_loss = cpu()->aux_loss_forward_backward(
        ref.data(), scores.data(), idx.data(), c.groups, c.L, c.E, c.K, alpha, grad_scale);
    const double ref_loss_only = cpu()->aux_loss_forward_backward(
        nullptr, scores.data(), idx.data(), c.groups, c.L, c.E, c.K, alpha, grad_scale);

    DeviceBuffer<float> dds(ds0), dsc(scores);
    DeviceBuffer<int32_t> didx(idx);
    const double loss = kn::aux_loss_forward_backward(dds.get(), dsc.get(), didx.get(), c.groups,
                                                      c.L, c.E, c.K, alpha, grad_scale, nullptr);
    const auto got = dds.download();
    EXPECT_LT(std::abs(loss - ref_loss), kTol * std::abs(ref_loss))
        << "groups=" << c.groups << " L=" << c.L << " E=" << c.E;
    EXPECT_LT(normwise_rel_err(got, ref), kTol) << "groups=" << c.groups << " L=" << c.L;

    const double loss_only = kn::aux_loss_forward_backward(
        nullptr, dsc.get(), didx.get(), c.groups, c.L, c.E, c.K, alpha, grad_scale, nullptr);
    EXPECT_LT(std::abs(loss_only - ref_loss_only), kTol * std::abs(ref_loss_only));
    EXPECT_EQ(loss_only, loss);  // same kernel and loss path, with or without the gradient

    dds.upload(ds0);
    const double loss2 = kn::aux_loss_forward_backward(dds.get(), dsc.get(), didx.get(),
                                                       c.groups, c.L, c.E, c.K, alpha,
                                                       grad_scale, nullptr);
    EXPECT_EQ(loss2, loss);
    EXPECT_TRUE(same_bits(dds.download(), got)) << "groups=" << c.groups;
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
  EXPECT_THROW(kn::aux_loss_forward_backward(nullptr, nullptr, nullptr, 1, 4, 9000, 2, 0.1, 1.0,
                                             nullptr),
               moe::InternalError);
  // Empty problems are no-ops.
  kn::router_scores_forward(nullptr, nullptr, 0, 4, moe::GateFn::Softmax, nullptr);
  EXPECT_EQ(kn::aux_loss_forward_backward(nullptr, nullptr, nullptr, 0, 4, 8, 2, 0.1, 1.0,
                                          nullptr),
            0.0);
}

}  // namespace

#else  // !MOE_WITH_CUDA

TEST(GpuRouterGrad, SkippedWithoutCuda) { GTEST_SKIP() << "built without CUDA (MOE_WITH_CUDA off)"; }

#endif
