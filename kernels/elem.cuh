// Device-side loads and stores of activations for kernels templated on the
// activation type A (float, or __nv_bfloat16 in bf16 training): every kernel
// computes in fp32, reads A through to_f32 and writes through store, which
// rounds to nearest even for bf16 and is the identity for float (so the fp32
// kernels keep their bits).
#pragma once

#include <cuda_bf16.h>

namespace moe::kernels {

__device__ __forceinline__ float to_f32(float v) { return v; }
__device__ __forceinline__ float to_f32(__nv_bfloat16 v) { return __bfloat162float(v); }

__device__ __forceinline__ void store(float* p, float v) { *p = v; }
__device__ __forceinline__ void store(__nv_bfloat16* p, float v) { *p = __float2bfloat16_rn(v); }

}  // namespace moe::kernels

// Explicit instantiation of a launcher template for both activation types:
// MOE_FOR_ACTIVATIONS(MACRO) expands MACRO(float) and MACRO(__nv_bfloat16).
#define MOE_FOR_ACTIVATIONS(M) \
  M(float)                     \
  M(__nv_bfloat16)
