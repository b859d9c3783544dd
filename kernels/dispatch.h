// Launchers of kernels/dispatch.cu: the dispatch plan (a stable counting
// sort of the token slots by expert) and the row moves of dropless dispatch.
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

// ---- Token dispatch (kernels/dispatch.cu) ----

// Bytes of device workspace dispatch_plan needs for N tokens, K slots, E experts.
size_t dispatch_plan_workspace_bytes(int N, int E, int K);

// Stable counting sort of the N*K (token, slot) pairs by expert: pairs of
// expert e occupy rows [offsets[e], offsets[e+1]) in (token, slot) order,
// offsets = exclusive prefix sum of counts. Writes row_of_slot[t*K+k] and
// counts[e] (int64, device, overwritten). Requires 1 <= E <= 8192 and
// 0 <= expert_idx < E, which topk_route guarantees for any scores (NaN
// included). An index outside gets row -1 and is not counted; the row kernels
// below skip a slot of row -1 (no read, no write), so even a bad index never
// touches memory out of bounds.
// workspace: >= dispatch_plan_workspace_bytes(N, E, K) bytes (clobbered).
void dispatch_plan(int32_t* row_of_slot, int64_t* counts, const int32_t* expert_idx, int N, int E,
                   int K, void* workspace, size_t workspace_bytes, cudaStream_t stream);

// The row ops below move activations, A = float or __nv_bfloat16; gates are
// fp32 and the sums run in fp32.

// xp[row_of_slot[t*K+k]] = x[t]
template <typename A>
void permute_rows(A* xp, const A* x, const int32_t* row_of_slot, int N, int K, int D,
                  cudaStream_t stream);

// dx[t] += sum_k dxp[row_of_slot[t*K+k]]  (k in order; one writer per token row)
template <typename A>
void permute_rows_backward(A* dx, const A* dxp, const int32_t* row_of_slot, int N, int K, int D,
                           cudaStream_t stream);

// y[t] += sum_k gates[t,k] * yp[row_of_slot[t*K+k]]  (k in order)
template <typename A>
void combine_forward(A* y, const A* yp, const float* gates, const int32_t* row_of_slot, int N,
                     int K, int D, cudaStream_t stream);

// dyp[row_of_slot[t*K+k]] = gates[t,k] * dy[t];  dgates[t,k] = <dy[t], yp[row]> (overwritten)
template <typename A>
void combine_backward(A* dyp, float* dgates, const A* dy, const A* yp, const float* gates,
                      const int32_t* row_of_slot, int N, int K, int D, cudaStream_t stream);

// dst[i] = src[index[i]] for i < rows.
template <typename A>
void gather_rows(A* dst, const A* src, const int32_t* index, int64_t rows, int D,
                 cudaStream_t stream);

}  // namespace moe::kernels
