// Host-callable launchers for the tensor-core causal attention
// (kernels/attention_tc.cu): bf16 operands, fp32 accumulation, FlashAttention-2
// style, forward and a deterministic backward.
//
// Same conventions as kernels.h: plain C++ declarations (cuda_bf16.h is valid
// host C++), device pointers, one stream; every launcher is asynchronous on
// that stream, validates its arguments and throws moe::InternalError on bad
// arguments or a failed launch. No floating-point atomics: the same inputs
// give the same bits on every run.
//
// Layout (as kernels::attention_forward): qkv [B*S, 3*H*hd] = q | k | v, head h
// at columns h*hd of each part, row-major; out [B*S, H*hd]; lse [B, H, S];
// scale 1/sqrt(hd); causal (query i sees keys j <= i).
//
// Requirements: hd 64 or 128 (anything else is refused, naming the value);
// B >= 0, S >= 0, H >= 1 (B = 0 or S = 0: nothing to do); B*H <= 2^31 - 1;
// qkv, out, dout and dqkv 16-byte aligned, lse and the workspace 4-byte
// aligned; a device of compute capability 8.0 or newer.
//
// Not yet run on a GPU (docs/cuda.md, "Tensor-core attention").
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstddef>

namespace moe::kernels {

// Whether the current device runs the kernels at head_dim hd: hd 64 or 128,
// compute capability 8.0 or newer, and the shared memory the largest of its
// kernels needs per block within the device's opt-in limit (hd 128's
// forward and dq kernels need 104,448 B: sm_80 and sm_90 have it, sm_86 and
// sm_89 with 99 KiB do not). Callers take another path when false.
bool attention_tc_supported(int hd);

// out = softmax(q k^T / sqrt(hd), causal) v in bf16 (fp32 accumulation,
// probabilities rounded to bf16 for the P V product); lse[b,h,i] = natural
// log-sum-exp of query i's scaled scores, fp32.
void attention_tc_forward(__nv_bfloat16* out, float* lse, const __nv_bfloat16* qkv, int B, int S,
                          int H, int hd, cudaStream_t stream);

// Bytes of device workspace attention_tc_backward needs: D_i = <dout_i, out_i>
// in fp32, B*H*S floats.
size_t attention_tc_backward_workspace_bytes(int B, int S, int H, int hd);

// dqkv [B*S, 3*H*hd] bf16, overwritten (q, k and v parts). dout and out
// [B*S, H*hd] bf16, lse from attention_tc_forward. Probabilities are
// recomputed from q, k and lse. One writer per output element: a dk/dv kernel
// over key tiles and a dq kernel over query tiles, so no atomics.
// workspace: >= attention_tc_backward_workspace_bytes(B, S, H, hd) bytes
// (clobbered).
void attention_tc_backward(__nv_bfloat16* dqkv, const __nv_bfloat16* dout, const __nv_bfloat16* out,
                           const float* lse, const __nv_bfloat16* qkv, int B, int S, int H, int hd,
                           void* workspace, size_t workspace_bytes, cudaStream_t stream);

}  // namespace moe::kernels
