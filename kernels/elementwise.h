// Launchers of kernels/elementwise.cu: add / scale, embedding, SwiGLU.
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

}  // namespace moe::kernels
