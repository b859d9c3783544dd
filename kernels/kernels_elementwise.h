// Host-callable launchers for the elementwise, embedding, RoPE, SwiGLU,
// reduction, loss and optimizer kernels (kernels/elementwise.cu and
// kernels/loss_optim.cu).
//
// Same contract as kernels.h: plain C++ declarations, device pointers, every
// launcher asynchronous on `stream` (except sum / sum_squares, which return
// the result to the host and therefore synchronize the stream), sizes
// validated with moe::InternalError on bad arguments or a failed launch.
// Semantics match the ops of the same name in src/backend/backend.h ("+="
// accumulates, everything else is overwritten). Every kernel is deterministic:
// fixed summation order, no floating-point atomics, same bits on every run and
// on every device (chunk sizes depend on the problem size only).
#pragma once

#include <cstddef>
#include <cstdint>

#include <cuda_bf16.h>
#include <cuda_runtime.h>

namespace moe::kernels {

// ---- elementwise (kernels/elementwise.cu) ----

// y[i] += x[i] for i < n.
void add_inplace(float* y, const float* x, size_t n, cudaStream_t stream);
// x[i] *= float(a) for i < n (a rounded to fp32 once, like the CPU backend).
void scale_inplace(float* x, double a, size_t n, cudaStream_t stream);

// ---- embedding (kernels/elementwise.cu) ----

// y[n, :] = table[tokens[n], :]  (y [N,D], table [V,D]; tokens assumed in [0,V)).
void embedding_forward(float* y, const float* table, const int32_t* tokens, int N, int D,
                       cudaStream_t stream);
// dtable[tokens[n], :] += dy[n, :] for n = 0..N-1, each entry summed in token
// order (the CPU backend's order, so the result is bit-identical to it).
// Tokens assumed >= 0 (and < V).
void embedding_backward(float* dtable, const float* dy, const int32_t* tokens, int N, int D,
                        cudaStream_t stream);

// ---- SwiGLU (kernels/elementwise.cu): a13 [N, 2F] = [a1 | a3], h [N, F] ----
// Activations of type A (float or __nv_bfloat16), fp32 arithmetic.

// h = silu(a1) * a3.
template <typename A>
void swiglu_forward(A* h, const A* a13, int N, int F, cudaStream_t stream);
// da13 = [dh * a3 * silu'(a1) | dh * silu(a1)] (overwritten).
template <typename A>
void swiglu_backward(A* da13, const A* dh, const A* a13, int N, int F, cudaStream_t stream);

// ---- RoPE (kernels/elementwise.cu), rotate-half, in place ----
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
// g = grad * grad_scale; m = b1 m + (1-b1) g; v = b2 v + (1-b2) g^2;
// p = p * (1 - lr*wd) - lr * (m/bc1) / (sqrt(v/bc2) + eps), bc_k = 1 - b_k^step,
// with the decay factor (1 - lr*wd) on elements [0, decay_count) only.
// Math in fp64 per element (as on the CPU); p, m, v stored in fp32.
void adamw_step(float* params, const float* grads, float* m, float* v, size_t n, double lr,
                double beta1, double beta2, double eps, double weight_decay, size_t decay_count,
                int64_t step, double grad_scale, cudaStream_t stream);

}  // namespace moe::kernels
