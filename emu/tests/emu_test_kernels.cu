// Kernels for the emulated device's own tests (emu/tests/test_emu.cpp),
// written as ordinary CUDA and run through emu/rewrite.py.
#include <cuda_runtime.h>

#include "emu_test_kernels.h"

namespace emu_test {
namespace {

__device__ float warp_sum(float v) {
  for (int o = 16; o > 0; o /= 2) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

template <bool kBarrier>
__global__ void block_sums_kernel(float* out, const float* in) {
  __shared__ float partial[32];
  const int n = blockDim.x, lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  const float v = warp_sum(in[blockIdx.x * n + threadIdx.x]);
  if (lane == 0) partial[warp] = v;
  if (kBarrier) __syncthreads();
  if (threadIdx.x == 0) {
    float s = 0.0f;
    for (int w = 0; w < n / 32; ++w) s += partial[w];
    out[blockIdx.x] = s;
  }
}

__global__ void divergent_barrier_kernel(float* out) {
  if (threadIdx.x < 16) __syncthreads();
  out[threadIdx.x] = 1.0f;
}

__global__ void shuffle_missing_lanes_kernel(float* out) {
  if (threadIdx.x >= 16) return;
  out[threadIdx.x] = __shfl_xor_sync(0xffffffffu, float(threadIdx.x), 1);
}

__global__ void warp_ops_kernel(unsigned* out) {
  const unsigned lane = threadIdx.x;
  __syncwarp(lane < 16 ? 0x0000ffffu : 0xffff0000u);
  out[lane * 4 + 0] = __shfl_up_sync(0xffffffffu, lane, 3, 16);
  out[lane * 4 + 1] = __shfl_down_sync(0xffffffffu, lane, 3, 16);
  out[lane * 4 + 2] = __shfl_sync(0xffffffffu, lane, 21, 16);
  out[lane * 4 + 3] = __match_any_sync(0xffffffffu, lane / 4);
}

__global__ void warp_rules_kernel(unsigned* out) {
  const unsigned lane = threadIdx.x;
  out[lane * 3 + 0] = __shfl_xor_sync(0xffffffffu, lane, 16, 16);
  if (lane >= 16) __syncwarp(0xffff0000u);
  out[lane * 3 + 1] = __shfl_xor_sync(0xffffffffu, lane, 1);
  unsigned v = lane;
  if (lane < 16) v += __shfl_down_sync(0x0000ffffu, v, 8);
  if (lane == 0) out[2] = v;  // lane 0 reads lane 8: defined
  if (lane == 15) out[15 * 3 + 2] = v;  // lane 15 reads lane 23: undefined
}

__global__ void static_shared_kernel(unsigned* out, unsigned launch) {
  static __shared__ unsigned tile[64];
  tile[threadIdx.x] = threadIdx.x + launch;
  __syncthreads();
  out[threadIdx.x] = tile[threadIdx.x];
}

__global__ void read_unwritten_shared_kernel(float* out) {
  __shared__ float never_written[64];
  out[threadIdx.x] = never_written[threadIdx.x];
}

__global__ void overrun_dynamic_shared_kernel(int n) {
  extern __shared__ int dyn[];
  if (threadIdx.x == 0) dyn[n] = 1;
}

__global__ void scale_kernel(float* y, const float* x, float a, int n) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) y[i] = x[i] * a;
}

__global__ void add_one_past_end_kernel(float* y, const float* x, int n) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i <= n) y[i] = x[i < n ? i : 0] + 1.0f;
}

}  // namespace

void block_sums(float* out, const float* in, int blocks, int n, cudaStream_t s) {
  block_sums_kernel<true><<<blocks, n, 0, s>>>(out, in);
}
void block_sums_racy(float* out, const float* in, int blocks, int n, cudaStream_t s) {
  block_sums_kernel<false><<<blocks, n, 0, s>>>(out, in);
}
void divergent_barrier(float* out, cudaStream_t s) { divergent_barrier_kernel<<<1, 32, 0, s>>>(out); }
void shuffle_missing_lanes(float* out, cudaStream_t s) {
  shuffle_missing_lanes_kernel<<<1, 32, 0, s>>>(out);
}
void warp_ops(unsigned* out, cudaStream_t s) { warp_ops_kernel<<<1, 32, 0, s>>>(out); }
void warp_rules(unsigned* out, cudaStream_t s) { warp_rules_kernel<<<1, 32, 0, s>>>(out); }
void static_shared(unsigned* out, unsigned launch, cudaStream_t s) {
  static_shared_kernel<<<1, 64, 0, s>>>(out, launch);
}
void read_unwritten_shared(float* out, cudaStream_t s) {
  read_unwritten_shared_kernel<<<1, 64, 0, s>>>(out);
}
void overrun_dynamic_shared(int bytes, cudaStream_t s) {
  overrun_dynamic_shared_kernel<<<1, 32, bytes, s>>>(bytes / int(sizeof(int)));
}
void scale(float* y, const float* x, float a, int n, int threads, size_t smem, cudaStream_t s) {
  scale_kernel<<<(n + threads - 1) / threads, threads, smem, s>>>(y, x, a, n);
}
const void* scale_kernel_address() { return reinterpret_cast<const void*>(&scale_kernel); }
void add_one_past_end(float* y, const float* x, int n, cudaStream_t s) {
  add_one_past_end_kernel<<<(n + 1 + 63) / 64, 64, 0, s>>>(y, x, n);
}

}  // namespace emu_test
