// Launchers of kernels/attention.cu: RoPE and fp32 causal attention (the
// tensor-core bf16 attention is kernels/attention_tc.cu).
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

// ---- RoPE (kernels/attention.cu), rotate-half, in place ----
// qkv [B*S, 3*H*hd]; rotates pairs (i, i + hd/2) of every q and k head of row
// n by angle (n % S) * theta^(-2i/hd). Angles, cos/sin and the rotation are
// computed in fp64 (as on the CPU), so the result is correctly rounded to
// within an ulp or so at any sequence length (of fp32; bf16 A is rounded once
// more from that fp32 value, as the CPU's bf16 mode does). hd must be even.
template <typename A>
void rope_forward(A* qkv, int B, int S, int H, int hd, double theta, cudaStream_t stream);
// The inverse rotation (by -angle) on the q and k parts of dqkv.
template <typename A>
void rope_backward(A* dqkv, int B, int S, int H, int hd, double theta, cudaStream_t stream);

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

}  // namespace moe::kernels
