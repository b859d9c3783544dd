// GPU attention and RoPE (kernels/attention.cu) against the CPU backend ops
// on random data. Every test skips cleanly when no CUDA device is visible, and
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
#include "attention.h"

namespace {

using moe::test::DeviceBuffer;
using moe::test::normal;
using moe::test::uniform;
using moe::test::cpu;
using moe::test::normwise_rel_err;
using moe::test::same_bits;
using moe::test::elementwise_rel_err;

namespace kn = moe::kernels;

// fp32 against the CPU's fp32 in another order or with device expf (2 ulp):
// see gpu_test_util.h.
constexpr double kTol = 1e-5;

// -------------------------------------------------------------- attention --

struct AttnShape {
  int B, S, H, hd;
};
// S = 37 is not a multiple of the 32-row tile; hd 16/32 take the generic
// path, 40 and 100 are not multiples of a warp; S = 1 and S = 70 (three tiles).
const AttnShape kAttnShapes[] = {{2, 37, 2, 16}, {2, 37, 2, 64}, {2, 37, 2, 128}, {2, 37, 2, 32},
                                 {1, 70, 3, 40}, {1, 1, 1, 100}, {3, 64, 1, 128}};

std::string attn_name(const AttnShape& a) {
  return "B=" + std::to_string(a.B) + " S=" + std::to_string(a.S) + " H=" + std::to_string(a.H) +
         " hd=" + std::to_string(a.hd);
}

TEST(GpuAttention, ForwardMatchesCpuBackend) {
  SKIP_WITHOUT_DEVICE();
  std::mt19937_64 rng(42);
  auto be = cpu();
  for (const AttnShape a : kAttnShapes) {
    SCOPED_TRACE(attn_name(a));
    const size_t N = static_cast<size_t>(a.B) * a.S, OW = static_cast<size_t>(a.H) * a.hd;
    const auto qkv = normal(N * 3 * OW, rng);
    std::vector<float> out_ref(N * OW), lse_ref(static_cast<size_t>(a.B) * a.H * a.S);
    be->attention_forward(out_ref.data(), lse_ref.data(), qkv.data(), a.B, a.S, a.H, a.hd);

    DeviceBuffer<float> d_qkv(qkv), d_out(out_ref.size()), d_lse(lse_ref.size());
    moe::kernels::attention_forward(d_out.get(), d_lse.get(), d_qkv.get(), a.B, a.S, a.H, a.hd,
                                    nullptr);
    MOE_CUDA_CHECK(cudaDeviceSynchronize());
    const auto out = d_out.download(), lse = d_lse.download();
    // fp32 both sides, other orders (gpu_test_util.h): a score's q.k sums hd
    // <= 128 terms, its error ~u hd / sqrt(2) scaled by 1/sqrt(hd): ~5e-7
    // absolute, the relative error of each P (plus expf's 2 ulp); out sums
    // S <= 70 keys. ~1e-6 expected, 1e-5 leaves ~10x.
    EXPECT_LT(normwise_rel_err(out, out_ref), 1e-5);
    EXPECT_LT(normwise_rel_err(lse, lse_ref), 1e-5);

    // Second run: same bits.
    moe::kernels::attention_forward(d_out.get(), d_lse.get(), d_qkv.get(), a.B, a.S, a.H, a.hd,
                                    nullptr);
    MOE_CUDA_CHECK(cudaDeviceSynchronize());
    EXPECT_TRUE(same_bits(d_out.download(), out));
    EXPECT_TRUE(same_bits(d_lse.download(), lse));
  }
}

TEST(GpuAttention, BackwardMatchesCpuBackend) {
  SKIP_WITHOUT_DEVICE();
  std::mt19937_64 rng(7);
  auto be = cpu();
  for (const AttnShape a : kAttnShapes) {
    SCOPED_TRACE(attn_name(a));
    const size_t N = static_cast<size_t>(a.B) * a.S, OW = static_cast<size_t>(a.H) * a.hd;
    const auto qkv = normal(N * 3 * OW, rng);
    const auto dout = normal(N * OW, rng);
    std::vector<float> out(N * OW), lse(static_cast<size_t>(a.B) * a.H * a.S);
    be->attention_forward(out.data(), lse.data(), qkv.data(), a.B, a.S, a.H, a.hd);
    std::vector<float> dqkv_ref(qkv.size());
    be->attention_backward(dqkv_ref.data(), dout.data(), out.data(), lse.data(), qkv.data(), a.B,
                           a.S, a.H, a.hd);

    // Same inputs (the CPU's out and lse) for both, so only the backward differs.
    DeviceBuffer<float> d_qkv(qkv), d_dout(dout), d_out(out), d_lse(lse);
    // Poisoned output: the kernels must overwrite every element.
    DeviceBuffer<float> d_dqkv(std::vector<float>(qkv.size(), NAN));
    const size_t ws_bytes = moe::kernels::attention_backward_workspace_bytes(a.B, a.S, a.H);
    DeviceBuffer<unsigned char> ws(ws_bytes);
    moe::kernels::attention_backward(d_dqkv.get(), d_dout.get(), d_out.get(), d_lse.get(),
                                     d_qkv.get(), a.B, a.S, a.H, a.hd, ws.get(), ws_bytes,
                                     nullptr);
    MOE_CUDA_CHECK(cudaDeviceSynchronize());
    const auto dqkv = d_dqkv.download();
    ASSERT_TRUE(std::all_of(dqkv.begin(), dqkv.end(), [](float v) { return std::isfinite(v); }));
    // Each part (dq, dk, dv) on its own scale. As the forward: dP and D are
    // hd-term dots (relative ~sqrt(hd) u), dS = P (dP - D) keeps them at the
    // scale of dP, and dq, dk, dv sum <= 70 rows: ~1e-6, 1e-5 leaves ~10x.
    // Except at S = 1: there P = 1 and out = v, so dS = dout.v - dout.out is
    // exactly 0 and dq, dk are only the rounding of two hd-term dots, which
    // each side sums in its own order (the emulated device found this): both
    // must lie within that rounding's bound, |dS| <= 2 gamma_hd sum_c
    // |dout_c v_c| (gamma_hd ~ hd u), times |k_c| (|q_c|) / sqrt(hd).
    if (a.S == 1) {
      const double u = std::ldexp(1.0, -24), scale = 1.0 / std::sqrt(double(a.hd));
      for (size_t n = 0; n < N; ++n)
        for (int h = 0; h < a.H; ++h) {
          double dots = 0;
          for (int c = 0; c < a.hd; ++c)
            dots += std::fabs(dout[n * OW + h * a.hd + c] * qkv[n * 3 * OW + 2 * OW + h * a.hd + c]);
          const double ds_bound = 2 * 1.01 * a.hd * u * dots;
          for (int c = 0; c < a.hd; ++c)
            for (int part = 0; part < 2; ++part) {
              const size_t at = n * 3 * OW + part * OW + h * a.hd + c;
              const double other = qkv[n * 3 * OW + (1 - part) * OW + h * a.hd + c];  // k for dq
              const double bound = ds_bound * std::fabs(other) * scale;
              EXPECT_LE(std::fabs(dqkv[at]), bound) << "part " << part << " c " << c;
              EXPECT_LE(std::fabs(dqkv_ref[at]), bound) << "part " << part << " c " << c;
            }
        }
    }
    for (int part = a.S == 1 ? 2 : 0; part < 3; ++part) {
      SCOPED_TRACE("part " + std::to_string(part));
      std::vector<float> got, ref;
      for (size_t n = 0; n < N; ++n)
        for (size_t c = 0; c < OW; ++c) {
          got.push_back(dqkv[n * 3 * OW + part * OW + c]);
          ref.push_back(dqkv_ref[n * 3 * OW + part * OW + c]);
        }
      EXPECT_LT(normwise_rel_err(got, ref), 1e-5);
    }

    moe::kernels::attention_backward(d_dqkv.get(), d_dout.get(), d_out.get(), d_lse.get(),
                                     d_qkv.get(), a.B, a.S, a.H, a.hd, ws.get(), ws_bytes,
                                     nullptr);
    MOE_CUDA_CHECK(cudaDeviceSynchronize());
    EXPECT_TRUE(same_bits(d_dqkv.download(), dqkv));
  }
}

TEST(GpuAttention, RejectsBadShapes) {
  SKIP_WITHOUT_DEVICE();
  DeviceBuffer<float> buf(3 * 129 * 2);
  EXPECT_THROW(moe::kernels::attention_forward(buf.get(), buf.get(), buf.get(), 1, 1, 1, 129,
                                               nullptr),
               moe::InternalError);
  EXPECT_THROW(moe::kernels::attention_backward(buf.get(), buf.get(), buf.get(), buf.get(),
                                                buf.get(), 1, 4, 1, 16, nullptr, 0, nullptr),
               moe::InternalError);
}

// ------------------------------------------------------------------- RoPE --

TEST(GpuAttention, RopeForwardBackwardMatchCpu) {
  SKIP_WITHOUT_DEVICE();
  std::mt19937_64 rng(4);
  struct Case {
    int B, S, H, hd;
    double theta;
  };
  // Long sequences: angles of thousands of radians, where fp32 angles fail.
  for (const Case c : {Case{1, 1, 1, 2, 10000.0}, Case{2, 17, 3, 8, 10000.0},
                       Case{2, 1500, 2, 64, 10000.0}, Case{1, 4096, 1, 128, 500000.0}}) {
    const size_t n = static_cast<size_t>(c.B) * c.S * 3 * c.H * c.hd;
    const auto qkv = normal(n, rng);
    const std::string tag = "B=" + std::to_string(c.B) + " S=" + std::to_string(c.S) +
                            " H=" + std::to_string(c.H) + " hd=" + std::to_string(c.hd);

    auto fwd_ref = qkv, bwd_ref = qkv;
    auto be = cpu();
    be->rope_forward(fwd_ref.data(), c.B, c.S, c.H, c.hd, c.theta);
    be->rope_backward(bwd_ref.data(), c.B, c.S, c.H, c.hd, c.theta);

    DeviceBuffer<float> d_f(qkv), d_b(qkv);
    kn::rope_forward(d_f.get(), c.B, c.S, c.H, c.hd, c.theta, nullptr);
    kn::rope_backward(d_b.get(), c.B, c.S, c.H, c.hd, c.theta, nullptr);
    const auto f1 = d_f.download(), b1 = d_b.download();
    // Both compute the angle, sin, cos and the rotation in double and round
    // once: ~1 ulp. An fp32 angle would be off by up to ulp(4095) / 2 =
    // 1.2e-4 rad at S 4096, about that relative, which this tolerance catches.
    EXPECT_LT(normwise_rel_err(f1, fwd_ref), kTol) << tag;
    EXPECT_LT(normwise_rel_err(b1, bwd_ref), kTol) << tag;

    d_f.upload(qkv);
    kn::rope_forward(d_f.get(), c.B, c.S, c.H, c.hd, c.theta, nullptr);
    EXPECT_TRUE(same_bits(d_f.download(), f1)) << "determinism " << tag;
  }
}

TEST(GpuAttention, RopeLaunchersRejectBadArguments) {
  // Argument checks happen on the host before any launch: no device needed,
  // but the launchers must exist in this build.
  EXPECT_THROW(kn::rope_forward<float>(nullptr, 1, 4, 1, 3, 10000.0, nullptr), moe::InternalError);
}


}  // namespace

#else  // !MOE_WITH_CUDA

TEST(GpuAttention, Skipped) { GTEST_SKIP() << "built without CUDA"; }

#endif  // MOE_WITH_CUDA
