// Host-callable launchers for causal attention (kernels/attention.cu) and
// dropless token dispatch (kernels/dispatch.cu).
//
// Same conventions as kernels.h: plain C++ declarations, device pointers, one
// stream; every launcher is asynchronous on that stream, validates its sizes
// and throws moe::InternalError on bad arguments or a failed launch. Semantics
// match the ops of the same name in src/backend/backend.h ("+=" accumulates,
// everything else is overwritten). Everything is deterministic: fixed
// reduction order, no floating-point atomics, same bits on every run.
#pragma once

#include <cstddef>
#include <cstdint>

#include <cuda_bf16.h>
#include <cuda_runtime.h>

namespace moe::kernels {

// ---- Causal attention over a fused qkv buffer (kernels/attention.cu) ----
//
// qkv [B*S, 3*H*hd] = q | k | v, head h at columns h*hd of each part; scale
// 1/sqrt(hd). Requires 1 <= hd <= 128.

// out [B*S, H*hd]; lse [B, H, S] = log-sum-exp of each query's scaled scores.
// Flash-style: online softmax over key tiles, no S x S matrix in memory.
void attention_forward(float* out, float* lse, const float* qkv, int B, int S, int H, int hd,
                       cudaStream_t stream);

// Bytes of device workspace attention_backward needs (D_i = <dout_i, out_i>).
size_t attention_backward_workspace_bytes(int B, int S, int H);

// dqkv [B*S, 3*H*hd] overwritten (q, k and v parts). Probabilities are
// recomputed from q, k and lse. One writer per output element (a dq pass over
// query tiles, a dk/dv pass over key tiles), so no atomics.
// workspace: >= attention_backward_workspace_bytes(B, S, H) bytes (clobbered).
void attention_backward(float* dqkv, const float* dout, const float* out, const float* lse,
                        const float* qkv, int B, int S, int H, int hd, void* workspace,
                        size_t workspace_bytes, cudaStream_t stream);

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
