// Launchers of kernels/rmsnorm.cu: RMSNorm forward (plain and fused with the
// residual add) and backward.
//
// Plain C++ declarations (no CUDA syntax): callers pass device pointers and a
// stream; every launcher is asynchronous on that stream, validates its sizes
// and throws moe::InternalError on bad arguments or a failed launch. Semantics
// match the ops of the same name in src/backend/backend.h ("+=" accumulates,
// everything else is overwritten). Deterministic: fixed reduction order, no
// floating-point atomics, same bits on every run. Launchers templated on A
// are instantiated for float and __nv_bfloat16 (kernels/elem.cuh).
#pragma once

#include <cstddef>
#include <cstdint>

#include <cuda_bf16.h>
#include <cuda_runtime.h>

namespace moe::kernels {

// ---- RMSNorm (kernels/rmsnorm.cu): fp32 stream and statistics, A output ----

// y[N,D] = x / sqrt(mean(x^2) + eps) * w ;  rstd[N] = 1 / sqrt(mean(x^2) + eps).
template <typename A>
void rmsnorm_forward(A* y, float* rstd, const float* x, const float* w, int N, int D, float eps,
                     cudaStream_t stream);

// sum[N,D] = resid + delta, then y and rstd as rmsnorm_forward of sum (the
// residual add fused with the next norm).
template <typename A>
void residual_rmsnorm_forward(float* sum, A* y, float* rstd, const float* resid, const A* delta,
                              const float* w, int N, int D, float eps, cudaStream_t stream);

// Bytes of device workspace rmsnorm_backward needs for these sizes (the
// per-chunk partial sums of dw; the chunking depends on N and D only, so the
// result is bit-identical on every device and every run).
size_t rmsnorm_backward_workspace_bytes(int N, int D);

// dx[N,D] += d(y)/d(x)^T dy ;  dw[D] += sum_n dy[n] * x[n] * rstd[n]; dx_act
// (null: skipped) = the updated dx as A. workspace: >=
// rmsnorm_backward_workspace_bytes(N, D) bytes of device memory (clobbered).
template <typename A>
void rmsnorm_backward(float* dx, A* dx_act, float* dw, const A* dy, const float* x, const float* w,
                      const float* rstd, int N, int D, void* workspace, size_t workspace_bytes,
                      cudaStream_t stream);

}  // namespace moe::kernels
