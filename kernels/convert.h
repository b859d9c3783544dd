// Host-callable launchers for the precision conversions of bf16 training
// (kernels/convert.cu): fp32 master weights to their bf16 copies, bf16
// activations to fp32 staging for the fp32 router matmul, and an fp32 result
// added into a bf16 activation.
//
// Same contract as kernels.h: plain C++ declarations (cuda_bf16.h is valid
// host C++), device pointers, asynchronous on `stream`, InternalError on a
// failed launch. Rounding is round-to-nearest-even in both directions of the
// fp32 -> bf16 conversion; bf16 -> fp32 is exact.
#pragma once

#include <cstddef>

#include <cuda_bf16.h>
#include <cuda_runtime.h>

namespace moe::kernels {

// dst[i] = bf16(src[i]) for i < n.
void float_to_bf16(__nv_bfloat16* dst, const float* src, size_t n, cudaStream_t stream);

// dst[i] = float(src[i]) (accumulate false) or dst[i] += float(src[i]) (true).
void bf16_to_float(float* dst, const __nv_bfloat16* src, size_t n, bool accumulate,
                   cudaStream_t stream);

// dst[i] = bf16(float(dst[i]) + src[i]): one rounding of the fp32 sum.
void bf16_add_float(__nv_bfloat16* dst, const float* src, size_t n, cudaStream_t stream);

}  // namespace moe::kernels
