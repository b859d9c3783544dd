// Host-callable launchers for the CUDA kernels in kernels/*.cu.
//
// Plain C++ declarations (no CUDA syntax): callers pass device pointers and a
// stream; every launcher is asynchronous on that stream, validates its sizes
// and throws moe::InternalError on bad arguments or a failed launch. Semantics
// match the ops of the same name in src/backend/backend.h ("+=" accumulates,
// everything else is overwritten). All reductions are deterministic: fixed
// order, no floating-point atomics, same bits on every run.
#pragma once

#include <cstddef>
#include <cstdint>

#include <cuda_bf16.h>
#include <cuda_runtime.h>

namespace moe::kernels {

// Launchers templated on A are instantiated for the two activation types,
// float and __nv_bfloat16 (bf16 training); they compute in fp32 and round a
// bf16 result once when they store it (kernels/elem.cuh).

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

// ---- Router (kernels/router.cu) ----

// Per token t: picks the K experts with the largest key s+b (additive) or s*b
// (multiplicative), computed in fp32; ties go to the lower expert index;
// expert_idx[t*K+k] lists them in selection order. gates[t*K+k] = s of that
// expert (the bias only selects), divided by the sum of the selected s when
// normalize, times route_scale. scores [N,E], bias [E] or null (select on s
// alone, whatever multiplicative_bias says). Requires 1 <= K <= min(E, 32).
// Any keys, non-finite too: the order is total (backend/topk_order.h: +inf
// first, NaN last, below -inf, NaNs by index), so every token gets K distinct
// experts in [0, E), the same as the CPU backend's. A NaN score still reaches
// the gates when picked (and the score backward when not), so the step's loss
// or gradient norm is non-finite and the trainer skips it.
void topk_route(int32_t* expert_idx, float* gates, const float* scores, const float* bias, int N,
                int E, int K, bool multiplicative_bias, bool normalize, float route_scale,
                cudaStream_t stream);

}  // namespace moe::kernels

// The other op families, one header each beside their .cu files.
#include "kernels_attention_dispatch.h"
#include "kernels_attention_tc.h"
#include "kernels_convert.h"
#include "kernels_elementwise.h"
