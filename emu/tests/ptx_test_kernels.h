// Small kernels with inline PTX (ptx_test_kernels.cu, rewritten by
// emu/rewrite.py like any .cu) for the instruction-level tests of the PTX
// emulation (test_emu_ptx.cpp): what each computes follows from the PTX
// ISA's definitions by hand, and the broken ones must be reported.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

namespace emu_ptx_test {

// ldmatrix .m8n8 .b16 from 32 shared rows of 8 u16 (rows[r * 8 + c], copied
// from `rows`): lane i gives the address of row (5 i + 3) % 32 (a
// permutation), lanes at and past 8 * num a misaligned address (unused by
// the ISA). out[lane * 4 + m] = register m (m < num). variant: 0 = .x4,
// 1 = .x4.trans, 2 = .x1, 3 = .x2.trans, 4 = .x4 with generic addressing
// (no .shared, 64-bit address).
void ldmatrix(uint32_t* out, const uint16_t* rows, int variant, cudaStream_t s);
// One mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 by one warp:
// lane L's registers are a[L*4 + i], b[L*2 + i], c[L*4 + i]; d[L*4 + i] its
// results.
void mma(float* d, const uint32_t* a, const uint32_t* b, const float* c, cudaStream_t s);
// The attention kernels' two warp tile products, with their ldmatrix
// addressing (kernels/attention_tc.cu's header comment), on 16 x 64 (A),
// 16 x 64 (B, row-major [n][k]) and 16 x 16 (P, fp32) inputs:
// abt[r * 16 + n] = sum_d A[r][d] B[n][d] (ldmatrix.x4 + mma, B = X^T) and
// ab[r * 64 + d] = sum_k P[r][k] B[k][d] (P packed to bf16 A fragments in
// registers, ldmatrix.x4.trans + mma).
void tile_products(float* abt, float* ab, const uint16_t* A, const uint16_t* B, const float* P,
                   cudaStream_t s);
// cp.async by 32 threads, each on its own 16-byte slots of shared memory,
// from src (u32, 4 per slot): out[t * 12 + k] records, per thread t:
//   k 0-3:  slot A (group 1, src-size 16) read right after issuing both groups
//   k 4-5:  slot A word 0 and slot B (group 2, src-size 8 for odd t, 0 for
//           t % 4 == 2, else 16) word 0 after wait_group 1
//   k 6-9:  slot B after wait_group 0
//   k 10:   slot C (cp.async.ca, cp-size 4) after wait_all
//   k 11:   __cvta_generic_to_shared of slot A minus that of slot 0
void cp_async(uint32_t* out, const uint32_t* src, cudaStream_t s);
// Broken uses, each a fault of the named kind.
enum class Misuse {
  LdmatrixMisaligned,     // lane 5's row address 2 bytes off
  LdmatrixOutside,        // a row past the end of dynamic shared memory
  LdmatrixHalfWarp,       // lanes 16-31 have exited
  CpAsyncFromHost,        // source a host pointer
  CpAsyncToGlobal,        // destination converted from a global pointer
  CpAsyncSrcSizeTooLarge, // src-size 32 with cp-size 16
  NotEmulated,            // an instruction the emulation lacks
};
void misuse(Misuse what, float* device_buffer, const float* host_buffer, cudaStream_t s);

}  // namespace emu_ptx_test
