// The CPU ops as free function templates, one file per concern (llm.c style),
// named after its CUDA twin in kernels/ (router.cpp and router.cu, ...).
// Every op takes nt, the OpenMP thread count of its parallel regions, first;
// the rest mirrors the Backend method of the same name (backend.h documents
// the semantics). Parallel loops run over independent outputs with a static
// schedule and each output is summed in a fixed serial order, so results do
// not depend on nt.
#pragma once

#include <cstddef>
#include <cstdint>
#include <type_traits>

#include "backend/backend.h"

namespace moe::cpu {

// The type an op computes in for elements stored as A: float for bf16
// storage (the GPU's fp32 math), A itself otherwise.
template <typename A>
using compute_t = std::conditional_t<is_bf16_v<A>, float, A>;

// Deterministic reductions sum fixed-size chunks in parallel, then the chunk
// partials serially: the order never depends on the thread count.
constexpr size_t kReduceChunk = 4096;
// Column block of the column-parallel reductions (embedding, rmsnorm dw).
constexpr int kColBlock = 64;

// ---- memory (memory.cpp); add / scale (elementwise.cpp); sums (loss_optim.cpp) ----
void* alloc_bytes(size_t bytes);
void free_bytes(void* p);
void copy_bytes(void* dst, const void* src, size_t bytes);
void zero_bytes(void* p, size_t bytes);
template <typename T>
void add_inplace(int nt, T* y, const T* x, size_t n);
template <typename T>
void scale_inplace(int nt, T* x, double a, size_t n);
template <typename T>
double sum(int nt, const T* x, size_t n);
template <typename T>
double sum_squares(int nt, const T* x, size_t n);

// Element types: T for parameters and full-precision state, A for
// activations, as in backend.h. Each op is instantiated for (float, float),
// (double, double) and (float, bf16); an op over one kind of buffer only is a
// template on that type (float, double, and bf16 where it holds activations).
// With A = bf16 every op computes in float or double and rounds once when it
// stores a bf16 result: the same points at which the CUDA backend stores bf16.

// ---- linear (linear.cpp) ----
// With A = bf16 the weights are read rounded to bf16 (the CUDA backend's
// bf16 weight copies), the products summed in fp32.
template <typename T, typename A>
void linear_forward(int nt, A* y, const A* x, const T* W, int N, int I, int O);
template <typename T, typename A>
void linear_backward(int nt, A* dx, T* dW, const A* dy, const A* x, const T* W, int N, int I,
                     int O, bool accumulate_dx);
// The router's matmul: T output from the exact activations and unrounded W.
template <typename T, typename A>
void linear_forward_fp32(int nt, T* y, const A* x, const T* W, int N, int I, int O);
template <typename T, typename A>
void linear_backward_fp32(int nt, A* dx, T* dW, const T* dy, const A* x, const T* W, int N, int I,
                          int O, bool accumulate_dx);
template <typename T, typename A>
void grouped_linear_forward(int nt, A* y, const A* x, const T* W, const int64_t* offsets_host,
                            int groups, int I, int O);
template <typename T, typename A>
void grouped_linear_backward(int nt, A* dx, T* dW, const A* dy, const A* x, const T* W,
                             const int64_t* offsets_host, int groups, int I, int O);

// ---- embedding (elementwise.cpp) and RMSNorm (rmsnorm.cpp) ----
template <typename T>
void embedding_forward(int nt, T* y, const T* table, const int32_t* tokens, int N, int D);
template <typename T>
void embedding_backward(int nt, T* dtable, const T* dy, const int32_t* tokens, int N, int D);
template <typename T, typename A>
void rmsnorm_forward(int nt, A* y, T* rstd, const T* x, const T* w, int N, int D, double eps);
template <typename T, typename A>
void residual_rmsnorm_forward(int nt, T* sum, A* y, T* rstd, const T* resid, const A* delta,
                              const T* w, int N, int D, double eps);
template <typename T, typename A>
void rmsnorm_backward(int nt, T* dx, A* dx_act, T* dw, const A* dy, const T* x, const T* w,
                      const T* rstd, int N, int D);

// ---- RoPE and attention (attention.cpp) ----
template <typename A>
void rope_forward(int nt, A* qkv, int B, int S, int H, int hd, double theta);
template <typename A>
void rope_backward(int nt, A* dqkv, int B, int S, int H, int hd, double theta);
template <typename T, typename A>
void attention_forward(int nt, A* out, T* lse, const A* qkv, int B, int S, int H, int hd);
template <typename T, typename A>
void attention_backward(int nt, A* dqkv, const A* dout, const A* out, const T* lse, const A* qkv,
                        int B, int S, int H, int hd);

// ---- SwiGLU (elementwise.cpp); router scores, top-k, aux loss (router.cpp) ----
template <typename A>
void swiglu_forward(int nt, A* h, const A* a13, int N, int F);
template <typename A>
void swiglu_backward(int nt, A* da13, const A* dh, const A* a13, int N, int F);
template <typename T>
void router_scores_forward(int nt, T* scores, const T* logits, int N, int E, GateFn fn);
template <typename T>
void router_scores_backward(int nt, T* dlogits, const T* dscores, const T* scores, int N, int E,
                            GateFn fn);
template <typename T>
void topk_route(int nt, int32_t* expert_idx, T* gates, const T* scores, const float* bias, int N,
                const RouteSpec& spec);
template <typename T>
void topk_route_backward(int nt, T* dscores, const T* dgates, const T* scores,
                         const int32_t* expert_idx, int N, const RouteSpec& spec);
template <typename T>
double aux_loss_forward_backward(int nt, T* dscores, const T* scores, const int32_t* expert_idx,
                                 int groups, int group_len, int E, int K, double alpha,
                                 double grad_scale);

// ---- token dispatch (dispatch.cpp) ----
void dispatch_plan(int32_t* row_of_slot, int64_t* counts_host, const int32_t* expert_idx, int N,
                   int E, int K);
template <typename A>
void gather_rows(int nt, A* dst, const A* src, const int32_t* index, int64_t rows, int D);
template <typename A>
void permute_rows(int nt, A* xp, const A* x, const int32_t* row_of_slot, int N, int K, int D);
template <typename A>
void permute_rows_backward(int nt, A* dx, const A* dxp, const int32_t* row_of_slot, int N, int K,
                           int D);
template <typename T, typename A>
void combine_forward(int nt, A* y, const A* yp, const T* gates, const int32_t* row_of_slot, int N,
                     int K, int D);
template <typename T, typename A>
void combine_backward(int nt, A* dyp, T* dgates, const A* dy, const A* yp, const T* gates,
                      const int32_t* row_of_slot, int N, int K, int D);

// ---- loss and optimizer (loss_optim.cpp) ----
template <typename T, typename A>
void cross_entropy(int nt, T* losses, A* dlogits, const A* logits, const int32_t* targets, int N,
                   int V, double grad_scale);
template <typename T>
void adamw_step(int nt, T* params, const T* grads, T* m, T* v, size_t n, const AdamWParams& p);

}  // namespace moe::cpu
