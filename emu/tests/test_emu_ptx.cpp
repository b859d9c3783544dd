// The PTX emulation (emu/src/ptx.cpp) instruction by instruction, on tiny
// cases computed by hand from the PTX ISA's definitions: ldmatrix's row
// addresses and register layout (.x1, .x2, .x4, .trans, generic
// addressing), mma.sync m16n8k16's fragment tables, the attention kernels'
// two warp tile products, cp.async groups under lazy and eager landing,
// and the faults each instruction must raise.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "support/attention_reference.h"
#include "emu_test_util.h"
#include "emu/device.h"
#include "emu/ptx.h"
#include "ptx_test_kernels.h"

namespace {

using emu_test::device;
using emu_test::host;

class EmuPtx : public ::testing::Test {
 protected:
  void SetUp() override {
    emu::reset_device();
    emu::schedule() = emu::Schedule{};
    emu::cp_async_mode() = emu::CpAsync::Lazy;
  }
  void TearDown() override {
    emu::reset_device();
    emu::schedule() = emu::Schedule{};
    emu::cp_async_mode() = emu::CpAsync::Lazy;
  }
};

std::vector<emu::Schedule> schedules() {
  return {emu::Schedule{emu::Order::Forward, false, 1}, emu::Schedule{emu::Order::Reverse, false, 1},
          emu::Schedule{emu::Order::Random, true, 5}};
}

// ldmatrix: lane i supplies the address of row i % 8 of matrix i / 8; lane L
// receives in register m the elements (L/4, 2(L%4)) and (L/4, 2(L%4)+1) of
// matrix m, the first in the low half (.trans: (2(L%4), L/4) and
// (2(L%4)+1, L/4)).
TEST_F(EmuPtx, LdmatrixFollowsTheIsaTable) {
  std::vector<uint16_t> rows(32 * 8);
  for (int r = 0; r < 32; ++r)
    for (int c = 0; c < 8; ++c) rows[r * 8 + c] = uint16_t((r << 8) | (c + 1));
  auto element = [&](int m, int r, int c) -> uint32_t {  // M_m[r][c]: the row lane 8m+r pointed at
    const int lane = 8 * m + r;
    return rows[((5 * lane + 3) % 32) * 8 + c];
  };
  struct Variant {
    int id, num;
    bool trans;
  };
  for (const Variant v : {Variant{0, 4, false}, Variant{1, 4, true}, Variant{2, 1, false}, Variant{3, 2, true},
                          Variant{4, 4, false}}) {
    for (const emu::Schedule& s : schedules()) {
      emu::schedule() = s;
      const uint16_t* d_rows = device(rows);
      uint32_t* d_out = device(std::vector<uint32_t>(128, 0xDEADBEEFu));
      emu_ptx_test::ldmatrix(d_out, d_rows, v.id, 0);
      const std::vector<uint32_t> out = host(d_out, 128);
      for (int L = 0; L < 32; ++L)
        for (int m = 0; m < 4; ++m) {
          uint32_t want = 0;
          if (m < v.num) {
            const uint32_t lo = v.trans ? element(m, 2 * (L % 4), L / 4) : element(m, L / 4, 2 * (L % 4));
            const uint32_t hi = v.trans ? element(m, 2 * (L % 4) + 1, L / 4) : element(m, L / 4, 2 * (L % 4) + 1);
            want = lo | hi << 16;
          }
          ASSERT_EQ(out[L * 4 + m], want) << "variant " << v.id << " lane " << L << " register " << m;
        }
    }
  }
}

// The fragments of "Matrix Fragments for mma.m16n8k16 with floating point
// type", as the ISA states them (groupID = lane >> 2, threadID_in_group =
// lane % 4): A's a_i (i = 0..7, two per register, the lower index in the
// low half): row groupID for a0, a1, a4, a5 and groupID + 8 for a2, a3, a6,
// a7; column threadID_in_group * 2 + (i & 1), + 8 for i >= 4. B's b_i (i =
// 0..3): row threadID_in_group * 2 + (i & 1), + 8 for i >= 2; column
// groupID. C's and D's c_i: row groupID for c0, c1, + 8 for c2, c3;
// column threadID_in_group * 2 + (i & 1).
struct Fragments {
  std::vector<uint32_t> a = std::vector<uint32_t>(128), b = std::vector<uint32_t>(64);
  std::vector<float> c = std::vector<float>(128);
};
Fragments pack(const float (&A)[16][16], const float (&B)[16][8], const float (&C)[16][8]) {
  Fragments f;
  for (int lane = 0; lane < 32; ++lane) {
    const int group = lane >> 2, tig = lane % 4;
    for (int i = 0; i < 8; ++i) {
      const int row = (i == 0 || i == 1 || i == 4 || i == 5) ? group : group + 8;
      const int col = tig * 2 + (i & 1) + (i >= 4 ? 8 : 0);
      f.a[lane * 4 + i / 2] |= uint32_t(moe::test::bf16_bits(A[row][col])) << (16 * (i & 1));
    }
    for (int i = 0; i < 4; ++i) {
      const int row = tig * 2 + (i & 1) + (i >= 2 ? 8 : 0);
      f.b[lane * 2 + i / 2] |= uint32_t(moe::test::bf16_bits(B[row][group])) << (16 * (i & 1));
    }
    for (int i = 0; i < 4; ++i) f.c[lane * 4 + i] = C[i < 2 ? group : group + 8][tig * 2 + (i & 1)];
  }
  return f;
}

TEST_F(EmuPtx, MmaFollowsTheFragmentTables) {
  for (int trial = 0; trial < 2; ++trial) {
    // Small integers: every product and sum is exact, so D is known exactly.
    float A[16][16], B[16][8], C[16][8];
    for (int r = 0; r < 16; ++r)
      for (int k = 0; k < 16; ++k) A[r][k] = trial == 0 ? float(r == k) : float((r + 2 * k) % 5 - 2);
    for (int k = 0; k < 16; ++k)
      for (int n = 0; n < 8; ++n) B[k][n] = trial == 0 ? float(k * 8 + n + 1) : float((3 * k + n) % 7 - 3);
    for (int r = 0; r < 16; ++r)
      for (int n = 0; n < 8; ++n) C[r][n] = float(1000 * r + n) + 0.5f;
    const Fragments f = pack(A, B, C);
    float* d_d = device(std::vector<float>(128, 0.f));
    emu_ptx_test::mma(d_d, device(f.a), device(f.b), device(f.c), 0);
    const std::vector<float> d = host(d_d, 128);
    for (int lane = 0; lane < 32; ++lane)
      for (int i = 0; i < 4; ++i) {
        const int row = (i < 2 ? lane >> 2 : (lane >> 2) + 8), col = (lane % 4) * 2 + (i & 1);
        float want = C[row][col];
        for (int k = 0; k < 16; ++k) want += A[row][k] * B[k][col];
        if (trial == 0) {
          ASSERT_EQ(want, B[row][col] + C[row][col]);  // A = identity
        }
        EXPECT_EQ(d[lane * 4 + i], want) << "trial " << trial << " D[" << row << "][" << col << "]";
      }
  }
}

// The warp tile products of the attention kernels, ldmatrix + mma against a
// plain matrix product, so that a failure of the kernels' test can be told
// apart from one in the building blocks.
TEST_F(EmuPtx, WarpTileProducts) {
  constexpr int HD = 64, NR = 16;
  std::mt19937_64 rng(3);
  std::normal_distribution<double> nd(0.0, 1.0);
  std::vector<float> A(16 * HD), Bm(NR * HD), P(16 * NR);
  for (auto* v : {&A, &Bm, &P})
    for (auto& x : *v) x = static_cast<float>(nd(rng));
  const auto A_bits = moe::test::round_to_bf16(A), B_bits = moe::test::round_to_bf16(Bm);
  moe::test::round_to_bf16(P);  // the kernel packs P to bf16: the reference uses those values
  // abt[r][n] = sum_d A[r][d] B[n][d] ;  ab[r][d] = sum_k P[r][k] B[k][d]
  std::vector<double> abt(16 * NR, 0.0), ab(16 * HD, 0.0);
  for (int r = 0; r < 16; ++r) {
    for (int n = 0; n < NR; ++n)
      for (int d = 0; d < HD; ++d) abt[r * NR + n] += double(A[r * HD + d]) * Bm[n * HD + d];
    for (int d = 0; d < HD; ++d)
      for (int k = 0; k < NR; ++k) ab[r * HD + d] += double(P[r * NR + k]) * Bm[k * HD + d];
  }
  float* d_abt = device(std::vector<float>(16 * NR, 0.f));
  float* d_ab = device(std::vector<float>(16 * HD, 0.f));
  emu_ptx_test::tile_products(d_abt, d_ab, device(A_bits), device(B_bits), device(P), 0);
  // bf16 products are exact in fp32; the emulated mma adds them in a fixed
  // order (K 64 and 16): 1.6e-7 and 4.4e-8 normwise for this data.
  // Deterministic, no BLAS; any order would be within K u sum|terms| (1.1e-5
  // and 1.4e-6 here), and a fragment-layout bug is an O(1) error.
  EXPECT_LT(moe::test::attn_normwise_error(host(d_abt, 16 * NR), abt), 1e-6);
  EXPECT_LT(moe::test::attn_normwise_error(host(d_ab, 16 * HD), ab), 1e-6);
}

// cp.async: a thread's copies land at its wait_group (lazy) or at issue
// (eager); wait_group 1 lands all groups but the newest; src-size bytes are
// read and the rest zero-filled; wait_all lands everything.
TEST_F(EmuPtx, CpAsyncGroupsLazyAndEager) {
  std::vector<uint32_t> src(288);
  for (size_t i = 0; i < src.size(); ++i) src[i] = 0x1000u + uint32_t(i);
  const uint32_t kPoison = 0xFFFFFFFFu;  // shared memory before anything lands
  for (emu::CpAsync mode : {emu::CpAsync::Lazy, emu::CpAsync::Eager}) {
    for (const emu::Schedule& s : schedules()) {
      emu::cp_async_mode() = mode;
      emu::schedule() = s;
      const bool eager = mode == emu::CpAsync::Eager;
      uint32_t* d_out = device(std::vector<uint32_t>(32 * 12, 0));
      emu_ptx_test::cp_async(d_out, device(src), 0);
      const std::vector<uint32_t> out = host(d_out, 32 * 12);
      for (int t = 0; t < 32; ++t) {
        const uint32_t* o = out.data() + t * 12;
        const int src_size = t % 2 ? 8 : t % 4 == 2 ? 0 : 16;
        auto slot_b = [&](int k) { return 4 * k < src_size ? src[128 + t * 4 + k] : 0u; };
        SCOPED_TRACE("thread " + std::to_string(t) + (eager ? " eager" : " lazy"));
        for (int k = 0; k < 4; ++k) EXPECT_EQ(o[k], eager ? src[t * 4 + k] : kPoison) << "before any wait";
        EXPECT_EQ(o[4], src[t * 4]) << "group 1 after wait_group 1";
        EXPECT_EQ(o[5], eager ? slot_b(0) : kPoison) << "group 2 after wait_group 1";
        for (int k = 0; k < 4; ++k) EXPECT_EQ(o[6 + k], slot_b(k)) << "group 2 after wait_group 0";
        EXPECT_EQ(o[10], src[256 + t]) << "cp-size 4 after wait_all";
        EXPECT_EQ(o[11], uint32_t(16 * t)) << "shared-window addresses are offsets";
      }
    }
  }
}

TEST_F(EmuPtx, MisuseIsAFaultNamingTheInstruction) {
  struct Case {
    emu_ptx_test::Misuse what;
    std::vector<std::string> says;
  };
  using M = emu_ptx_test::Misuse;
  const Case cases[] = {
      {M::LdmatrixMisaligned, {"ldmatrix.sync.aligned.m8n8.x4.shared.b16", "lane 5", "not 16-byte aligned"}},
      {M::LdmatrixOutside, {"lane 9", "outside the block's shared memory"}},
      {M::LdmatrixHalfWarp, {"ldmatrix", "has already exited"}},
      {M::CpAsyncFromHost, {"cp.async.cg.shared.global", "source", "not device memory"}},
      {M::CpAsyncToGlobal, {"__cvta_generic_to_shared", "is not in the block's shared memory"}},
      {M::CpAsyncSrcSizeTooLarge, {"src-size 32 above cp-size 16"}},
      {M::NotEmulated, {"PTX instruction not emulated: 'ld.global.nc.u32"}},
  };
  std::vector<float> host_buffer(256, 1.f);
  for (const Case& c : cases) {
    emu::reset_device();
    float* d = device(std::vector<float>(256, 0.f));
    emu_ptx_test::misuse(c.what, d, host_buffer.data(), 0);
    EXPECT_EQ(cudaDeviceSynchronize(), cudaErrorLaunchFailure) << "case " << int(c.what);
    const std::string& msg = emu::fault_message();
    EXPECT_NE(msg.find("misuse_kernel"), std::string::npos) << msg;
    for (const std::string& s : c.says) EXPECT_NE(msg.find(s), std::string::npos) << "wants '" << s << "': " << msg;
    if (c.what != M::LdmatrixHalfWarp && c.what != M::CpAsyncToGlobal) {
      EXPECT_NE(msg.find("ptx_test_kernels.cu:"), std::string::npos) << "the asm's line: " << msg;
    }
  }
}

}  // namespace
