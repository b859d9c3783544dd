// Host-callable launchers for the router gate-score kernels and the router
// backward / auxiliary-loss kernels (kernels/router_grad.cu).
//
// Same contract as kernels.h: plain C++ declarations, device pointers, every
// launcher asynchronous on `stream` (except aux_loss_forward_backward, which
// returns the loss to the host and therefore synchronizes the stream), sizes
// validated with moe::InternalError on bad arguments or a failed launch.
// Semantics match the ops of the same name in src/backend/backend.h ("+="
// accumulates, everything else is overwritten). Deterministic: fixed
// summation order, no floating-point atomics, same bits on every run.
#pragma once

#include <cstddef>
#include <cstdint>

#include <cuda_runtime.h>

namespace moe::kernels {

// scores[N,E] = sigmoid(logits) elementwise (softmax == false), or the softmax
// over the E experts of each token (max-subtracted, normaliser summed in double).
void router_scores_forward(float* scores, const float* logits, int N, int E, bool softmax,
                           cudaStream_t stream);

// Overwrites dlogits[N,E]. sigmoid: dl = ds s (1 - s);
// softmax: dl_i = s_i (ds_i - sum_j ds_j s_j) (the dot in double).
void router_scores_backward(float* dlogits, const float* dscores, const float* scores, int N,
                            int E, bool softmax, cudaStream_t stream);

// dscores[N,E] += d(gates)/d(scores)^T dgates for gates[t,k] = c s[t,idx[t,k]]
// (c = route_scale), or c s / S with S = sum of the selected s when normalize:
// ds_j += c (dg_j / S - sum_k dg_k s_k / S^2) (in double, like the CPU backend).
// dgates/expert_idx [N,K]; the K experts of a token are assumed distinct and in [0,E).
void topk_route_backward(float* dscores, const float* dgates, const float* scores,
                         const int32_t* expert_idx, int N, int E, int K, bool normalize,
                         double route_scale, cudaStream_t stream);

// Auxiliary balance loss over `groups` consecutive groups of `group_len`
// tokens: returns sum_g alpha sum_i f_gi P_gi with f_gi = E/(K group_len) *
// #(tokens of g picking i) and P_gi = mean_t s_ti (scores [groups*group_len, E],
// expert_idx [groups*group_len, K]; indices outside [0,E) are not counted).
// When dscores is non-null: dscores[t,i] += grad_scale * alpha * f_gi / group_len.
// One block per group (integer shared-memory counts, P in a fixed double
// reduction tree), the per-group losses summed in group order on the host.
// Synchronizes `stream`. Requires E <= 8192.
double aux_loss_forward_backward(float* dscores, const float* scores, const int32_t* expert_idx,
                                 int groups, int group_len, int E, int K, double alpha,
                                 double grad_scale, cudaStream_t stream);

}  // namespace moe::kernels
