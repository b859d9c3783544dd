// Kernels with inline PTX for the PTX emulation's own tests
// (emu/tests/test_emu_ptx.cpp), written as ordinary CUDA (sm_80) and run
// through emu/rewrite.py.
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "ptx_test_kernels.h"

namespace emu_ptx_test {
namespace {

__device__ uint32_t smem(const void* p) { return static_cast<uint32_t>(__cvta_generic_to_shared(p)); }

__global__ void ldmatrix_kernel(uint32_t* out, const uint16_t* rows, int variant) {
  __shared__ __align__(16) uint16_t tile[32 * 8];
  const int lane = threadIdx.x;
  for (int c = 0; c < 8; ++c) tile[lane * 8 + c] = rows[lane * 8 + c];
  __syncwarp();
  const int num = variant == 2 ? 1 : variant == 3 ? 2 : 4;
  const uint16_t* row = tile + ((5 * lane + 3) % 32) * 8;
  // Lanes past the 8 * num that supply rows give a misaligned address.
  const uint32_t addr = smem(row) + (lane < 8 * num ? 0 : 2);
  uint32_t r[4] = {0, 0, 0, 0};
  if (variant == 0) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(addr));
  } else if (variant == 1) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(addr));
  } else if (variant == 2) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x1.shared::cta.b16 {%0}, [%1];" : "=r"(r[0]) : "r"(addr));
  } else if (variant == 3) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x2.trans.shared.b16 {%0, %1}, [%2];"
                 : "=r"(r[0]), "=r"(r[1])
                 : "r"(addr));
  } else {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.b16 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "l"(row));
  }
  for (int m = 0; m < 4; ++m) out[lane * 4 + m] = r[m];
}

__device__ void mma_16816(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, "
      "{%8, %9}, {%0, %1, %2, %3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

__global__ void mma_kernel(float* d, const uint32_t* a, const uint32_t* b, const float* c) {
  const int L = threadIdx.x;
  const uint32_t ar[4] = {a[L * 4], a[L * 4 + 1], a[L * 4 + 2], a[L * 4 + 3]};
  float acc[4] = {c[L * 4], c[L * 4 + 1], c[L * 4 + 2], c[L * 4 + 3]};
  mma_16816(acc, ar, b[L * 2], b[L * 2 + 1]);
  for (int i = 0; i < 4; ++i) d[L * 4 + i] = acc[i];
}

__device__ void ldsm_x4(uint32_t (&r)[4], const uint16_t* p, bool trans) {
  if (trans)
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(smem(p)));
  else
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(smem(p)));
}

__device__ uint32_t pack_bf16x2(float lo, float hi) {
  const __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
  uint32_t u;
  memcpy(&u, &v, sizeof u);
  return u;
}

// Row stride 72 elements (64 + 8 of padding, 144 bytes: 16-byte aligned).
constexpr int kLd = 72;

__global__ void tile_products_kernel(float* abt, float* ab, const uint16_t* A, const uint16_t* B,
                                     const float* P) {
  __shared__ __align__(16) uint16_t As[16 * kLd];
  __shared__ __align__(16) uint16_t Bs[16 * kLd];
  const int lane = threadIdx.x, g = lane / 4, t = lane % 4;
  for (int i = lane; i < 16 * 64; i += 32) {
    As[i / 64 * kLd + i % 64] = A[i];
    Bs[i / 64 * kLd + i % 64] = B[i];
  }
  __syncwarp();
  // A B^T: A fragment rows L%16, columns 8 (L/16); B = X^T with X [n][k]:
  // row 8 (L/16) + L%8, column 8 ((L/8)%2); regs {0,1} n-block 0, {2,3} n-block 1.
  float acc[2][4] = {};
  for (int kk = 0; kk < 4; ++kk) {
    uint32_t a[4], b[4];
    ldsm_x4(a, As + (lane % 16) * kLd + (lane / 16) * 8 + kk * 16, false);
    ldsm_x4(b, Bs + (lane % 8 + (lane / 16) * 8) * kLd + ((lane / 8) % 2) * 8 + kk * 16, false);
    mma_16816(acc[0], a, b[0], b[1]);
    mma_16816(acc[1], a, b[2], b[3]);
  }
  for (int nb = 0; nb < 2; ++nb)
    for (int c = 0; c < 4; ++c) abt[(g + 8 * (c / 2)) * 16 + nb * 8 + 2 * t + c % 2] = acc[nb][c];
  // P B: P's accumulator-layout values packed into A fragments (cols 2t,
  // 2t+1 of tile 0 then tile 1), B [k][n] row-major through .trans.
  float pc[2][4];
  for (int nb = 0; nb < 2; ++nb)
    for (int c = 0; c < 4; ++c) pc[nb][c] = P[(g + 8 * (c / 2)) * 16 + nb * 8 + 2 * t + c % 2];
  const uint32_t pa[4] = {pack_bf16x2(pc[0][0], pc[0][1]), pack_bf16x2(pc[0][2], pc[0][3]),
                          pack_bf16x2(pc[1][0], pc[1][1]), pack_bf16x2(pc[1][2], pc[1][3])};
  float o[8][4] = {};
  for (int nd = 0; nd < 8; nd += 2) {
    uint32_t b[4];
    ldsm_x4(b, Bs + (lane % 16) * kLd + (lane / 16) * 8 + nd * 8, true);
    mma_16816(o[nd], pa, b[0], b[1]);
    mma_16816(o[nd + 1], pa, b[2], b[3]);
  }
  for (int nd = 0; nd < 8; ++nd)
    for (int c = 0; c < 4; ++c) ab[(g + 8 * (c / 2)) * 64 + nd * 8 + 2 * t + c % 2] = o[nd][c];
}

__device__ void cp_async_16(void* dst, const void* src, int src_size) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(smem(dst)), "l"(src), "r"(src_size)
               : "memory");
}

__global__ void cp_async_kernel(uint32_t* out, const uint32_t* src) {
  __shared__ __align__(16) uint32_t slots[3][32][4];
  const int t = threadIdx.x;
  uint32_t* o = out + t * 12;
  cp_async_16(slots[0][t], src + t * 4, 16);
  asm volatile("cp.async.commit_group;\n" ::: "memory");
  cp_async_16(slots[1][t], src + 128 + t * 4, t % 2 ? 8 : t % 4 == 2 ? 0 : 16);
  asm volatile("cp.async.commit_group;\n" ::: "memory");
  for (int k = 0; k < 4; ++k) o[k] = slots[0][t][k];
  asm volatile("cp.async.wait_group %0;\n" ::"n"(1) : "memory");
  o[4] = slots[0][t][0];
  o[5] = slots[1][t][0];
  asm volatile("cp.async.wait_group 0;\n" ::: "memory");
  for (int k = 0; k < 4; ++k) o[6 + k] = slots[1][t][k];
  asm volatile("cp.async.ca.shared.global [%0], [%1], %2;\n"
               "cp.async.wait_all;\n" ::"r"(smem(slots[2][t])), "l"(src + 256 + t), "n"(4)
               : "memory");
  o[10] = slots[2][t][0];
  o[11] = smem(slots[0][t]) - smem(slots[0][0]);
}

__global__ void misuse_kernel(Misuse what, float* device_buffer, const float* host_buffer) {
  extern __shared__ __align__(16) unsigned char dyn[];
  const int lane = threadIdx.x;
  uint32_t r[4] = {0, 0, 0, 0};
  switch (what) {
    case Misuse::LdmatrixMisaligned:
    case Misuse::LdmatrixOutside:
    case Misuse::LdmatrixHalfWarp: {
      uint32_t addr = smem(dyn + (lane % 8) * 16);
      if (what == Misuse::LdmatrixMisaligned && lane == 5) addr += 2;
      if (what == Misuse::LdmatrixOutside && lane == 9) addr += 1024;
      if (what == Misuse::LdmatrixHalfWarp && lane >= 16) return;
      asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                   : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                   : "r"(addr));
      break;
    }
    case Misuse::CpAsyncFromHost:
      cp_async_16(dyn + lane * 16, host_buffer + lane * 4, 16);
      break;
    case Misuse::CpAsyncToGlobal:
      cp_async_16(device_buffer + lane * 4, device_buffer + 128 + lane * 4, 16);
      break;
    case Misuse::CpAsyncSrcSizeTooLarge:
      cp_async_16(dyn + lane * 16, device_buffer + lane * 4, 32);
      break;
    case Misuse::NotEmulated:
      asm volatile("ld.global.nc.u32 %0, [%1];" : "=r"(r[0]) : "l"(device_buffer));
      break;
  }
  device_buffer[lane] = __uint_as_float(r[0]);
}

}  // namespace

void ldmatrix(uint32_t* out, const uint16_t* rows, int variant, cudaStream_t s) {
  ldmatrix_kernel<<<1, 32, 0, s>>>(out, rows, variant);
}
void mma(float* d, const uint32_t* a, const uint32_t* b, const float* c, cudaStream_t s) {
  mma_kernel<<<1, 32, 0, s>>>(d, a, b, c);
}
void tile_products(float* abt, float* ab, const uint16_t* A, const uint16_t* B, const float* P,
                   cudaStream_t s) {
  tile_products_kernel<<<1, 32, 0, s>>>(abt, ab, A, B, P);
}
void cp_async(uint32_t* out, const uint32_t* src, cudaStream_t s) { cp_async_kernel<<<1, 32, 0, s>>>(out, src); }
void misuse(Misuse what, float* device_buffer, const float* host_buffer, cudaStream_t s) {
  misuse_kernel<<<1, 32, 512, s>>>(what, device_buffer, host_buffer);
}

}  // namespace emu_ptx_test
