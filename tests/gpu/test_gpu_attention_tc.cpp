// Tensor-core attention (kernels/attention_tc.cu) on the GPU: forward (out,
// lse) and backward (dq, dk, dv) against the fp64 reference of
// tests/support/attention_reference.h, computed from the same bf16 inputs; two runs
// give the same bits; agreement with the fp32 kernel (attention.cu) on the same
// values; argument checks. Every test skips cleanly when no CUDA device is
// visible, and the whole file reduces to one skipped test in a CPU-only build.
//
// Tolerances: the kernels round P (forward) and P, dS (backward) to bf16 for
// the tensor-core products, read the bf16-rounded out for D, and write bf16
// results, each a relative error of up to 2^-9 = 2e-3 per element; everything
// else is fp32. So results are held to a normwise relative error (max abs
// error / max abs reference) below 1e-2 for out, dq, dk and dv; the emulated
// run of the same code (test_emu_attention_tc) measures 1.5e-3 .. 7e-3 for
// S up to 2048 (a recent emulated run: 6.9e-3 at most, dk at S 64, hd 64,
// so 1.4x margin there; S 8192 has never been emulated). lse is computed in
// fp32 from the exact bf16 inputs, without the bf16 roundings: scores are
// hd-term dots (~sqrt(hd/2) u, a few e-7 absolute after the scale), exp2f
// errs by 2 ulp a term, the row sum of <= 8192 terms by ~sqrt(S) u ~ 5e-6
// relative, each of the few rescales of the running sum by 2 ulp: ~1e-5
// absolute at S 8192 (emulated: <= 4.4e-6 up to S 257, q scaled 4x
// included). Absolute error below 1e-4, ~10x that; 1e-2 would also pass an
// lse summed from the bf16-rounded P (~1e-4 .. 1e-3 off).
#include <gtest/gtest.h>

#ifdef MOE_WITH_CUDA

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "plan/bench_attention.h"
#include "support/attention_reference.h"
#include "core/error.h"
#include "support/gpu_test_util.h"
#include "attention.h"
#include "dispatch.h"
#include "attention_tc.h"

namespace {

using moe::test::attn_max_abs_error;
using moe::test::attn_normwise_error;
using moe::test::bf16_to_floats;
using moe::test::DeviceBuffer;
using moe::test::round_to_bf16;

constexpr double kTol = 1e-2, kLseTol = 1e-4;
constexpr uint16_t kBf16NaN = 0xFFFF;

struct Shape {
  int B, S, H, hd;
  size_t N() const { return static_cast<size_t>(B) * S; }
  size_t OW() const { return static_cast<size_t>(H) * hd; }
  size_t W() const { return 3 * OW(); }
  size_t rows() const { return static_cast<size_t>(B) * H * S; }
};

std::string name(const Shape& a) {
  return "B=" + std::to_string(a.B) + " S=" + std::to_string(a.S) + " H=" + std::to_string(a.H) +
         " hd=" + std::to_string(a.hd);
}

__nv_bfloat16* bf(const DeviceBuffer<uint16_t>& b) {
  return reinterpret_cast<__nv_bfloat16*>(b.get());
}

// qkv and dout ~ N(0, 1), rounded to bf16: `values` are what the kernels see.
struct Inputs {
  std::vector<float> qkv, dout;
  std::vector<uint16_t> qkv_bits, dout_bits;
};
Inputs make_inputs(const Shape& a, uint64_t seed) {
  std::mt19937_64 rng(seed);
  Inputs in;
  in.qkv = moe::test::normal(a.N() * a.W(), rng);
  in.dout = moe::test::normal(a.N() * a.OW(), rng);
  in.qkv_bits = round_to_bf16(in.qkv);
  in.dout_bits = round_to_bf16(in.dout);
  return in;
}

// One forward and one backward (on the forward's own out and lse, as in
// training), into outputs poisoned with NaN: every element must be written.
struct TcResult {
  std::vector<uint16_t> out, dqkv;
  std::vector<float> lse;
};
TcResult run_tc(const Shape& a, const Inputs& in) {
  DeviceBuffer<uint16_t> d_qkv(in.qkv_bits), d_dout(in.dout_bits);
  DeviceBuffer<uint16_t> d_out(std::vector<uint16_t>(a.N() * a.OW(), kBf16NaN));
  DeviceBuffer<float> d_lse(std::vector<float>(a.rows(), NAN));
  moe::kernels::attention_tc_forward(bf(d_out), d_lse.get(), bf(d_qkv), a.B, a.S, a.H, a.hd,
                                     nullptr);
  DeviceBuffer<uint16_t> d_dqkv(std::vector<uint16_t>(a.N() * a.W(), kBf16NaN));
  const size_t ws_bytes = moe::kernels::attention_tc_backward_workspace_bytes(a.B, a.S, a.H, a.hd);
  DeviceBuffer<unsigned char> ws(ws_bytes);
  moe::kernels::attention_tc_backward(bf(d_dqkv), bf(d_dout), bf(d_out), d_lse.get(), bf(d_qkv),
                                      a.B, a.S, a.H, a.hd, ws.get(), ws_bytes, nullptr);
  MOE_CUDA_CHECK(cudaDeviceSynchronize());
  return {d_out.download(), d_dqkv.download(), d_lse.download()};
}

// dqkv's q, k or v part as [N, H*hd].
template <typename T>
std::vector<T> part_of(const std::vector<T>& dqkv, const Shape& a, int part) {
  std::vector<T> p;
  p.reserve(a.N() * a.OW());
  for (size_t n = 0; n < a.N(); ++n)
    for (size_t c = 0; c < a.OW(); ++c) p.push_back(dqkv[n * a.W() + part * a.OW() + c]);
  return p;
}

bool all_finite(const std::vector<float>& v) {
  for (float x : v)
    if (!std::isfinite(x)) return false;
  return true;
}

// hd 128's forward and dq kernels need 104,448 B of shared memory, which
// sm_86 and sm_89 do not have (the backend takes the fp32 kernel there).
bool hd128_supported() { return moe::kernels::attention_tc_supported(128); }
#define SKIP_WITHOUT_HD128() \
  if (!hd128_supported()) GTEST_SKIP() << "head_dim 128 needs more shared memory than this device has"

// Forward and backward against the fp64 reference, and a second run with the
// same bits.
void check_against_reference(const Shape& a, uint64_t seed) {
  SCOPED_TRACE(name(a));
  const Inputs in = make_inputs(a, seed);
  const TcResult r = run_tc(a, in);
  const std::vector<float> out = bf16_to_floats(r.out), dqkv = bf16_to_floats(r.dqkv);
  ASSERT_TRUE(all_finite(out)) << "out: an element is not finite or was not written";
  ASSERT_TRUE(all_finite(r.lse)) << "lse: an element is not finite or was not written";
  ASSERT_TRUE(all_finite(dqkv)) << "dqkv: an element is not finite or was not written";

  std::vector<double> out_ref, lse_ref, dqkv_ref;
  moe::test::reference_attention_forward(out_ref, lse_ref, in.qkv, a.B, a.S, a.H, a.hd);
  moe::test::reference_attention_backward(dqkv_ref, in.qkv, in.dout, a.B, a.S, a.H, a.hd);
  const double e_out = attn_normwise_error(out, out_ref);
  const double e_lse = attn_max_abs_error(r.lse, lse_ref);
  double e[3];
  for (int p = 0; p < 3; ++p)
    e[p] = attn_normwise_error(part_of(dqkv, a, p), part_of(dqkv_ref, a, p));
  std::printf("  %-28s out %.2e  lse %.2e  dq %.2e  dk %.2e  dv %.2e\n", name(a).c_str(), e_out,
              e_lse, e[0], e[1], e[2]);
  EXPECT_LT(e_out, kTol) << "out";
  EXPECT_LT(e_lse, kLseTol) << "lse";
  EXPECT_LT(e[0], kTol) << "dq";
  EXPECT_LT(e[1], kTol) << "dk";
  EXPECT_LT(e[2], kTol) << "dv";

  // The same kernels on the same inputs: no atomics, each output has one
  // writer summing in a fixed order, so the same bits.
  const TcResult again = run_tc(a, in);
  EXPECT_EQ(again.out, r.out) << "forward out differs between two runs";
  EXPECT_EQ(std::memcmp(again.lse.data(), r.lse.data(), r.lse.size() * sizeof(float)), 0)
      << "lse differs between two runs";
  EXPECT_EQ(again.dqkv, r.dqkv) << "backward dqkv differs between two runs";
}

// S = 1; below, at and above the 64-row tiles; not a multiple of any tile;
// several query tiles of the forward (128 rows); B and H above 1.
TEST(GpuAttentionTc, SmallShapesMatchFp64Reference) {
  SKIP_WITHOUT_DEVICE();
  uint64_t seed = 11;
  for (const int hd : {64, 128})
    for (const int S : {1, 17, 64, 100, 257}) {
      if (hd == 128 && !hd128_supported()) continue;
      check_against_reference({2, S, 1, hd}, seed++);
      check_against_reference({1, S, 3, hd}, seed++);
    }
}

TEST(GpuAttentionTc, Seq2048MatchesFp64Reference) {
  SKIP_WITHOUT_DEVICE();
  check_against_reference({1, 2048, 2, 64}, 21);
  if (hd128_supported()) check_against_reference({1, 2048, 2, 128}, 22);
}

// The paper's 1B model: 8 heads of 128, sequence 2048.
TEST(GpuAttentionTc, PresetShapeMatchesFp64Reference) {
  SKIP_WITHOUT_DEVICE();
  SKIP_WITHOUT_HD128();
  check_against_reference({1, 2048, 8, 128}, 31);
}

TEST(GpuAttentionTc, Seq8192MatchesFp64Reference) {
  SKIP_WITHOUT_DEVICE();
  check_against_reference({1, 8192, 1, 64}, 41);
}

// The fp32 SIMT kernel on the same (bf16-valued) inputs: forward on qkv,
// backward on its own out and lse.
TEST(GpuAttentionTc, SmallAgreesWithFp32Kernel) {
  SKIP_WITHOUT_DEVICE();
  const Shape shapes[] = {{2, 100, 2, 64}, {1, 257, 2, 128}, {1, 1, 1, 64}};
  uint64_t seed = 51;
  for (const Shape& a : shapes) {
    SCOPED_TRACE(name(a));
    const Inputs in = make_inputs(a, seed++);
    if (a.hd == 128 && !hd128_supported()) continue;
    const TcResult r = run_tc(a, in);

    DeviceBuffer<float> d_qkv(in.qkv), d_dout(in.dout), d_out(a.N() * a.OW()), d_lse(a.rows());
    moe::kernels::attention_forward(d_out.get(), d_lse.get(), d_qkv.get(), a.B, a.S, a.H, a.hd,
                                    nullptr);
    DeviceBuffer<float> d_dqkv(a.N() * a.W());
    const size_t ws_bytes = moe::kernels::attention_backward_workspace_bytes(a.B, a.S, a.H);
    DeviceBuffer<unsigned char> ws(ws_bytes);
    moe::kernels::attention_backward(d_dqkv.get(), d_dout.get(), d_out.get(), d_lse.get(),
                                     d_qkv.get(), a.B, a.S, a.H, a.hd, ws.get(), ws_bytes, nullptr);
    const std::vector<float> out32 = d_out.download(), lse32 = d_lse.download(),
                             dqkv32 = d_dqkv.download();
    auto as_double = [](const std::vector<float>& v) {
      return std::vector<double>(v.begin(), v.end());
    };

    // The fp32 kernel is within ~1e-6 of fp64 on these inputs, so the
    // fp64-reference tolerances above apply unchanged.
    EXPECT_LT(attn_normwise_error(bf16_to_floats(r.out), as_double(out32)), kTol) << "out";
    EXPECT_LT(attn_max_abs_error(r.lse, as_double(lse32)), kLseTol) << "lse";
    const std::vector<float> dqkv = bf16_to_floats(r.dqkv);
    for (int p = 0; p < 3; ++p)
      EXPECT_LT(attn_normwise_error(part_of(dqkv, a, p), as_double(part_of(dqkv32, a, p))), kTol)
          << "d"
          << "qkv"[p];
  }
}

TEST(GpuAttentionTc, RejectsBadArguments) {
  SKIP_WITHOUT_DEVICE();
  const Shape a{1, 8, 1, 64};
  DeviceBuffer<uint16_t> qkv(a.N() * a.W() + 8), out(a.N() * a.OW() + 8), dout(a.N() * a.OW());
  DeviceBuffer<float> lse(a.rows());
  const size_t ws_bytes = moe::kernels::attention_tc_backward_workspace_bytes(a.B, a.S, a.H, a.hd);
  DeviceBuffer<unsigned char> ws(ws_bytes);
  // Head dims other than 64 and 128, named in the message.
  for (const int hd : {32, 96, 256}) {
    try {
      moe::kernels::attention_tc_forward(bf(out), lse.get(), bf(qkv), 1, 1, 1, hd, nullptr);
      ADD_FAILURE() << "hd " << hd << " accepted";
    } catch (const moe::InternalError& e) {
      EXPECT_NE(std::string(e.what()).find(std::to_string(hd)), std::string::npos) << e.what();
    }
    EXPECT_THROW(moe::kernels::attention_tc_backward(bf(qkv), bf(dout), bf(out), lse.get(), bf(qkv),
                                                     1, 1, 1, hd, ws.get(), ws_bytes, nullptr),
                 moe::InternalError);
  }
  // Misaligned (cp.async and 16-byte stores need 16-byte alignment).
  auto* qkv_off = reinterpret_cast<__nv_bfloat16*>(qkv.get() + 1);
  EXPECT_THROW(
      moe::kernels::attention_tc_forward(bf(out), lse.get(), qkv_off, a.B, a.S, a.H, a.hd, nullptr),
      moe::InternalError);
  // Too small a workspace, null pointers, bad shapes.
  EXPECT_THROW(
      moe::kernels::attention_tc_backward(bf(qkv), bf(dout), bf(out), lse.get(), bf(qkv), a.B, a.S,
                                          a.H, a.hd, ws.get(), ws_bytes - 4, nullptr),
      moe::InternalError);
  EXPECT_THROW(
      moe::kernels::attention_tc_forward(nullptr, lse.get(), bf(qkv), a.B, a.S, a.H, a.hd, nullptr),
      moe::InternalError);
  EXPECT_THROW(
      moe::kernels::attention_tc_forward(bf(out), lse.get(), bf(qkv), 1, 8, 0, 64, nullptr),
      moe::InternalError);
  // Nothing to do: no error, no launch.
  EXPECT_NO_THROW(
      moe::kernels::attention_tc_forward(bf(out), lse.get(), bf(qkv), 0, 8, 1, 64, nullptr));
  EXPECT_NO_THROW(
      moe::kernels::attention_tc_forward(bf(out), lse.get(), bf(qkv), 1, 0, 1, 64, nullptr));
  MOE_CUDA_CHECK(cudaDeviceSynchronize());
}

// moe-bench --op attention's timer on a small shape: positive, finite
// numbers that match the FLOP convention.
TEST(GpuAttentionTc, BenchmarkTimes) {
  SKIP_WITHOUT_DEVICE();
  SKIP_WITHOUT_HD128();
  const moe::AttentionBenchResult r = moe::bench_attention(2, 512, 4, 128, 1, 3);
  EXPECT_GT(r.forward_ms, 0);
  EXPECT_GT(r.backward_ms, 0);
  EXPECT_TRUE(std::isfinite(r.forward_tflops) && r.forward_tflops > 0);
  EXPECT_TRUE(std::isfinite(r.backward_tflops) && r.backward_tflops > 0);
  EXPECT_NEAR(r.forward_tflops * r.forward_ms * 1e9, moe::attention_forward_flops(2, 512, 4, 128),
              1e-6 * moe::attention_forward_flops(2, 512, 4, 128));
  std::printf(
      "  B=2 S=512 H=4 hd=128: forward %.3f ms %.1f TFLOP/s, backward %.3f ms %.1f TFLOP/s\n",
      r.forward_ms, r.forward_tflops, r.backward_ms, r.backward_tflops);
}

}  // namespace

#else  // !MOE_WITH_CUDA

TEST(GpuAttentionTc, Skipped) { GTEST_SKIP() << "built without CUDA"; }

#endif  // MOE_WITH_CUDA
