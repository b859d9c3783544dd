// The tensor-core attention kernels (kernels/attention_tc.cu) on the
// emulated device: the file is rewritten by emu/rewrite.py like every
// kernels/*.cu (its inline PTX becomes calls of emu/src/ptx.cpp, which
// emulates ldmatrix, mma.sync and cp.async from the PTX ISA's definitions)
// and this test calls its real launchers (kernels/attention_tc.h) on
// emulated device memory. So the kernels' fragment layouts, indexing, causal
// masks, tails, tile skipping, cp.async pipelining and the launchers'
// shared-memory opt-in are tested without a GPU, against the fp64 reference
// of tests/support/attention_reference.h, under several legal schedules (thread
// order, warps in lockstep or drifting apart, cp.async landing at issue or
// at the wait), and the results must be the same bits under every one.
//
// What it cannot show: the hardware agreeing with the ISA tables, the PTX
// syntax (nvcc compiles it in CUDA builds: attention_tc_ptx), the tensor
// cores' own summation order and rounding, timing, and races that no
// schedule of the emulator exposes; test_gpu_attention_tc and
// compute-sanitizer on a GPU do that.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "support/attention_reference.h"
#include "attention_tc.h"
#include "core/error.h"
#include "emu/device.h"
#include "emu/ptx.h"

namespace {

using moe::test::attn_max_abs_error;
using moe::test::attn_normwise_error;
using moe::test::bf16_to_floats;
using moe::test::round_to_bf16;

// Device memory with guard zones inside the allocation on both sides (the
// emulator's own red zones lie beyond). Inputs' guards hold NaN, so a stray
// read poisons the result; outputs start as NaN (every element must be
// written) with a canary in the guards (nothing outside may be written).
template <typename T>
class Guarded {
 public:
  static constexpr size_t kGuard = 64;  // elements: keeps 16-byte alignment
  Guarded(size_t n, T fill, T guard) : n_(n), guard_(guard) {
    std::vector<T> v(n + 2 * kGuard, guard);
    std::fill(v.begin() + kGuard, v.begin() + kGuard + n, fill);
    upload(v);
  }
  Guarded(const std::vector<T>& data, T guard) : n_(data.size()), guard_(guard) {
    std::vector<T> v(data.size() + 2 * kGuard, guard);
    std::copy(data.begin(), data.end(), v.begin() + kGuard);
    upload(v);
  }
  ~Guarded() { cudaFree(base_); }
  Guarded(const Guarded&) = delete;
  Guarded& operator=(const Guarded&) = delete;
  T* data() { return base_ + kGuard; }
  size_t bytes() const { return n_ * sizeof(T); }
  std::vector<T> values() const {
    const std::vector<T> all = download();
    return {all.begin() + kGuard, all.begin() + kGuard + n_};
  }
  bool guards_intact() const {
    const std::vector<T> all = download();
    for (size_t i = 0; i < kGuard; ++i)
      if (!same(all[i], guard_) || !same(all[kGuard + n_ + i], guard_)) return false;
    return true;
  }

 private:
  void upload(const std::vector<T>& v) {
    EXPECT_EQ(cudaMalloc(&base_, v.size() * sizeof(T)), cudaSuccess);
    EXPECT_EQ(cudaMemcpy(base_, v.data(), v.size() * sizeof(T), cudaMemcpyHostToDevice), cudaSuccess);
  }
  std::vector<T> download() const {
    std::vector<T> v(n_ + 2 * kGuard);
    EXPECT_EQ(cudaMemcpy(v.data(), base_, v.size() * sizeof(T), cudaMemcpyDeviceToHost), cudaSuccess)
        << emu::fault_message();
    return v;
  }
  static bool same(T a, T b) { return std::memcmp(&a, &b, sizeof(T)) == 0; }
  size_t n_;
  T guard_;
  T* base_ = nullptr;
};

constexpr uint16_t kBf16NaN = 0xFFFF, kBf16Canary = 0x1234;
const float kF32NaN = std::nanf("");
const float kF32Canary = 12345.f;

__nv_bfloat16* bf(uint16_t* p) { return reinterpret_cast<__nv_bfloat16*>(p); }

struct Case {
  int B, S, H, hd;
  double q_sd = 1.0;  // larger: peakier softmax, exercises the online rescaling
  uint64_t seed = 0;  // 0: derived from the shape
};

// One legal timing of the emulated device.
struct Timing {
  emu::Schedule schedule;
  emu::CpAsync copies = emu::CpAsync::Lazy;
};

std::string name(const Case& c, const Timing& t) {
  const char* order[] = {"forward", "reverse", "random"};
  return "B=" + std::to_string(c.B) + " S=" + std::to_string(c.S) + " H=" + std::to_string(c.H) +
         " hd=" + std::to_string(c.hd) + " q_sd=" + std::to_string(c.q_sd).substr(0, 3) + " " +
         order[int(t.schedule.order)] + (t.schedule.warp_greedy ? ",greedy" : "") +
         (t.copies == emu::CpAsync::Eager ? " eager" : " lazy");
}

class EmuAttentionTc : public ::testing::Test {
 protected:
  void SetUp() override { emu::reset_device(); }
  void TearDown() override {
    emu::reset_device();
    emu::schedule() = emu::Schedule{};
    emu::cp_async_mode() = emu::CpAsync::Lazy;
  }
};

// The bits of out, lse and dqkv of one run (to compare timings).
struct Bits {
  std::vector<uint16_t> out, dqkv;
  std::vector<float> lse;
};

// Forward and backward of one case through the real launchers against the
// fp64 reference. The backward takes the emulated forward's out and lse, as
// a training step would. Tolerances, derived in test_gpu_attention_tc.cpp
// (which shares them): P and dS are rounded to bf16 for the tensor-core
// products and results are stored in bf16, each up to 2^-9 relative per
// element, so normwise (max error / max |reference|) 1e-2 for out, dq, dk,
// dv; lse is fp32 (~1e-6). The emulation is deterministic (mma as a fixed
// std::fma chain, no BLAS, the reference's rows each summed in one fixed
// order), so what it measures, 1.6e-3 .. 6.9e-3 (dk at S 64) and lse <=
// 4.4e-6, is the same on every machine.
Bits check_case(const Case& c, const Timing& timing) {
  SCOPED_TRACE(name(c, timing));
  emu::reset_device();
  emu::schedule() = timing.schedule;
  emu::cp_async_mode() = timing.copies;
  std::mt19937_64 rng(c.seed ? c.seed : 1000 + c.S * 7 + c.hd + c.B * 3 + c.H);
  std::normal_distribution<double> nd(0.0, 1.0);
  const size_t N = static_cast<size_t>(c.B) * c.S, OW = static_cast<size_t>(c.H) * c.hd, W = 3 * OW;
  std::vector<float> qkv(N * W), dout(N * OW);
  for (size_t n = 0; n < N; ++n)
    for (size_t col = 0; col < W; ++col)
      qkv[n * W + col] = static_cast<float>(nd(rng) * (col < OW ? c.q_sd : 1.0));
  for (auto& x : dout) x = static_cast<float>(nd(rng));
  const std::vector<uint16_t> qkv_bits = round_to_bf16(qkv), dout_bits = round_to_bf16(dout);

  std::vector<double> out_ref, lse_ref, dqkv_ref;
  moe::test::reference_attention_forward(out_ref, lse_ref, qkv, c.B, c.S, c.H, c.hd);
  moe::test::reference_attention_backward(dqkv_ref, qkv, dout, c.B, c.S, c.H, c.hd);

  Guarded<uint16_t> g_qkv(qkv_bits, kBf16NaN), g_dout(dout_bits, kBf16NaN);
  Guarded<uint16_t> g_out(N * OW, kBf16NaN, kBf16Canary), g_dqkv(N * W, kBf16NaN, kBf16Canary);
  Guarded<float> g_lse(static_cast<size_t>(c.B) * c.H * c.S, kF32NaN, kF32Canary);
  Guarded<float> g_D(static_cast<size_t>(c.B) * c.H * c.S, kF32NaN, kF32Canary);

  Bits bits;
  moe::kernels::attention_tc_forward(bf(g_out.data()), g_lse.data(), bf(g_qkv.data()), c.B, c.S, c.H, c.hd, 0);
  EXPECT_EQ(cudaDeviceSynchronize(), cudaSuccess) << emu::fault_message();
  EXPECT_TRUE(g_out.guards_intact()) << "forward wrote outside out";
  EXPECT_TRUE(g_lse.guards_intact()) << "forward wrote outside lse";
  bits.out = g_out.values();
  bits.lse = g_lse.values();
  const std::vector<float> out = bf16_to_floats(bits.out);
  const double out_err = attn_normwise_error(out, out_ref);
  const double lse_err = attn_max_abs_error(bits.lse, lse_ref);
  EXPECT_LT(out_err, 1e-2) << "out (a NaN means an element was not written)";
  EXPECT_LT(lse_err, 1e-2) << "lse";

  EXPECT_GE(g_D.bytes(), moe::kernels::attention_tc_backward_workspace_bytes(c.B, c.S, c.H, c.hd));
  moe::kernels::attention_tc_backward(bf(g_dqkv.data()), bf(g_dout.data()), bf(g_out.data()), g_lse.data(),
                                      bf(g_qkv.data()), c.B, c.S, c.H, c.hd, g_D.data(), g_D.bytes(), 0);
  EXPECT_EQ(cudaDeviceSynchronize(), cudaSuccess) << emu::fault_message();
  EXPECT_TRUE(g_dqkv.guards_intact()) << "backward wrote outside dqkv";
  EXPECT_TRUE(g_D.guards_intact()) << "backward wrote outside the workspace";
  bits.dqkv = g_dqkv.values();
  const std::vector<float> dqkv = bf16_to_floats(bits.dqkv);
  double part_err[3];
  for (int part = 0; part < 3; ++part) {
    std::vector<float> got;
    std::vector<double> ref;
    for (size_t n = 0; n < N; ++n)
      for (size_t col = 0; col < OW; ++col) {
        got.push_back(dqkv[n * W + part * OW + col]);
        ref.push_back(dqkv_ref[n * W + part * OW + col]);
      }
    part_err[part] = attn_normwise_error(got, ref);
    EXPECT_LT(part_err[part], 1e-2) << "d" << "qkv"[part];
  }
  std::printf("  %-52s out %.2e lse %.2e dq %.2e dk %.2e dv %.2e\n", name(c, timing).c_str(), out_err, lse_err,
              part_err[0], part_err[1], part_err[2]);
  return bits;
}

void expect_same_bits(const Bits& a, const Bits& b, const std::string& what) {
  EXPECT_TRUE(a.out == b.out) << what << ": out differs";
  EXPECT_TRUE(a.dqkv == b.dqkv) << what << ": dqkv differs";
  EXPECT_EQ(std::memcmp(a.lse.data(), b.lse.data(), a.lse.size() * sizeof(float)), 0) << what << ": lse differs";
}

const Timing kDefault{};  // forward order, warps in lockstep, lazy copies

// Shapes: S = 1; S below, at and above one tile; tails in the last query tile
// (forward 128 rows, dq 64, dkdv query tiles 64 / 32) and key tile (64); whole
// warps past S; several batches and heads; a peaky softmax.
const Case kCases[] = {
    {1, 1, 1, 64},  {1, 17, 1, 64},  {1, 64, 1, 64},       {1, 100, 1, 64},       {1, 130, 1, 64},
    {1, 1, 1, 128}, {1, 17, 1, 128}, {1, 64, 1, 128},      {1, 100, 1, 128},      {1, 130, 1, 128},
    {2, 70, 3, 64}, {2, 33, 2, 128}, {1, 150, 1, 64, 4.0}, {1, 150, 1, 128, 4.0},
};

// Each shape under the default timing and under one that moves everything
// the other way: threads, warps and blocks in reverse order, warps drifting
// apart between barriers, copies landing at issue.
TEST_F(EmuAttentionTc, MatchesFp64Reference) {
  const Timing adversarial{{emu::Order::Reverse, true, 1}, emu::CpAsync::Eager};
  for (const Case& c : kCases) {
    const Bits first = check_case(c, kDefault);
    expect_same_bits(first, check_case(c, adversarial), name(c, adversarial));
  }
}

// Other legal timings of the same code: copies landing at issue, threads
// (and warps, blocks) resumed in the opposite or a random order, warps
// running ahead of each other between barriers (a missing barrier or
// cp.async wait shows up in one of these). The kernels have one writer per
// element and fixed summation orders, so every timing gives the same bits.
TEST_F(EmuAttentionTc, OtherSchedulesGiveTheSameBits) {
  using emu::Order;
  const Timing timings[] = {
      {{Order::Forward, false, 1}, emu::CpAsync::Eager}, {{Order::Reverse, false, 1}, emu::CpAsync::Eager},
      {{Order::Reverse, false, 1}, emu::CpAsync::Lazy},  {{Order::Forward, true, 1}, emu::CpAsync::Lazy},
      {{Order::Forward, true, 1}, emu::CpAsync::Eager},  {{Order::Reverse, true, 1}, emu::CpAsync::Lazy},
      {{Order::Random, true, 7}, emu::CpAsync::Lazy},
  };
  const Case cases[] = {{1, 130, 1, 64}, {1, 100, 1, 128}, {2, 33, 2, 128}};
  for (const Case& c : cases) {
    const Bits first = check_case(c, kDefault);
    for (const Timing& t : timings) expect_same_bits(first, check_case(c, t), name(c, t));
  }
}

// A longer sequence (three forward query tiles, five key tiles), hd 64 only
// (CPU time).
TEST_F(EmuAttentionTc, LongerSequence) { check_case({1, 257, 1, 64}, kDefault); }

// The launchers' own checks run on the emulated device too: an unsupported
// head dimension is refused before anything is launched, and B = 0 or S = 0
// launches nothing.
TEST_F(EmuAttentionTc, LauncherArgumentChecks) {
  Guarded<uint16_t> qkv(std::vector<uint16_t>(3 * 96, 0), kBf16NaN), out(96, kBf16NaN, kBf16Canary);
  Guarded<float> lse(1, kF32NaN, kF32Canary);
  EXPECT_THROW(moe::kernels::attention_tc_forward(bf(out.data()), lse.data(), bf(qkv.data()), 1, 1, 1, 96, 0),
               moe::InternalError);
  moe::kernels::attention_tc_forward(bf(out.data()), lse.data(), bf(qkv.data()), 0, 1, 1, 64, 0);
  moe::kernels::attention_tc_forward(bf(out.data()), lse.data(), bf(qkv.data()), 1, 0, 1, 64, 0);
  EXPECT_EQ(cudaDeviceSynchronize(), cudaSuccess) << emu::fault_message();
  EXPECT_EQ(std::isnan(lse.values()[0]), true) << "nothing written for an empty shape";
}

}  // namespace
