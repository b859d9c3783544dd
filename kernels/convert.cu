// fp32 <-> bf16 conversions for the bf16 matmul path (convert.h).
// Memory-bound: 4 elements per thread per iteration when the pointers allow
// a vector access, a scalar grid-stride loop otherwise.
#include <cstdint>

#include "convert.h"
#include "cuda_check.h"
#include "elem.cuh"

namespace moe::kernels {
namespace {

constexpr int kThreads = 256;

__device__ __forceinline__ size_t global_tid() {
  return static_cast<size_t>(blockIdx.x) * blockDim.x + threadIdx.x;
}
__device__ __forceinline__ size_t grid_stride() {
  return static_cast<size_t>(gridDim.x) * blockDim.x;
}

__global__ void __launch_bounds__(kThreads)
    float_to_bf16_vec4(__nv_bfloat162* __restrict__ dst, const float4* __restrict__ src,
                       size_t n4) {
  for (size_t i = global_tid(); i < n4; i += grid_stride()) {
    const float4 v = src[i];
    dst[2 * i] = __floats2bfloat162_rn(v.x, v.y);
    dst[2 * i + 1] = __floats2bfloat162_rn(v.z, v.w);
  }
}

__global__ void __launch_bounds__(kThreads)
    float_to_bf16_scalar(__nv_bfloat16* __restrict__ dst, const float* __restrict__ src,
                         size_t n) {
  for (size_t i = global_tid(); i < n; i += grid_stride()) dst[i] = __float2bfloat16_rn(src[i]);
}

__global__ void __launch_bounds__(kThreads)
    bf16_to_float_scalar(float* __restrict__ dst, const __nv_bfloat16* __restrict__ src, size_t n,
                         bool accumulate) {
  for (size_t i = global_tid(); i < n; i += grid_stride()) {
    const float v = __bfloat162float(src[i]);
    dst[i] = accumulate ? dst[i] + v : v;
  }
}

__global__ void __launch_bounds__(kThreads)
    bf16_add_float_kernel(__nv_bfloat16* __restrict__ dst, const float* __restrict__ src,
                          size_t n) {
  for (size_t i = global_tid(); i < n; i += grid_stride())
    dst[i] = __float2bfloat16_rn(__bfloat162float(dst[i]) + src[i]);
}

bool aligned(const void* p, size_t bytes) { return reinterpret_cast<uintptr_t>(p) % bytes == 0; }

}  // namespace

void float_to_bf16(__nv_bfloat16* dst, const float* src, size_t n, cudaStream_t stream) {
  if (n == 0) return;
  size_t done = 0;
  if (aligned(src, 16) && aligned(dst, 8)) {
    const size_t n4 = n / 4;
    if (n4 > 0)
      float_to_bf16_vec4<<<grid_for(n4, kThreads), kThreads, 0, stream>>>(
          reinterpret_cast<__nv_bfloat162*>(dst), reinterpret_cast<const float4*>(src), n4);
    done = n4 * 4;
  }
  if (done < n)
    float_to_bf16_scalar<<<grid_for(n - done, kThreads), kThreads, 0, stream>>>(
        dst + done, src + done, n - done);
  MOE_CUDA_CHECK(cudaGetLastError());
}

void bf16_to_float(float* dst, const __nv_bfloat16* src, size_t n, bool accumulate,
                   cudaStream_t stream) {
  if (n == 0) return;
  bf16_to_float_scalar<<<grid_for(n, kThreads), kThreads, 0, stream>>>(dst, src, n, accumulate);
  MOE_CUDA_CHECK(cudaGetLastError());
}

void bf16_add_float(__nv_bfloat16* dst, const float* src, size_t n, cudaStream_t stream) {
  if (n == 0) return;
  bf16_add_float_kernel<<<grid_for(n, kThreads), kThreads, 0, stream>>>(dst, src, n);
  MOE_CUDA_CHECK(cudaGetLastError());
}

}  // namespace moe::kernels
