// Launchers of kernels/loss_optim.cu: reductions (sum, sum of squares, which
// return to the host and so synchronize the stream), cross-entropy, AdamW.
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

#include "core/op_args.h"

namespace moe::kernels {

// ---- reductions (kernels/loss_optim.cu), fp64 accumulation ----
// Two passes: fixed chunks of the input -> fp64 partials in `workspace`, then
// one block sums the partials in a fixed order. Returns the result on the host
// (synchronizes `stream`). workspace: >= reduce_workspace_bytes(n) bytes of
// device memory (contents ignored, clobbered).
size_t reduce_workspace_bytes(size_t n);
double sum(const float* x, size_t n, void* workspace, size_t workspace_bytes,
           cudaStream_t stream);
double sum_squares(const float* x, size_t n, void* workspace, size_t workspace_bytes,
                   cudaStream_t stream);

// ---- cross-entropy (kernels/loss_optim.cu), one block per row ----
// losses[t] = logsumexp(logits[t]) - logits[t, targets[t]] (fp64 inside, fp32
// out) from A logits. If dlogits is non-null it receives grad_scale *
// (softmax - onehot) as A; it may alias logits (each entry is read before it
// is written). A target outside [0, V) gives a NaN loss (and a NaN gradient
// row) instead of an exception: the host cannot check device targets without
// a sync.
template <typename A>
void cross_entropy(float* losses, A* dlogits, const A* logits, const int32_t* targets, int N,
                   int V, double grad_scale, cudaStream_t stream);

// ---- AdamW (kernels/loss_optim.cu), one launch over a flat array ----
// With the fields of hp: g = grad * grad_scale; m = b1 m + (1-b1) g;
// v = b2 v + (1-b2) g^2; p = p * (1 - lr*wd) - lr * (m/bc1) / (sqrt(v/bc2) + eps),
// bc_k = 1 - b_k^step, with the decay factor (1 - lr*wd) on elements
// [0, decay_count) only. Math in fp64 per element (as on the CPU); p, m, v
// stored in fp32.
void adamw_step(float* params, const float* grads, float* m, float* v, size_t n,
                const AdamWParams& hp, cudaStream_t stream);

}  // namespace moe::kernels
