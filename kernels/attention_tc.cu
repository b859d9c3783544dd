// Causal softmax attention on tensor cores: bf16 operands, fp32 accumulation,
// FlashAttention-2 style (Dao, 2023), forward and a deterministic backward.
// Launchers: attention_tc.h. Same math and layout as the fp32 SIMT
// kernel in attention.cu (its one-writer backward included); only the
// arithmetic moves to mma.sync.
//
// ---- Math ----
// x_ij = scale * q_i.k_j (scale = 1/sqrt(hd)), j <= i;  lse_i = log sum_j exp x_ij;
// p_ij = exp(x_ij - lse_i);  out_i = sum_j p_ij v_j.
// Backward, with D_i = <dout_i, out_i> and ds_ij = p_ij (dout_i.v_j - D_i):
//   dq_i = scale sum_j ds_ij k_j,  dk_j = scale sum_i ds_ij q_i,  dv_j = sum_i p_ij dout_i.
// Exponentials are exp2 of log2-scaled values (x * log2 e), as FlashAttention.
//
// ---- Tensor-core instruction and fragments ----
// Every product is mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32:
// D[16x8] += A[16x16] B[16x8], one warp. With lane = 4 g + t (g = lane/4,
// t = lane%4) the PTX ISA fragments are
//   A: reg0 = A[g][2t..2t+1], reg1 = A[g+8][2t..], reg2 = A[g][2t+8..], reg3 = A[g+8][2t+8..]
//   B: reg0 = B[2t..2t+1][g], reg1 = B[2t+8..2t+9][g]
//   C: c0,c1 = C[g][2t], C[g][2t+1];  c2,c3 = C[g+8][2t], C[g+8][2t+1]
// (two bf16 per 32-bit register, the lower-indexed one in the low half).
// Operands come from shared memory with ldmatrix.x4 (four 8x8 matrices; lane
// L gives the address of row L%8 of matrix L/8):
//   A (16 rows x 16 of a row-major tile):         row L%16, column 8 (L/16)
//   B = X^T for X row-major [n][k] ("A B^T"):      row 8 (L/16) + L%8, column 8 ((L/8)%2),
//                                                 regs {0,1} = n-block 0, {2,3} = n-block 1
//   B = X   for X row-major [k][n] (".trans"):     row L%16, column 8 (L/16), same pairing
// An accumulator tile (16 x 8j, fp32) becomes the A operand of the next
// product in registers (acc_to_a): no shared-memory round trip for P or dS.
// The fragment layouts and the indexing below are also checked on the CPU by
// emu/tests/test_emu_attention_tc.cpp, which runs this file on the emulated
// device (emu/), its inline PTX emulated from the PTX ISA tables.
//
// ---- Tiles, warps, ownership ----
// Each warp owns 16 rows of the block's "row" operand; each thread holds two
// of them (g and g+8) in every accumulator, so row statistics are reduced over
// the 4 threads of a quad (two xor shuffles).
//   forward  (attn_tc_fwd_kernel):  block = 128 query rows, 8 warps x 16 rows;
//            key tiles of 64; q fragments stay in registers; online softmax
//            (running max m and sum l per row, fp32 registers); P -> bf16 for
//            O += P V; out = O / l, lse = (m + log2 l) ln 2.
//   dq       (attn_tc_dq_kernel):   block = 64 query rows, 4 warps x 16 rows,
//            loop over key tiles j <= i; S = Q K^T, P from lse, dP = dO V^T,
//            dS = P (dP - D), dQ += dS K.
//   dk, dv   (attn_tc_dkdv_kernel): block = 64 key rows, 4 warps x 16 keys,
//            loop over query tiles i >= j (64 rows at hd 64, 32 at hd 128,
//            where 64 would not fit the registers); the transposed products
//            S^T = K Q^T, dP^T = V dO^T, then dV += P^T dO, dK += dS^T Q.
//   D_i      (attn_tc_rowdot_kernel): one warp per row, into the workspace.
// Shared memory: bf16 tiles with row stride hd + 8 elements (144 / 272 bytes:
// 16-byte aligned rows, and 8 consecutive rows fall on distinct banks, so
// ldmatrix and the 16-byte cp.async stores are conflict-free). The streamed
// operand (K/V in forward and dq, Q/dO in dkdv) is double-buffered with
// cp.async: tile j+1 loads while tile j is multiplied. Rows >= S are
// zero-filled (cp.async src-size 0), so padded rows are finite; their scores
// are masked (keys) or their lse is +inf (queries in the backward: p = 0),
// and they are never stored.
//   bytes (hd 64 / hd 128): forward and dq 384 rows * (hd + 8) * 2 = 55,296 /
//   104,448; dkdv 56,320 / 70,144 (K, V, two stages of Q and dO, lse and D).
//   All above the 48 KiB default, so the launchers opt in.
// Registers (ptxas, sm_80 / sm_90): about 150-240 per thread, no spills; the
// launchers ask for one block per SM at least (__launch_bounds__(threads, 1)).
// Causality: a block stops at the last key tile its last row needs (dq, fwd)
// or starts at the first query tile that can see its first key (dkdv); a warp
// skips a tile none of its rows can see; only tiles that cross the diagonal
// apply the per-element mask (template flag).
// Heavy tiles first: blockIdx.y runs from the longest query tile (fwd, dq: the
// last) or key tile (dkdv: the first), since blocks launch in index order.
//
// ---- Determinism ----
// No atomics and no cross-block reductions: every element of out, lse, dq,
// dk and dv is written by exactly one thread, after a fixed sequence of mma
// instructions (key or query tiles in order, k-steps in order) and fixed
// shuffle trees. So the bits are the same on every run and every launch
// configuration of the same device. This is the one-writer structure of
// attention.cu: dq has its own kernel (over key tiles) instead of
// FlashAttention-2's atomicAdd of dq from the dk/dv kernel, at the cost of
// recomputing S and dP there (7 tile products per (query, key) tile pair
// instead of 5).
//
// ---- Why not cuBLAS strided-batched GEMMs ----
// Q K^T and P V as batched GEMMs would materialise the S x S score matrix per
// head (B*H*S^2 values: 2 GiB in fp32 for B=8, H=8, S=2048, per layer, kept for
// the backward or recomputed), read and write it again for the softmax and
// the masking, and multiply the masked upper triangle too: O(S^2) memory
// traffic and twice the causal FLOPs. The fused kernel keeps scores in
// registers, moves O(S hd) bytes per head and skips the masked tiles, which is
// what makes attention compute-bound at S = 2048.
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <climits>
#include <cstring>
#include <string>

#include "cuda_check.h"
#include "core/error.h"
#include "attention_tc.h"
#include "elem.cuh"

#include <cmath>
#include <cstddef>
#include <cstdint>

namespace moe::kernels::attn_tc {

using bf16 = __nv_bfloat16;

constexpr float kLog2e = 1.4426950408889634f;
constexpr float kLn2 = 0.6931471805599453f;
constexpr int kPad = 8;  // bf16 elements of padding per shared-memory row

// ---- Warp-level primitives (inline PTX, sm_80+) ----

__device__ __forceinline__ uint32_t smem_addr(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

// Four 8x8 b16 matrices; lane L supplies the address of row L%8 of matrix L/8
// and receives r[m] = {M_m[L/4][2(L%4)], M_m[L/4][2(L%4)+1]}.
__device__ __forceinline__ void ldsm_x4(uint32_t (&r)[4], const bf16* p) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(smem_addr(p)));
}

// The same, transposed: r[m] = {M_m[2(L%4)][L/4], M_m[2(L%4)+1][L/4]}.
__device__ __forceinline__ void ldsm_x4_trans(uint32_t (&r)[4], const bf16* p) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(smem_addr(p)));
}

// d[16x8] += a[16x16] b[16x8], fp32 accumulators (fragments: header comment).
__device__ __forceinline__ void mma_bf16_16816(float (&d)[4], const uint32_t (&a)[4], uint32_t b0,
                                               uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, "
      "{%8, %9}, {%0, %1, %2, %3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

// 16 bytes global -> shared, asynchronous; valid = false writes 16 zero bytes
// and reads nothing (src-size 0).
__device__ __forceinline__ void cp_async_16(bf16* dst, const bf16* src, bool valid) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(smem_addr(dst)), "l"(src),
               "r"(valid ? 16 : 0)
               : "memory");
}
__device__ __forceinline__ void cp_async_commit() {
  asm volatile("cp.async.commit_group;\n" ::: "memory");
}
// Waits until at most N of this thread's committed groups are still pending.
template <int N>
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
}

// Two floats -> bf16x2 (round to nearest even), lo in the low 16 bits.
__device__ __forceinline__ uint32_t pack_bf16x2(float lo, float hi) {
  const __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);  // .x = lo, the lower address
  uint32_t u;
  memcpy(&u, &v, sizeof u);
  return u;
}
__device__ __forceinline__ float bf16x2_lo(uint32_t u) { return __uint_as_float(u << 16); }
__device__ __forceinline__ float bf16x2_hi(uint32_t u) { return __uint_as_float(u & 0xffff0000u); }

__device__ __forceinline__ unsigned char* dynamic_smem() {
  extern __shared__ uint4 attn_tc_smem[];  // uint4: 16-byte aligned
  return reinterpret_cast<unsigned char*>(attn_tc_smem);
}

// ---- Configuration ----

struct FwdCfg {
  static constexpr int kWarps = 8, kThreads = 32 * kWarps;
  static constexpr int BM = 16 * kWarps;  // query rows per block
  static constexpr int BN = 64;           // key rows per tile
};
struct DqCfg {
  static constexpr int kWarps = 4, kThreads = 32 * kWarps;
  static constexpr int BM = 16 * kWarps;  // query rows per block
  static constexpr int BN = 64;           // key rows per tile
};
// hd 128 streams 32-row query tiles: with 64 its S^T and dP^T tiles next to
// the dk and dv accumulators (128 fp32 registers) do not fit 255 registers.
template <int HD>
struct DkdvCfg {
  static constexpr int kWarps = 4, kThreads = 32 * kWarps;
  static constexpr int BN = 16 * kWarps;          // key rows per block
  static constexpr int BQ = HD == 128 ? 32 : 64;  // query rows per tile
  static_assert(BQ % 16 == 0 && kThreads >= BQ, "whole mma k-steps; one thread per query row");
};
static_assert(FwdCfg::BN % 16 == 0 && DqCfg::BN % 16 == 0, "tiles are whole mma k-steps");

// Shared-memory bytes of each kernel (layouts in the kernels).
template <int HD>
constexpr size_t fwd_smem_bytes() {
  return sizeof(bf16) * static_cast<size_t>(FwdCfg::BM + 4 * FwdCfg::BN) * (HD + kPad);
}
template <int HD>
constexpr size_t dq_smem_bytes() {
  return sizeof(bf16) * static_cast<size_t>(2 * DqCfg::BM + 4 * DqCfg::BN) * (HD + kPad);
}
template <int HD>
constexpr size_t dkdv_smem_bytes() {
  using C = DkdvCfg<HD>;
  return sizeof(bf16) * static_cast<size_t>(2 * C::BN + 4 * C::BQ) * (HD + kPad) +
         sizeof(float) * 4 * C::BQ;
}

__device__ __forceinline__ int imin(int a, int b) { return a < b ? a : b; }

// Max / sum over the 4 threads of a quad (the threads holding one row).
__device__ __forceinline__ float quad_max(float v) {
  v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, 1));
  return fmaxf(v, __shfl_xor_sync(0xffffffffu, v, 2));
}
__device__ __forceinline__ float quad_sum(float v) {
  v += __shfl_xor_sync(0xffffffffu, v, 1);
  return v + __shfl_xor_sync(0xffffffffu, v, 2);
}

template <int N>
__device__ __forceinline__ void zero(float (&a)[N][4]) {
#pragma unroll
  for (int i = 0; i < N; ++i)
#pragma unroll
    for (int c = 0; c < 4; ++c) a[i][c] = 0.f;
}

// Starts loading rows [r0, r0 + ROWS) of one head's HD columns (row r at
// src + r*ld elements) into a shared tile with row stride HD + kPad; rows >= S
// become zeros. All THREADS threads of the block call it.
template <int ROWS, int HD, int THREADS>
__device__ __forceinline__ void load_tile_async(bf16* dst, const bf16* src, size_t ld, int r0,
                                                int S) {
  constexpr int LD = HD + kPad, CH = HD / 8, TOTAL = ROWS * CH;  // CH 16-byte chunks per row
  static_assert(TOTAL % THREADS == 0, "whole chunks per thread");
#pragma unroll
  for (int it = 0; it < TOTAL / THREADS; ++it) {
    const int c = static_cast<int>(threadIdx.x) + it * THREADS;
    const int r = c / CH, ch = c % CH;
    const int row = r0 + r;
    const bool valid = row < S;
    const bf16* g = valid ? src + static_cast<size_t>(row) * ld + ch * 8 : src;
    cp_async_16(dst + r * LD + ch * 8, g, valid);
  }
}

// ---- Warp tile products (one warp; a 16-row A operand) ----

// acc (16 x NR, NR/8 accumulator tiles) += A B^T with A = 16 rows x HD of a
// row-major shared tile and B = NR rows x HD of another.
template <int HD, int NR>
__device__ __forceinline__ void warp_abt_smem(float (&acc)[NR / 8][4], const bf16* A, const bf16* B,
                                              int lane) {
  constexpr int LD = HD + kPad;
  const bf16* a_ptr = A + (lane & 15) * LD + (lane >> 4) * 8;
  const bf16* b_ptr = B + ((lane & 7) + ((lane >> 4) << 3)) * LD + ((lane >> 3) & 1) * 8;
#pragma unroll
  for (int kk = 0; kk < HD / 16; ++kk) {
    uint32_t a[4];
    ldsm_x4(a, a_ptr + kk * 16);
#pragma unroll
    for (int nb = 0; nb < NR / 8; nb += 2) {
      uint32_t b[4];
      ldsm_x4(b, b_ptr + nb * 8 * LD + kk * 16);
      mma_bf16_16816(acc[nb], a, b[0], b[1]);
      mma_bf16_16816(acc[nb + 1], a, b[2], b[3]);
    }
  }
}

// The same with A already in registers as HD/16 A fragments.
template <int HD, int NR>
__device__ __forceinline__ void warp_abt_reg(float (&acc)[NR / 8][4],
                                             const uint32_t (&a)[HD / 16][4], const bf16* B,
                                             int lane) {
  constexpr int LD = HD + kPad;
  const bf16* b_ptr = B + ((lane & 7) + ((lane >> 4) << 3)) * LD + ((lane >> 3) & 1) * 8;
#pragma unroll
  for (int kk = 0; kk < HD / 16; ++kk) {
#pragma unroll
    for (int nb = 0; nb < NR / 8; nb += 2) {
      uint32_t b[4];
      ldsm_x4(b, b_ptr + nb * 8 * LD + kk * 16);
      mma_bf16_16816(acc[nb], a[kk], b[0], b[1]);
      mma_bf16_16816(acc[nb + 1], a[kk], b[2], b[3]);
    }
  }
}

// acc (16 x HD, HD/8 tiles) += P B with P = 16 x K in registers (K/16 A
// fragments) and B = K rows x HD of a row-major shared tile (ldmatrix.trans).
template <int HD, int K>
__device__ __forceinline__ void warp_ab_reg(float (&acc)[HD / 8][4], const uint32_t (&p)[K / 16][4],
                                            const bf16* B, int lane) {
  constexpr int LD = HD + kPad;
  const bf16* b_ptr = B + (lane & 15) * LD + (lane >> 4) * 8;
#pragma unroll
  for (int kk = 0; kk < K / 16; ++kk) {
#pragma unroll
    for (int nd = 0; nd < HD / 8; nd += 2) {
      uint32_t b[4];
      ldsm_x4_trans(b, b_ptr + kk * 16 * LD + nd * 8);
      mma_bf16_16816(acc[nd], p[kk], b[0], b[1]);
      mma_bf16_16816(acc[nd + 1], p[kk], b[2], b[3]);
    }
  }
}

// Accumulator tiles (16 x N fp32) -> bf16 A fragments of the same 16 x N
// matrix: columns 16kk..16kk+15 are accumulator tiles 2kk and 2kk+1.
template <int N>
__device__ __forceinline__ void acc_to_a(uint32_t (&a)[N / 16][4], const float (&c)[N / 8][4]) {
#pragma unroll
  for (int kk = 0; kk < N / 16; ++kk) {
    a[kk][0] = pack_bf16x2(c[2 * kk][0], c[2 * kk][1]);          // row g,   cols 2t, 2t+1
    a[kk][1] = pack_bf16x2(c[2 * kk][2], c[2 * kk][3]);          // row g+8, cols 2t, 2t+1
    a[kk][2] = pack_bf16x2(c[2 * kk + 1][0], c[2 * kk + 1][1]);  // row g,   cols 2t+8, 2t+9
    a[kk][3] = pack_bf16x2(c[2 * kk + 1][2], c[2 * kk + 1][3]);  // row g+8, cols 2t+8, 2t+9
  }
}

// Writes a warp's 16 x HD accumulator tile, rows g scaled by mul_lo and rows
// g+8 by mul_hi, as bf16 to global rows [r0, r0 + 16) (row r at dst + r*ld)
// that are < S, staged through `stage`: 16 shared rows that only this warp
// reads, so a warp barrier orders the reuse. 16-byte global stores.
template <int HD>
__device__ __forceinline__ void store_warp_tile(bf16* dst, size_t ld, int r0, int S,
                                                const float (&acc)[HD / 8][4], float mul_lo,
                                                float mul_hi, bf16* stage, int lane) {
  constexpr int LD = HD + kPad, CH = HD / 8;
  const int g = lane >> 2, t = lane & 3;
  __syncwarp();  // this warp's ldmatrix reads of `stage` are complete
#pragma unroll
  for (int nd = 0; nd < HD / 8; ++nd) {
    *reinterpret_cast<uint32_t*>(stage + g * LD + nd * 8 + 2 * t) =
        pack_bf16x2(acc[nd][0] * mul_lo, acc[nd][1] * mul_lo);
    *reinterpret_cast<uint32_t*>(stage + (g + 8) * LD + nd * 8 + 2 * t) =
        pack_bf16x2(acc[nd][2] * mul_hi, acc[nd][3] * mul_hi);
  }
  __syncwarp();
#pragma unroll
  for (int c = lane; c < 16 * CH; c += 32) {
    const int r = c / CH, ch = c % CH;
    const int row = r0 + r;
    if (row < S)
      *reinterpret_cast<uint4*>(dst + static_cast<size_t>(row) * ld + ch * 8) =
          *reinterpret_cast<const uint4*>(stage + r * LD + ch * 8);
  }
}

// ---- Forward ----

// One key tile for one warp: scores, online-softmax update, O += P V.
// row0 = the warp's first query row; k0 = the tile's first key.
template <int HD, bool MASK>
__device__ __forceinline__ void fwd_tile(float (&o)[HD / 8][4], float (&m)[2], float (&l)[2],
                                         const uint32_t (&qf)[HD / 16][4], const bf16* Ks,
                                         const bf16* Vs, int k0, int row0, float scale_log2,
                                         int lane) {
  constexpr int BN = FwdCfg::BN;
  const int g = lane >> 2, t = lane & 3;
  float s[BN / 8][4];
  zero(s);
  warp_abt_reg<HD, BN>(s, qf, Ks, lane);  // s[nb][c]: row g + 8(c/2), key nb*8 + 2t + c%2

  float mx[2] = {m[0], m[1]};
#pragma unroll
  for (int nb = 0; nb < BN / 8; ++nb)
#pragma unroll
    for (int c = 0; c < 4; ++c) {
      float x = s[nb][c] * scale_log2;
      if (MASK) {
        const int key = k0 + nb * 8 + 2 * t + (c & 1);
        const int row = row0 + g + 8 * (c >> 1);
        if (key > row) x = -INFINITY;
      }
      s[nb][c] = x;
      mx[c >> 1] = fmaxf(mx[c >> 1], x);
    }
  // Every row sees key 0 in tile 0, its first tile, so mx is finite from then on.
  float alpha[2], rowsum[2] = {0.f, 0.f};
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    mx[r] = quad_max(mx[r]);
    alpha[r] = exp2f(m[r] - mx[r]);  // 0 on the first tile (m = -inf)
    m[r] = mx[r];
  }
#pragma unroll
  for (int nb = 0; nb < BN / 8; ++nb)
#pragma unroll
    for (int c = 0; c < 4; ++c) {
      const float p = exp2f(s[nb][c] - mx[c >> 1]);  // masked: exp2(-inf) = 0
      s[nb][c] = p;
      rowsum[c >> 1] += p;
    }
  // l stays a per-thread partial sum (this thread's columns); the quad's
  // partials share m and alpha, and are added once at the end.
#pragma unroll
  for (int r = 0; r < 2; ++r) l[r] = l[r] * alpha[r] + rowsum[r];
#pragma unroll
  for (int nd = 0; nd < HD / 8; ++nd)
#pragma unroll
    for (int c = 0; c < 4; ++c) o[nd][c] *= alpha[c >> 1];

  uint32_t pa[BN / 16][4];
  acc_to_a<BN>(pa, s);
  warp_ab_reg<HD, BN>(o, pa, Vs, lane);
}

// grid (B*H, ceil(S/BM)); block FwdCfg::kThreads; fwd_smem_bytes<HD>() of
// dynamic shared memory: Qs [BM][LD] | Ks [2][BN][LD] | Vs [2][BN][LD].
template <int HD>
__global__ void __launch_bounds__(FwdCfg::kThreads, 1)
    attn_tc_fwd_kernel(bf16* __restrict__ out, float* __restrict__ lse,
                       const bf16* __restrict__ qkv, int S, int H, float scale_log2) {
  constexpr int BM = FwdCfg::BM, BN = FwdCfg::BN, THREADS = FwdCfg::kThreads, LD = HD + kPad;
  bf16* Qs = reinterpret_cast<bf16*>(dynamic_smem());
  bf16* Ks = Qs + BM * LD;
  bf16* Vs = Ks + 2 * BN * LD;

  const int lane = static_cast<int>(threadIdx.x) & 31, warp = static_cast<int>(threadIdx.x) >> 5;
  const int g = lane >> 2, t = lane & 3;
  const int bh = static_cast<int>(blockIdx.x), b = bh / H, h = bh % H;
  const int q0 = static_cast<int>(gridDim.y - 1 - blockIdx.y) * BM;  // longest tiles first
  const size_t W = static_cast<size_t>(3) * H * HD, OW = static_cast<size_t>(H) * HD;
  const bf16* qg = qkv + static_cast<size_t>(b) * S * W + static_cast<size_t>(h) * HD;
  const bf16* kg = qg + OW;
  const bf16* vg = qg + 2 * OW;

  const int q_end = imin(S, q0 + BM);     // rows [q0, q_end) exist
  const int n_kt = (q_end - 1) / BN + 1;  // key tiles holding keys < q_end
  const int row0 = q0 + 16 * warp;        // this warp's rows: row0 .. row0 + 15
  const bool active = row0 < S;

  load_tile_async<BM, HD, THREADS>(Qs, qg, W, q0, S);
  cp_async_commit();
  load_tile_async<BN, HD, THREADS>(Ks, kg, W, 0, S);
  load_tile_async<BN, HD, THREADS>(Vs, vg, W, 0, S);
  cp_async_commit();
  cp_async_wait<1>();  // Q has landed (this thread's part) ...
  __syncthreads();     // ... and everyone's

  uint32_t qf[HD / 16][4];
  {
    const bf16* q_ptr = Qs + (16 * warp + (lane & 15)) * LD + (lane >> 4) * 8;
#pragma unroll
    for (int kk = 0; kk < HD / 16; ++kk) ldsm_x4(qf[kk], q_ptr + kk * 16);
  }

  float o[HD / 8][4];
  zero(o);
  float m[2] = {-INFINITY, -INFINITY}, l[2] = {0.f, 0.f};

  for (int j = 0; j < n_kt; ++j) {
    const int st = j & 1;
    // Stage st^1 was last read in iteration j-1, which ended with a barrier.
    if (j + 1 < n_kt) {
      load_tile_async<BN, HD, THREADS>(Ks + (st ^ 1) * BN * LD, kg, W, (j + 1) * BN, S);
      load_tile_async<BN, HD, THREADS>(Vs + (st ^ 1) * BN * LD, vg, W, (j + 1) * BN, S);
    }
    cp_async_commit();   // possibly empty: keeps one group per iteration
    cp_async_wait<1>();  // everything but the group just committed: tile j
    __syncthreads();
    const int k0 = j * BN;
    if (active && k0 <= row0 + 15) {  // warp-uniform: some row of the warp sees some key
      const bf16* Kt = Ks + st * BN * LD;
      const bf16* Vt = Vs + st * BN * LD;
      if (k0 + BN - 1 > row0)  // the tile crosses the diagonal of this warp's rows
        fwd_tile<HD, true>(o, m, l, qf, Kt, Vt, k0, row0, scale_log2, lane);
      else
        fwd_tile<HD, false>(o, m, l, qf, Kt, Vt, k0, row0, scale_log2, lane);
    }
    __syncthreads();  // tile j consumed before iteration j+1 overwrites its stage
  }
  if (!active) return;  // whole warp; no barrier follows

  float inv[2];
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    l[r] = quad_sum(l[r]);
    inv[r] = 1.f / l[r];
  }
  if (t == 0) {
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      const int row = row0 + g + 8 * r;
      if (row < S) lse[static_cast<size_t>(bh) * S + row] = (m[r] + log2f(l[r])) * kLn2;
    }
  }
  bf16* og = out + static_cast<size_t>(b) * S * OW + static_cast<size_t>(h) * HD;
  store_warp_tile<HD>(og, OW, row0, S, o, inv[0], inv[1], Qs + 16 * warp * LD, lane);
}

// ---- Backward ----

// D[bh*S + i] = <dout_i, out_i> over the head's HD columns (fp32 sum of bf16
// products in a fixed order); one warp per (b, h, i), 4 rows per block.
template <int HD>
__global__ void __launch_bounds__(128)
    attn_tc_rowdot_kernel(float* __restrict__ Dv, const bf16* __restrict__ dout,
                          const bf16* __restrict__ out, int64_t rows, int S, int H) {
  const int64_t row = static_cast<int64_t>(blockIdx.x) * 4 + (threadIdx.x >> 5);
  const int lane = static_cast<int>(threadIdx.x) & 31;
  if (row >= rows) return;  // warp-uniform
  const int i = static_cast<int>(row % S);
  const int64_t bh = row / S;
  const int h = static_cast<int>(bh % H);
  const int64_t b = bh / H;
  const size_t off = (static_cast<size_t>(b) * S + i) * H * HD + static_cast<size_t>(h) * HD;
  const uint32_t* d2 = reinterpret_cast<const uint32_t*>(dout + off);
  const uint32_t* o2 = reinterpret_cast<const uint32_t*>(out + off);
  float acc = 0.f;
#pragma unroll
  for (int c = 0; c < HD / 64; ++c) {
    const uint32_t dv = d2[lane + 32 * c], ov = o2[lane + 32 * c];
    acc += bf16x2_lo(dv) * bf16x2_lo(ov) + bf16x2_hi(dv) * bf16x2_hi(ov);
  }
  acc = warp_sum(acc);
  if (lane == 0) Dv[row] = acc;
}

// One key tile for one warp of the dq kernel: dQ += dS K.
template <int HD, bool MASK>
__device__ __forceinline__ void dq_tile(float (&dq)[HD / 8][4], const bf16* Qw, const bf16* dOw,
                                        const bf16* Ks, const bf16* Vs, const float (&lse2)[2],
                                        const float (&Dr)[2], int k0, int row0, float scale_log2,
                                        int lane) {
  constexpr int BN = DqCfg::BN;
  const int g = lane >> 2, t = lane & 3;
  float s[BN / 8][4];
  zero(s);
  warp_abt_smem<HD, BN>(s, Qw, Ks, lane);  // s[nb][c]: row g + 8(c/2), key nb*8 + 2t + c%2
#pragma unroll
  for (int nb = 0; nb < BN / 8; ++nb)
#pragma unroll
    for (int c = 0; c < 4; ++c) {
      float p = exp2f(s[nb][c] * scale_log2 - lse2[c >> 1]);  // lse2 = +inf: rows >= S
      if (MASK) {
        const int key = k0 + nb * 8 + 2 * t + (c & 1);
        const int row = row0 + g + 8 * (c >> 1);
        if (key > row) p = 0.f;
      }
      s[nb][c] = p;
    }
  float dp[BN / 8][4];
  zero(dp);
  warp_abt_smem<HD, BN>(dp, dOw, Vs, lane);  // dP = dO V^T
#pragma unroll
  for (int nb = 0; nb < BN / 8; ++nb)
#pragma unroll
    for (int c = 0; c < 4; ++c) dp[nb][c] = s[nb][c] * (dp[nb][c] - Dr[c >> 1]);  // dS
  uint32_t a[BN / 16][4];
  acc_to_a<BN>(a, dp);
  warp_ab_reg<HD, BN>(dq, a, Ks, lane);  // dQ += dS K
}

// grid (B*H, ceil(S/BM)); block DqCfg::kThreads; dq_smem_bytes<HD>():
// Qs [BM][LD] | dOs [BM][LD] | Ks [2][BN][LD] | Vs [2][BN][LD].
template <int HD>
__global__ void __launch_bounds__(DqCfg::kThreads, 1)
    attn_tc_dq_kernel(bf16* __restrict__ dqkv, const bf16* __restrict__ dout,
                      const float* __restrict__ lse, const float* __restrict__ Dv,
                      const bf16* __restrict__ qkv, int S, int H, float scale, float scale_log2) {
  constexpr int BM = DqCfg::BM, BN = DqCfg::BN, THREADS = DqCfg::kThreads, LD = HD + kPad;
  bf16* Qs = reinterpret_cast<bf16*>(dynamic_smem());
  bf16* dOs = Qs + BM * LD;
  bf16* Ks = dOs + BM * LD;
  bf16* Vs = Ks + 2 * BN * LD;

  const int lane = static_cast<int>(threadIdx.x) & 31, warp = static_cast<int>(threadIdx.x) >> 5;
  const int g = lane >> 2;
  const int bh = static_cast<int>(blockIdx.x), b = bh / H, h = bh % H;
  const int q0 = static_cast<int>(gridDim.y - 1 - blockIdx.y) * BM;  // longest tiles first
  const size_t W = static_cast<size_t>(3) * H * HD, OW = static_cast<size_t>(H) * HD;
  const bf16* qg = qkv + static_cast<size_t>(b) * S * W + static_cast<size_t>(h) * HD;
  const bf16* kg = qg + OW;
  const bf16* vg = qg + 2 * OW;
  const bf16* dog = dout + static_cast<size_t>(b) * S * OW + static_cast<size_t>(h) * HD;

  const int q_end = imin(S, q0 + BM);
  const int n_kt = (q_end - 1) / BN + 1;
  const int row0 = q0 + 16 * warp;
  const bool active = row0 < S;

  load_tile_async<BM, HD, THREADS>(Qs, qg, W, q0, S);
  load_tile_async<BM, HD, THREADS>(dOs, dog, OW, q0, S);
  cp_async_commit();
  load_tile_async<BN, HD, THREADS>(Ks, kg, W, 0, S);
  load_tile_async<BN, HD, THREADS>(Vs, vg, W, 0, S);
  cp_async_commit();

  float lse2[2], Dr[2];  // rows g and g+8: lse in log2 units (+inf past S), D
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    const int row = row0 + g + 8 * r;
    const size_t idx = static_cast<size_t>(bh) * S + row;
    lse2[r] = row < S ? lse[idx] * kLog2e : INFINITY;
    Dr[r] = row < S ? Dv[idx] : 0.f;
  }
  float dq[HD / 8][4];
  zero(dq);

  for (int j = 0; j < n_kt; ++j) {
    const int st = j & 1;
    if (j + 1 < n_kt) {
      load_tile_async<BN, HD, THREADS>(Ks + (st ^ 1) * BN * LD, kg, W, (j + 1) * BN, S);
      load_tile_async<BN, HD, THREADS>(Vs + (st ^ 1) * BN * LD, vg, W, (j + 1) * BN, S);
    }
    cp_async_commit();
    cp_async_wait<1>();  // Q, dO and key tile j
    __syncthreads();
    const int k0 = j * BN;
    if (active && k0 <= row0 + 15) {
      const bf16* Kt = Ks + st * BN * LD;
      const bf16* Vt = Vs + st * BN * LD;
      const bf16* Qw = Qs + 16 * warp * LD;
      const bf16* dOw = dOs + 16 * warp * LD;
      if (k0 + BN - 1 > row0)
        dq_tile<HD, true>(dq, Qw, dOw, Kt, Vt, lse2, Dr, k0, row0, scale_log2, lane);
      else
        dq_tile<HD, false>(dq, Qw, dOw, Kt, Vt, lse2, Dr, k0, row0, scale_log2, lane);
    }
    __syncthreads();
  }
  if (!active) return;
  bf16* dqg = dqkv + static_cast<size_t>(b) * S * W + static_cast<size_t>(h) * HD;
  store_warp_tile<HD>(dqg, W, row0, S, dq, scale, scale, Qs + 16 * warp * LD, lane);
}

// One query tile for one warp of the dkdv kernel (its 16 keys x BQ queries):
// dV += P^T dO, dK += dS^T Q (dK is scaled at the end).
template <int HD, bool MASK>
__device__ __forceinline__ void dkdv_tile(float (&dk)[HD / 8][4], float (&dv)[HD / 8][4],
                                          const bf16* Kw, const bf16* Vw, const bf16* Qs,
                                          const bf16* dOs, const float* Ls, const float* Ds, int q0,
                                          int key0, float scale_log2, int lane) {
  constexpr int BQ = DkdvCfg<HD>::BQ;
  const int g = lane >> 2, t = lane & 3;
  float s[BQ / 8][4];
  zero(s);
  warp_abt_smem<HD, BQ>(s, Kw, Qs, lane);  // S^T: s[nb][c]: key g + 8(c/2), query nb*8 + 2t + c%2
#pragma unroll
  for (int nb = 0; nb < BQ / 8; ++nb)
#pragma unroll
    for (int c = 0; c < 4; ++c) {
      const int ql = nb * 8 + 2 * t + (c & 1);
      float p = exp2f(s[nb][c] * scale_log2 - Ls[ql]);  // Ls = +inf: queries >= S
      if (MASK) {
        const int key = key0 + g + 8 * (c >> 1);
        if (key > q0 + ql) p = 0.f;
      }
      s[nb][c] = p;
    }
  float dp[BQ / 8][4];
  zero(dp);
  warp_abt_smem<HD, BQ>(dp, Vw, dOs, lane);  // dP^T = V dO^T
#pragma unroll
  for (int nb = 0; nb < BQ / 8; ++nb)
#pragma unroll
    for (int c = 0; c < 4; ++c) {
      const int ql = nb * 8 + 2 * t + (c & 1);
      dp[nb][c] = s[nb][c] * (dp[nb][c] - Ds[ql]);  // dS^T
    }
  uint32_t a[BQ / 16][4];
  acc_to_a<BQ>(a, s);
  warp_ab_reg<HD, BQ>(dv, a, dOs, lane);  // dV += P^T dO
  acc_to_a<BQ>(a, dp);
  warp_ab_reg<HD, BQ>(dk, a, Qs, lane);  // dK += dS^T Q
}

// Starts loading query tile q0 of Q and dO into one stage and writes its lse
// (log2 units, +inf past S) and D (0 past S) with plain stores.
template <int HD>
__device__ __forceinline__ void dkdv_load_query_tile(bf16* Qst, bf16* dOst, float* Lst, float* Dst,
                                                     const bf16* qg, const bf16* dog,
                                                     const float* lse_bh, const float* D_bh,
                                                     size_t W, size_t OW, int q0, int S) {
  constexpr int BQ = DkdvCfg<HD>::BQ, THREADS = DkdvCfg<HD>::kThreads;
  load_tile_async<BQ, HD, THREADS>(Qst, qg, W, q0, S);
  load_tile_async<BQ, HD, THREADS>(dOst, dog, OW, q0, S);
  const int r = static_cast<int>(threadIdx.x);
  if (r < BQ) {
    const int i = q0 + r;
    Lst[r] = i < S ? lse_bh[i] * kLog2e : INFINITY;
    Dst[r] = i < S ? D_bh[i] : 0.f;
  }
}

// grid (B*H, ceil(S/BN)); block DkdvCfg<HD>::kThreads; dkdv_smem_bytes<HD>():
// Ks [BN][LD] | Vs [BN][LD] | Qs [2][BQ][LD] | dOs [2][BQ][LD] | Ls [2][BQ] | Ds [2][BQ].
template <int HD>
__global__ void __launch_bounds__(DkdvCfg<HD>::kThreads, 1)
    attn_tc_dkdv_kernel(bf16* __restrict__ dqkv, const bf16* __restrict__ dout,
                        const float* __restrict__ lse, const float* __restrict__ Dv,
                        const bf16* __restrict__ qkv, int S, int H, float scale, float scale_log2) {
  using Cfg = DkdvCfg<HD>;
  constexpr int BN = Cfg::BN, BQ = Cfg::BQ, THREADS = Cfg::kThreads, LD = HD + kPad;
  bf16* Ks = reinterpret_cast<bf16*>(dynamic_smem());
  bf16* Vs = Ks + BN * LD;
  bf16* Qs = Vs + BN * LD;
  bf16* dOs = Qs + 2 * BQ * LD;
  float* Ls = reinterpret_cast<float*>(dOs + 2 * BQ * LD);
  float* Ds = Ls + 2 * BQ;

  const int lane = static_cast<int>(threadIdx.x) & 31, warp = static_cast<int>(threadIdx.x) >> 5;
  const int bh = static_cast<int>(blockIdx.x), b = bh / H, h = bh % H;
  const int k0 = static_cast<int>(blockIdx.y) * BN;  // key tile 0 (the longest) first
  const size_t W = static_cast<size_t>(3) * H * HD, OW = static_cast<size_t>(H) * HD;
  const bf16* qg = qkv + static_cast<size_t>(b) * S * W + static_cast<size_t>(h) * HD;
  const bf16* kg = qg + OW;
  const bf16* vg = qg + 2 * OW;
  const bf16* dog = dout + static_cast<size_t>(b) * S * OW + static_cast<size_t>(h) * HD;
  const float* lse_bh = lse + static_cast<size_t>(bh) * S;
  const float* D_bh = Dv + static_cast<size_t>(bh) * S;

  const int key0 = k0 + 16 * warp;  // this warp's keys: key0 .. key0 + 15
  const bool active = key0 < S;
  const int qt_first = k0 / BQ;  // the query tile holding query k0 (the first that sees a key)
  const int n_iter = (S - 1) / BQ + 1 - qt_first;

  load_tile_async<BN, HD, THREADS>(Ks, kg, W, k0, S);
  load_tile_async<BN, HD, THREADS>(Vs, vg, W, k0, S);
  dkdv_load_query_tile<HD>(Qs, dOs, Ls, Ds, qg, dog, lse_bh, D_bh, W, OW, qt_first * BQ, S);
  cp_async_commit();

  float dk[HD / 8][4], dv[HD / 8][4];
  zero(dk);
  zero(dv);

  for (int it = 0; it < n_iter; ++it) {
    const int st = it & 1;
    const int q0 = (qt_first + it) * BQ;
    if (it + 1 < n_iter) {  // stage st^1 was last read in iteration it-1 (ended by a barrier)
      const int n = st ^ 1;
      dkdv_load_query_tile<HD>(Qs + n * BQ * LD, dOs + n * BQ * LD, Ls + n * BQ, Ds + n * BQ, qg,
                               dog, lse_bh, D_bh, W, OW, q0 + BQ, S);
    }
    cp_async_commit();
    cp_async_wait<1>();  // K, V and query tile `it`, ...
    __syncthreads();     // ... everyone's, and the plain stores of its lse / D
    if (active && q0 + BQ - 1 >= key0) {  // some query of the tile sees some key of the warp
      const bf16* Qt = Qs + st * BQ * LD;
      const bf16* dOt = dOs + st * BQ * LD;
      const bf16* Kw = Ks + 16 * warp * LD;
      const bf16* Vw = Vs + 16 * warp * LD;
      if (q0 < key0 + 15)  // some query of the tile is before some key of the warp
        dkdv_tile<HD, true>(dk, dv, Kw, Vw, Qt, dOt, Ls + st * BQ, Ds + st * BQ, q0, key0,
                            scale_log2, lane);
      else
        dkdv_tile<HD, false>(dk, dv, Kw, Vw, Qt, dOt, Ls + st * BQ, Ds + st * BQ, q0, key0,
                             scale_log2, lane);
    }
    __syncthreads();
  }
  if (!active) return;
  bf16* dkg = dqkv + static_cast<size_t>(b) * S * W + OW + static_cast<size_t>(h) * HD;
  store_warp_tile<HD>(dkg, W, key0, S, dk, scale, scale, Ks + 16 * warp * LD, lane);
  store_warp_tile<HD>(dkg + OW, W, key0, S, dv, 1.f, 1.f, Vs + 16 * warp * LD, lane);
}

}  // namespace moe::kernels::attn_tc

// ---- Launchers ----
namespace moe::kernels {
namespace {

using attn_tc::bf16;

void check_tc_args(const char* op, int B, int S, int H, int hd) {
  const std::string name(op);
  MOE_CHECK(hd == 64 || hd == 128,
            name + ": head_dim " + std::to_string(hd) + " is not supported (64 or 128)");
  MOE_CHECK(B >= 0 && S >= 0 && H > 0, name + ": bad shape B=" + std::to_string(B) +
                                           " S=" + std::to_string(S) + " H=" + std::to_string(H));
  MOE_CHECK(static_cast<int64_t>(B) * H <= INT_MAX, name + ": B*H above 2^31 - 1");
  MOE_CHECK((static_cast<int64_t>(S) + 63) / 64 <= 65535, name + ": S above 65535 * 64");
}

bool aligned(const void* p, size_t n) { return reinterpret_cast<uintptr_t>(p) % n == 0; }

float softmax_scale(int hd) { return static_cast<float>(1.0 / std::sqrt(static_cast<double>(hd))); }
float softmax_scale_log2(int hd) {
  return static_cast<float>(1.4426950408889634 / std::sqrt(static_cast<double>(hd)));
}

// The device's opt-in limit of dynamic shared memory per block.
int device_optin_smem() {
  int device = 0, optin = 0;
  MOE_CUDA_CHECK(cudaGetDevice(&device));
  MOE_CUDA_CHECK(cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, device));
  return optin;
}

// Opts the kernel in to `bytes` of dynamic shared memory (above the 48 KiB
// default), after checking the device has that much per block.
template <typename Kernel>
void set_smem(Kernel kernel, size_t bytes, const char* op) {
  const int optin = device_optin_smem();
  MOE_CHECK(bytes <= static_cast<size_t>(optin),
            std::string(op) + ": needs " + std::to_string(bytes) +
                " bytes of shared memory per block, the device allows " + std::to_string(optin));
  MOE_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                      static_cast<int>(bytes)));
}

template <int HD>
size_t largest_smem_bytes() {
  return std::max({attn_tc::fwd_smem_bytes<HD>(), attn_tc::dq_smem_bytes<HD>(),
                   attn_tc::dkdv_smem_bytes<HD>()});
}

template <int HD>
void forward_impl(bf16* out, float* lse, const bf16* qkv, int B, int S, int H,
                  cudaStream_t stream) {
  using attn_tc::FwdCfg;
  const auto kernel = attn_tc::attn_tc_fwd_kernel<HD>;
  const size_t smem = attn_tc::fwd_smem_bytes<HD>();
  set_smem(kernel, smem, "attention_tc_forward");
  const dim3 grid(static_cast<unsigned>(B * H),
                  static_cast<unsigned>((S + FwdCfg::BM - 1) / FwdCfg::BM));
  kernel<<<grid, FwdCfg::kThreads, smem, stream>>>(out, lse, qkv, S, H, softmax_scale_log2(HD));
  MOE_CUDA_CHECK(cudaGetLastError());
}

template <int HD>
void backward_impl(bf16* dqkv, const bf16* dout, const bf16* out, const float* lse, const bf16* qkv,
                   int B, int S, int H, float* Dv, cudaStream_t stream) {
  using DkdvCfg = attn_tc::DkdvCfg<HD>;
  using attn_tc::DqCfg;
  const int64_t rows = static_cast<int64_t>(B) * H * S;
  attn_tc::attn_tc_rowdot_kernel<HD>
      <<<static_cast<unsigned>((rows + 3) / 4), 128, 0, stream>>>(Dv, dout, out, rows, S, H);
  MOE_CUDA_CHECK(cudaGetLastError());

  const float scale = softmax_scale(HD), scale_log2 = softmax_scale_log2(HD);
  {
    const auto kernel = attn_tc::attn_tc_dq_kernel<HD>;
    const size_t smem = attn_tc::dq_smem_bytes<HD>();
    set_smem(kernel, smem, "attention_tc_backward");
    const dim3 grid(static_cast<unsigned>(B * H),
                    static_cast<unsigned>((S + DqCfg::BM - 1) / DqCfg::BM));
    kernel<<<grid, DqCfg::kThreads, smem, stream>>>(dqkv, dout, lse, Dv, qkv, S, H, scale,
                                                    scale_log2);
    MOE_CUDA_CHECK(cudaGetLastError());
  }
  {
    const auto kernel = attn_tc::attn_tc_dkdv_kernel<HD>;
    const size_t smem = attn_tc::dkdv_smem_bytes<HD>();
    set_smem(kernel, smem, "attention_tc_backward");
    const dim3 grid(static_cast<unsigned>(B * H),
                    static_cast<unsigned>((S + DkdvCfg::BN - 1) / DkdvCfg::BN));
    kernel<<<grid, DkdvCfg::kThreads, smem, stream>>>(dqkv, dout, lse, Dv, qkv, S, H, scale,
                                                      scale_log2);
    MOE_CUDA_CHECK(cudaGetLastError());
  }
}

}  // namespace

bool attention_tc_supported(int hd) {
  if (hd != 64 && hd != 128) return false;
  int device = 0, major = 0;
  MOE_CUDA_CHECK(cudaGetDevice(&device));
  MOE_CUDA_CHECK(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device));
  const size_t need = hd == 64 ? largest_smem_bytes<64>() : largest_smem_bytes<128>();
  return major >= 8 && need <= static_cast<size_t>(device_optin_smem());
}

void attention_tc_forward(__nv_bfloat16* out, float* lse, const __nv_bfloat16* qkv, int B, int S,
                          int H, int hd, cudaStream_t stream) {
  check_tc_args("attention_tc_forward", B, S, H, hd);
  if (B == 0 || S == 0) return;
  MOE_CHECK(out && lse && qkv, "attention_tc_forward: null pointer");
  MOE_CHECK(aligned(out, 16) && aligned(qkv, 16) && aligned(lse, 4),
            "attention_tc_forward: qkv and out must be 16-byte aligned, lse 4-byte aligned");
  if (hd == 64)
    forward_impl<64>(out, lse, qkv, B, S, H, stream);
  else
    forward_impl<128>(out, lse, qkv, B, S, H, stream);
}

size_t attention_tc_backward_workspace_bytes(int B, int S, int H, int /*hd*/) {
  if (B <= 0 || S <= 0 || H <= 0) return 0;
  return static_cast<size_t>(B) * H * S * sizeof(float);
}

void attention_tc_backward(__nv_bfloat16* dqkv, const __nv_bfloat16* dout, const __nv_bfloat16* out,
                           const float* lse, const __nv_bfloat16* qkv, int B, int S, int H, int hd,
                           void* workspace, size_t workspace_bytes, cudaStream_t stream) {
  check_tc_args("attention_tc_backward", B, S, H, hd);
  if (B == 0 || S == 0) return;
  MOE_CHECK(dqkv && dout && out && lse && qkv, "attention_tc_backward: null pointer");
  MOE_CHECK(aligned(dqkv, 16) && aligned(dout, 16) && aligned(out, 16) && aligned(qkv, 16) &&
                aligned(lse, 4),
            "attention_tc_backward: qkv, dqkv, out and dout must be 16-byte aligned, lse 4-byte "
            "aligned");
  const size_t need = attention_tc_backward_workspace_bytes(B, S, H, hd);
  MOE_CHECK(workspace && workspace_bytes >= need && aligned(workspace, 4),
            "attention_tc_backward: workspace of " + std::to_string(workspace_bytes) +
                " bytes, needs " + std::to_string(need) + " (4-byte aligned)");
  auto* Dv = static_cast<float*>(workspace);
  if (hd == 64)
    backward_impl<64>(dqkv, dout, out, lse, qkv, B, S, H, Dv, stream);
  else
    backward_impl<128>(dqkv, dout, out, lse, qkv, B, S, H, Dv, stream);
}

}  // namespace moe::kernels
