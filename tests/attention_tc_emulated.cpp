// The tensor-core attention kernels of kernels/attention_tc.cu, run on the CPU:
// the file is compiled as C++ (MOE_ATTN_TC_EMULATE) against
// tests/attention_tc_emulator.h, which emulates ldmatrix, mma.sync, cp.async,
// shuffles and barriers from the PTX ISA's definitions, one fiber per CUDA
// thread. So the kernels' fragment layouts, indexing, causal masks, tails,
// tile skipping and cp.async pipelining are tested without a GPU, against the
// fp64 reference of tests/attention_reference.h, with the launch geometry of
// the real launchers. Every build runs it (label cpu; it needs no CUDA).
//
// What it cannot show: the hardware agreeing with the ISA tables, the PTX
// syntax (nvcc compiles it in CUDA builds), timing, and races that no
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

#include "attention_reference.h"
// The emulator defines the CUDA names the kernels use; then the kernels.
#include "attention_tc_emulator.h"
#define MOE_ATTN_TC_EMULATE 1
#include "../kernels/attention_tc.cu"

namespace {

namespace tc = moe::kernels::attn_tc_emulated;
using attn_emu::Dim3;
using attn_emu::Options;
using moe::test::attn_max_abs_error;
using moe::test::attn_normwise_error;
using moe::test::bf16_to_floats;
using moe::test::round_to_bf16;

// Host memory with guard zones on both sides. Inputs' guards hold NaN, so a
// stray read poisons the result; outputs start as NaN (every element must be
// written) with a canary in the guards (nothing outside may be written).
template <typename T>
class Guarded {
 public:
  static constexpr size_t kGuard = 64;  // elements: keeps 16-byte alignment
  Guarded(size_t n, T fill, T guard) : n_(n), guard_(guard), v_(n + 2 * kGuard, guard) {
    std::fill(v_.begin() + kGuard, v_.begin() + kGuard + n, fill);
  }
  Guarded(const std::vector<T>& data, T guard) : Guarded(data.size(), T{}, guard) {
    std::copy(data.begin(), data.end(), v_.begin() + kGuard);
  }
  T* data() { return v_.data() + kGuard; }
  size_t bytes() const { return n_ * sizeof(T); }
  std::vector<T> values() const { return {v_.begin() + kGuard, v_.begin() + kGuard + n_}; }
  bool guards_intact() const {
    for (size_t i = 0; i < kGuard; ++i)
      if (!same(v_[i], guard_) || !same(v_[kGuard + n_ + i], guard_)) return false;
    return true;
  }

 private:
  static bool same(T a, T b) { return std::memcmp(&a, &b, sizeof(T)) == 0; }
  size_t n_;
  T guard_;
  std::vector<T> v_;
};

constexpr uint16_t kBf16NaN = 0xFFFF, kBf16Canary = 0x1234;
const float kF32NaN = std::nanf("");
const float kF32Canary = 12345.f;

__nv_bfloat16* bf(uint16_t* p) { return reinterpret_cast<__nv_bfloat16*>(p); }

float scale_of(int hd) { return static_cast<float>(1.0 / std::sqrt(static_cast<double>(hd))); }
float scale_log2_of(int hd) {
  return static_cast<float>(1.4426950408889634 / std::sqrt(static_cast<double>(hd)));
}

unsigned tiles(int S, int rows) { return static_cast<unsigned>((S + rows - 1) / rows); }

// The launch geometry of attention_tc_forward / attention_tc_backward.
template <int HD>
void emu_forward(uint16_t* out, float* lse, uint16_t* qkv, int B, int S, int H, const Options& o) {
  const Dim3 grid{static_cast<unsigned>(B * H), tiles(S, tc::FwdCfg::BM), 1};
  attn_emu::launch(grid, tc::FwdCfg::kThreads, tc::fwd_smem_bytes<HD>(), o, [&] {
    tc::attn_tc_fwd_kernel<HD>(bf(out), lse, bf(qkv), S, H, scale_log2_of(HD));
  });
}

template <int HD>
void emu_backward(uint16_t* dqkv, uint16_t* dout, uint16_t* out, float* lse, uint16_t* qkv,
                  float* Dv, int B, int S, int H, const Options& o) {
  const int64_t rows = static_cast<int64_t>(B) * H * S;
  attn_emu::launch(Dim3{static_cast<unsigned>((rows + 3) / 4), 1, 1}, 128, 0, o,
                   [&] { tc::attn_tc_rowdot_kernel<HD>(Dv, bf(dout), bf(out), rows, S, H); });
  const float scale = scale_of(HD), scale_log2 = scale_log2_of(HD);
  attn_emu::launch(Dim3{static_cast<unsigned>(B * H), tiles(S, tc::DqCfg::BM), 1},
                   tc::DqCfg::kThreads, tc::dq_smem_bytes<HD>(), o, [&] {
                     tc::attn_tc_dq_kernel<HD>(bf(dqkv), bf(dout), lse, Dv, bf(qkv), S, H, scale,
                                               scale_log2);
                   });
  using Dkdv = tc::DkdvCfg<HD>;
  attn_emu::launch(Dim3{static_cast<unsigned>(B * H), tiles(S, Dkdv::BN), 1}, Dkdv::kThreads,
                   tc::dkdv_smem_bytes<HD>(), o, [&] {
                     tc::attn_tc_dkdv_kernel<HD>(bf(dqkv), bf(dout), lse, Dv, bf(qkv), S, H, scale,
                                                 scale_log2);
                   });
}

struct Case {
  int B, S, H, hd;
  double q_sd = 1.0;  // larger: peakier softmax, exercises the online rescaling
  uint64_t seed = 0;  // 0: derived from the shape
};

std::string name(const Case& c, const Options& o) {
  return "B=" + std::to_string(c.B) + " S=" + std::to_string(c.S) + " H=" + std::to_string(c.H) +
         " hd=" + std::to_string(c.hd) + " q_sd=" + std::to_string(c.q_sd) +
         (o.eager_copies ? " eager" : " lazy") + (o.reverse_order ? " reverse" : "") +
         (o.warp_greedy ? " warp-greedy" : "");
}

// Forward and backward of one case against the fp64 reference. The backward
// takes the emulated forward's out and lse, as a training step would.
// Tolerances, derived in test_gpu_attention_tc.cpp (which shares them): P and
// dS are rounded to bf16 for the tensor-core products and results are stored
// in bf16, each up to 2^-9 relative per element, so normwise (max error / max
// |reference|) 1e-2 for out, dq, dk, dv; lse is fp32 (~1e-6). The emulation
// is deterministic (mma as a fixed std::fma chain, no BLAS, the reference's
// rows each summed in one fixed order), so what it measures, 1.6e-3 .. 6.9e-3
// (dk at S 64) and lse <= 4.4e-6, is the same on every machine.
void check_case(const Case& c, const Options& o) {
  SCOPED_TRACE(name(c, o));
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
  attn_emu::clear_readable();
  attn_emu::register_readable(g_qkv.data(), g_qkv.bytes());
  attn_emu::register_readable(g_dout.data(), g_dout.bytes());

  if (c.hd == 64)
    emu_forward<64>(g_out.data(), g_lse.data(), g_qkv.data(), c.B, c.S, c.H, o);
  else
    emu_forward<128>(g_out.data(), g_lse.data(), g_qkv.data(), c.B, c.S, c.H, o);
  EXPECT_TRUE(g_out.guards_intact()) << "forward wrote outside out";
  EXPECT_TRUE(g_lse.guards_intact()) << "forward wrote outside lse";
  const std::vector<float> out = bf16_to_floats(g_out.values()), lse = g_lse.values();
  const double out_err = attn_normwise_error(out, out_ref);
  const double lse_err = attn_max_abs_error(lse, lse_ref);
  EXPECT_LT(out_err, 1e-2) << "out (a NaN means an element was not written)";
  EXPECT_LT(lse_err, 1e-2) << "lse";

  if (c.hd == 64)
    emu_backward<64>(g_dqkv.data(), g_dout.data(), g_out.data(), g_lse.data(), g_qkv.data(),
                     g_D.data(), c.B, c.S, c.H, o);
  else
    emu_backward<128>(g_dqkv.data(), g_dout.data(), g_out.data(), g_lse.data(), g_qkv.data(),
                      g_D.data(), c.B, c.S, c.H, o);
  EXPECT_TRUE(g_dqkv.guards_intact()) << "backward wrote outside dqkv";
  EXPECT_TRUE(g_D.guards_intact()) << "backward wrote outside the workspace";
  const std::vector<float> dqkv = bf16_to_floats(g_dqkv.values());
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
    EXPECT_LT(part_err[part], 1e-2) << "d"
                                    << "qkv"[part];
  }
  std::printf("  %-44s out %.2e lse %.2e dq %.2e dk %.2e dv %.2e\n", name(c, o).c_str(), out_err,
              lse_err, part_err[0], part_err[1], part_err[2]);
}

// Shapes: S = 1; S below, at and above one tile; tails in the last query tile
// (forward 128 rows, dq 64, dkdv query tiles 64 / 32) and key tile (64); whole
// warps past S; several batches and heads; a peaky softmax.
const Case kCases[] = {
    {1, 1, 1, 64},  {1, 17, 1, 64},  {1, 64, 1, 64},       {1, 100, 1, 64},       {1, 130, 1, 64},
    {1, 1, 1, 128}, {1, 17, 1, 128}, {1, 64, 1, 128},      {1, 100, 1, 128},      {1, 130, 1, 128},
    {2, 70, 3, 64}, {2, 33, 2, 128}, {1, 150, 1, 64, 4.0}, {1, 150, 1, 128, 4.0},
};

TEST(AttentionTcEmulated, MatchesFp64Reference) {
  for (const Case& c : kCases) check_case(c, Options{});
}

// Other legal timings of the same code: copies landing at issue, threads
// resumed in the opposite order, warps running ahead of each other between
// barriers (a missing barrier or cp.async wait shows up in one of these).
TEST(AttentionTcEmulated, OtherSchedules) {
  const Case cases[] = {{1, 130, 1, 64}, {1, 100, 1, 128}, {2, 33, 2, 128}};
  for (const Case& c : cases) {
    check_case(c, Options{true, false, false});
    check_case(c, Options{true, true, false});
    check_case(c, Options{false, true, false});
    check_case(c, Options{false, false, true});
    check_case(c, Options{true, false, true});
    check_case(c, Options{false, true, true});
  }
}

// The longer sequences of the GPU test's list, hd 64 only (CPU time).
TEST(AttentionTcEmulated, LongerSequence) { check_case({1, 257, 1, 64}, Options{}); }

// The warp tile products alone: ldmatrix + mma against a plain matrix product,
// so a failure above can be told apart from one in the building blocks.
TEST(AttentionTcEmulated, WarpTileProducts) {
  constexpr int HD = 64, NR = 16, LD = HD + tc::kPad;
  std::mt19937_64 rng(3);
  std::normal_distribution<double> nd(0.0, 1.0);
  std::vector<float> A(16 * HD), Bm(NR * HD), P(16 * NR);
  for (auto* v : {&A, &Bm, &P})
    for (auto& x : *v) x = static_cast<float>(nd(rng));
  const auto A_bits = round_to_bf16(A), B_bits = round_to_bf16(Bm), P_bits = round_to_bf16(P);
  // abt[r][n] = sum_d A[r][d] B[n][d] ;  ab[r][d] = sum_k P[r][k] B[k][d]
  std::vector<double> abt(16 * NR, 0.0), ab(16 * HD, 0.0);
  for (int r = 0; r < 16; ++r) {
    for (int n = 0; n < NR; ++n)
      for (int d = 0; d < HD; ++d) abt[r * NR + n] += double(A[r * HD + d]) * Bm[n * HD + d];
    for (int d = 0; d < HD; ++d)
      for (int k = 0; k < NR; ++k) ab[r * HD + d] += double(P[r * NR + k]) * Bm[k * HD + d];
  }
  std::vector<float> got_abt(16 * NR), got_ab(16 * HD);
  const size_t smem = sizeof(uint16_t) * (16 + NR) * LD;
  attn_emu::launch(Dim3{1, 1, 1}, 32, smem, Options{}, [&] {
    auto* As = reinterpret_cast<__nv_bfloat16*>(tc::dynamic_smem());
    auto* Bs = As + 16 * LD;
    const int lane = static_cast<int>(threadIdx.x);
    for (int i = lane; i < 16 * HD; i += 32) As[i / HD * LD + i % HD].bits = A_bits[i];
    for (int i = lane; i < NR * HD; i += 32) Bs[i / HD * LD + i % HD].bits = B_bits[i];
    __syncwarp();
    float acc[NR / 8][4] = {};
    tc::warp_abt_smem<HD, NR>(acc, As, Bs, lane);
    const int g = lane >> 2, t = lane & 3;
    for (int nb = 0; nb < NR / 8; ++nb)
      for (int c = 0; c < 4; ++c)
        got_abt[(g + 8 * (c >> 1)) * NR + nb * 8 + 2 * t + (c & 1)] = acc[nb][c];
    // P as accumulator tiles -> A fragments -> P B.
    float pc[NR / 8][4];
    for (int nb = 0; nb < NR / 8; ++nb)
      for (int c = 0; c < 4; ++c) pc[nb][c] = P[(g + 8 * (c >> 1)) * NR + nb * 8 + 2 * t + (c & 1)];
    uint32_t pa[NR / 16][4];
    tc::acc_to_a<NR>(pa, pc);
    float o[HD / 8][4] = {};
    tc::warp_ab_reg<HD, NR>(o, pa, Bs, lane);
    for (int nd = 0; nd < HD / 8; ++nd)
      for (int c = 0; c < 4; ++c)
        got_ab[(g + 8 * (c >> 1)) * HD + nd * 8 + 2 * t + (c & 1)] = o[nd][c];
  });
  // bf16 products are exact in fp32; the emulated mma adds them in a fixed
  // order (K 64 and 16): 1.6e-7 and 4.4e-8 normwise for this data.
  // Deterministic, no BLAS; any order would be within K u sum|terms| (1.1e-5
  // and 1.4e-6 here), and a fragment-layout bug is an O(1) error.
  EXPECT_LT(attn_normwise_error(got_abt, abt), 1e-6);
  EXPECT_LT(attn_normwise_error(got_ab, ab), 1e-6);
}

// The emulator itself refuses what the hardware would not do.
TEST(AttentionTcEmulated, EmulatorCatchesMisuse) {
  // A collective that only half of a warp reaches.
  EXPECT_THROW(attn_emu::launch(Dim3{1, 1, 1}, 32, 0, Options{},
                                [] {
                                  if (threadIdx.x < 16) __syncwarp();
                                }),
               std::runtime_error);
  // __syncthreads after some threads returned.
  EXPECT_THROW(attn_emu::launch(Dim3{1, 1, 1}, 64, 0, Options{},
                                [] {
                                  if (threadIdx.x >= 32) return;
                                  __syncthreads();
                                }),
               std::runtime_error);
  // ldmatrix outside shared memory.
  EXPECT_THROW(
      attn_emu::launch(Dim3{1, 1, 1}, 32, 256, Options{},
                       [] {
                         uint32_t r[4];
                         tc::ldsm_x4(r, reinterpret_cast<__nv_bfloat16*>(tc::dynamic_smem() + 256));
                       }),
      std::runtime_error);
  // cp.async from memory that is not an input.
  attn_emu::clear_readable();
  std::vector<uint16_t> src(64);
  EXPECT_THROW(attn_emu::launch(Dim3{1, 1, 1}, 32, 512, Options{},
                                [&] {
                                  auto* s = reinterpret_cast<__nv_bfloat16*>(tc::dynamic_smem());
                                  tc::cp_async_16(s + 8 * threadIdx.x, bf(src.data()), true);
                                }),
               std::runtime_error);
}

}  // namespace
