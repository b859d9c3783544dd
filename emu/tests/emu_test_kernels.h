// Small kernels that exercise the emulated device's execution model, each
// with a host launcher (emu_test_kernels.cu): what a correct one computes
// is known by hand, and the broken ones must be reported, not run.
#pragma once

#include <cuda_runtime.h>

namespace emu_test {

// out[b] = sum of in[b*n .. b*n+n) (n = blockDim, a multiple of 32): warp
// shuffles, then shared memory across warps.
void block_sums(float* out, const float* in, int blocks, int n, cudaStream_t s);
// The same without the __syncthreads between writing and reading the warp
// partials: a race whose outcome depends on the schedule.
void block_sums_racy(float* out, const float* in, int blocks, int n, cudaStream_t s);
// Lanes < 16 call __syncthreads, the others do not.
void divergent_barrier(float* out, cudaStream_t s);
// Lanes < 16 shuffle with a full mask; the others exit.
void shuffle_missing_lanes(float* out, cudaStream_t s);
// out[lane] per warp: lanes 0-15 and 16-31 each __syncwarp on their half,
// then shfl_up / shfl_down / shfl_idx in width-16 segments and
// __match_any_sync on lane / 4 (32 lanes x 4 results).
void warp_ops(unsigned* out, cudaStream_t s);
// Per lane (32 x 3): __shfl_xor_sync(full, lane, 16, width 16) (earlier
// group readable, a later one gives the own value); lanes 16-31 first
// __syncwarp on their half while lanes 0-15 already wait in a full-mask
// shuffle (legal: they meet there later); a half-warp reduction whose
// lane 15 reads lane 23, outside its mask (an undefined value, not an error).
void warp_rules(unsigned* out, cudaStream_t s);
// out[t] = t + launch: a `static __shared__` array written and read in
// every launch (its storage is the block's, launch after launch).
void static_shared(unsigned* out, unsigned launch, cudaStream_t s);
// out[i] = the value of shared memory that nobody wrote (as float).
void read_unwritten_shared(float* out, cudaStream_t s);
// Writes one element past `bytes` of dynamic shared memory.
void overrun_dynamic_shared(int bytes, cudaStream_t s);
// y[i] = x[i] * a for i < n, launched with `threads` per block and `smem`
// bytes of dynamic shared memory (checks of the launch configuration).
void scale(float* y, const float* x, float a, int n, int threads, size_t smem, cudaStream_t s);
const void* scale_kernel_address();
// y[i] = x[i] + 1 for i <= n: one element past the end.
void add_one_past_end(float* y, const float* x, int n, cudaStream_t s);

}  // namespace emu_test
