// Launchers of kernels/router.cu: gate scores (sigmoid / softmax) and their
// backward, top-K selection with the selection-only bias and its backward,
// and the auxiliary balance loss. aux_loss_forward_backward returns its loss
// to the host and therefore synchronizes the stream.
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

// ---- Router (kernels/router.cu) ----

// The most experts topk_route picks per token: one warp per token, lane k
// keeps pick k. The CUDA backend refuses a larger moe.top_k as a config error.
inline constexpr int kTopkMaxK = 32;
// The most groups of group-limited routing (RouteSpec::n_group): lane g of the
// token's warp scores group g. The CUDA backend refuses a larger moe.n_group.
inline constexpr int kTopkMaxGroups = 32;

// Per token t: picks the spec.K experts (of spec.E) with the largest key s+b
// (BiasMode::Additive) or s*b (Multiplicative), computed in fp32; ties go to
// the lower expert index; expert_idx[t*K+k] lists them in selection order.
// gates[t*K+k] = s of that expert (the bias only selects), divided by the sum
// of the selected s when spec.normalize, times spec.route_scale (as fp32).
// scores [N,E], bias [E] or null (select on s alone, whatever the bias mode).
// Requires 1 <= K <= min(E, kTopkMaxK).
// Group-limited (spec.topk_group < spec.n_group, n_group <= kTopkMaxGroups,
// n_group | E, K <= topk_group E / n_group): only the experts of the
// topk_group groups first by (GroupTop2 score, group index) in topk_before's
// order are candidates, as on the CPU backend.
// Any keys, non-finite too: the order is total (core/topk_order.h: +inf
// first, NaN last, below -inf, NaNs by index), so every token gets K distinct
// experts in [0, E), the same as the CPU backend's. A NaN score still reaches
// the gates when picked (and the score backward when not), so the step's loss
// or gradient norm is non-finite and the trainer skips it.
void topk_route(int32_t* expert_idx, float* gates, const float* scores, const float* bias, int N,
                const RouteSpec& spec, cudaStream_t stream);


// scores[N,E] = sigmoid(logits) elementwise (GateFn::Sigmoid), or the softmax
// over the E experts of each token (max-subtracted, normaliser summed in double).
void router_scores_forward(float* scores, const float* logits, int N, int E, GateFn fn,
                           cudaStream_t stream);

// Overwrites dlogits[N,E]. sigmoid: dl = ds s (1 - s);
// softmax: dl_i = s_i (ds_i - sum_j ds_j s_j) (the dot in double).
void router_scores_backward(float* dlogits, const float* dscores, const float* scores, int N,
                            int E, GateFn fn, cudaStream_t stream);

// dscores[N,E] += d(gates)/d(scores)^T dgates for gates[t,k] = c s[t,idx[t,k]]
// (c = spec.route_scale), or c s / S with S = sum of the selected s when spec.normalize:
// ds_j += c (dg_j / S - sum_k dg_k s_k / S^2) (in double, like the CPU backend).
// dgates/expert_idx [N,K]; the K experts of a token are assumed distinct and in [0,E).
void topk_route_backward(float* dscores, const float* dgates, const float* scores,
                         const int32_t* expert_idx, int N, const RouteSpec& spec,
                         cudaStream_t stream);

// Balance loss over args.groups consecutive groups of args.group_len tokens
// (core/op_args.h AuxLossArgs): returns sum_g alpha sum_i f_gi P_gi with
// f_gi = E/(K group_len) * #(tokens of g picking i) and P_gi = mean_t p_ti,
// p = s or (normalize_affinities) p_ti = s_ti / sum_j s_tj (scores
// [groups*group_len, E], expert_idx [groups*group_len, K]; indices outside
// [0,E) are not counted). When dscores is non-null: dscores[t,i] +=
// grad_scale * alpha * f_gi / group_len, or with normalize_affinities
// grad_scale * alpha * (f_gi / S_t - sum_j f_gj s_tj / S_t^2) / group_len.
// One block per group (integer shared-memory counts, P in a fixed double
// reduction tree, S_t and the dot per token in expert order as on the CPU),
// the per-group losses summed in group order on the host.
// Synchronizes `stream`. Requires E <= 8192.
double aux_loss_forward_backward(float* dscores, const float* scores, const int32_t* expert_idx,
                                 const AuxLossArgs& args, cudaStream_t stream);

}  // namespace moe::kernels
