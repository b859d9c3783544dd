// Router: top-K expert selection with a selection-only bias, the gate scores
// (sigmoid / softmax) forward and backward, the top-K gate backward, and the
// auxiliary balance loss with its score gradient. (The per-expert counts come
// from the dispatch plan, kernels/dispatch.cu.)
//
// topk: one warp per token. K rounds; in each round every lane scans its
// experts (lane, lane+32, ...) for the best one not yet taken, then the warp
// agrees on the winner with a shuffle arg-max. "Not yet taken" needs no
// memory: (key, index) pairs are totally ordered (core/topk_order.h: key
// descending with NaN below -inf, then index ascending), so the next pick is
// the best pair strictly after the previous pick in that order. That same
// order gives ties to the lower expert index, lists experts in selection order
// and, being total, always yields K distinct experts in [0, E), NaN or not.
// Group-limited routing (n_group <= 32 groups): lane g first scores group g
// (GroupTop2, core/topk_order.h), the warp keeps the topk_group best groups by
// the same shuffle arg-max, and the K rounds skip the dropped groups' experts.
//
// Softmax rows: one warp per token; the max and the double normaliser / dot
// are reduced with an xor butterfly (warp_max, warp_sum of elem.cuh: every
// lane ends with the same bits, and the tree is fixed). topk backward: one
// thread per token (K is small), the CPU formula in double. Aux loss: one
// block per group; counts by shared-memory integer atomics (exact), P per
// expert by a fixed [rows x experts] partial-sum layout that depends on E
// only, then the per-group loss summed over experts in index order.
#include <climits>
#include <string>
#include <vector>

#include "core/error.h"
#include "core/topk_order.h"
#include "cuda_check.h"
#include "elem.cuh"
#include "router.h"

namespace moe::kernels {
namespace {

// ---- top-K selection ----

constexpr int kTopkWarps = 4;  // tokens per block

__device__ __forceinline__ bool before(float ka, int ia, float kb, int ib) {
  return topk_before(ka, ia, kb, ib);
}

// Butterfly arg-max over the warp under before()'s order: every lane ends
// with the same (unique) winner (key, idx).
__device__ __forceinline__ void warp_argmax(float& key, int& idx) {
  for (int o = 16; o > 0; o >>= 1) {
    const float ok = __shfl_xor_sync(0xffffffffu, key, o);
    const int oi = __shfl_xor_sync(0xffffffffu, idx, o);
    if (before(ok, oi, key, idx)) {
      key = ok;
      idx = oi;
    }
  }
}

__global__ void __launch_bounds__(kTopkWarps * 32)
    topk_route_kernel(int32_t* __restrict__ expert_idx, float* __restrict__ gates,
                      const float* __restrict__ scores, const float* __restrict__ bias, int N,
                      int E, int K, bool multiplicative, bool normalize, float route_scale,
                      int n_group, int topk_group) {
  const int lane = threadIdx.x % 32;
  const int t = blockIdx.x * kTopkWarps + threadIdx.x / 32;
  if (t >= N) return;  // whole warp leaves together, so the shuffles below stay full-warp
  const float* s = scores + static_cast<size_t>(t) * E;

  // Group-limited routing: lane g scores group g (its two best keys, the
  // CPU's GroupTop2), then topk_group rounds of the same "best pair strictly
  // after the previous pick" arg-max over (score, group) choose the kept
  // groups, as bits of `kept`. Only when topk_group < n_group (<= 32).
  const bool grouped = n_group > 1 && topk_group < n_group;
  const int m = E / n_group;  // experts per group
  unsigned kept = 0xffffffffu;
  if (grouped) {
    float my_gs = __int_as_float(0x7fffffff);  // lanes without a group: the sentinel
    int my_g = INT_MAX;
    if (lane < n_group) {
      GroupTop2<float> top2;
      for (int e = lane * m; e < (lane + 1) * m; ++e)
        top2.push(!bias ? s[e] : multiplicative ? s[e] * bias[e] : s[e] + bias[e], e);
      my_gs = top2.score();
      my_g = lane;
    }
    kept = 0u;
    float prev_gs = INFINITY;
    int prev_g = -1;
    for (int r = 0; r < topk_group; ++r) {
      float best_gs = __int_as_float(0x7fffffff);
      int best_g = INT_MAX;
      if (my_g != INT_MAX && before(prev_gs, prev_g, my_gs, my_g)) {
        best_gs = my_gs;
        best_g = my_g;
      }
      warp_argmax(best_gs, best_g);
      kept |= 1u << best_g;
      prev_gs = best_gs;
      prev_g = best_g;
    }
  }

  float prev_key = INFINITY;  // the previous pick; (+inf, -1) comes before every pair
  int prev_idx = -1;
  int my_idx = -1;      // lane k keeps the k-th pick
  float my_s = 0.f;
  float sum_s = 0.f;    // sum of the picked s, in selection order (for normalize)
  for (int k = 0; k < K; ++k) {
    // Sentinel (NaN, INT_MAX): after every real pair, NaN keys included.
    float best_key = __int_as_float(0x7fffffff);
    int best_idx = INT_MAX;
    for (int e = lane; e < E; e += 32) {
      if (grouped && !((kept >> (e / m)) & 1u)) continue;  // a dropped group's expert
      // Recomputed each round (cheap, cached); fp32 as the contract says. No
      // bias: plain top-K of s (the Backend contract, as on the CPU).
      const float key = !bias ? s[e] : multiplicative ? s[e] * bias[e] : s[e] + bias[e];
      if (before(prev_key, prev_idx, key, e) && before(key, e, best_key, best_idx)) {
        best_key = key;
        best_idx = e;
      }
    }
    warp_argmax(best_key, best_idx);
    prev_key = best_key;
    prev_idx = best_idx;
    const float sw = s[best_idx];
    sum_s += sw;
    if (lane == k) {
      my_idx = best_idx;
      my_s = sw;
    }
  }
  if (lane < K) {
    const size_t o = static_cast<size_t>(t) * K + lane;
    expert_idx[o] = my_idx;
    gates[o] = (normalize ? my_s / sum_s : my_s) * route_scale;  // the bias never reaches gates
  }
}

// ---- gate scores, the backward of selection, the aux loss ----

constexpr int kEltThreads = 256;
constexpr int kRowWarps = 4;  // tokens per block for the softmax kernels
constexpr int kTokThreads = 128;
constexpr int kAuxThreads = 256;
constexpr int kMaxAuxExperts = 8192;  // count[E] in shared memory: 32 KiB

__global__ void __launch_bounds__(kEltThreads)
    sigmoid_forward_kernel(float* __restrict__ s, const float* __restrict__ l, size_t n) {
  for (size_t i = static_cast<size_t>(blockIdx.x) * kEltThreads + threadIdx.x; i < n;
       i += static_cast<size_t>(gridDim.x) * kEltThreads)
    s[i] = 1.f / (1.f + expf(-l[i]));
}

__global__ void __launch_bounds__(kEltThreads)
    sigmoid_backward_kernel(float* __restrict__ dl, const float* __restrict__ ds,
                            const float* __restrict__ s, size_t n) {
  for (size_t i = static_cast<size_t>(blockIdx.x) * kEltThreads + threadIdx.x; i < n;
       i += static_cast<size_t>(gridDim.x) * kEltThreads)
    dl[i] = ds[i] * s[i] * (1.f - s[i]);
}

__global__ void __launch_bounds__(kRowWarps * 32)
    softmax_forward_kernel(float* __restrict__ scores, const float* __restrict__ logits, int N,
                           int E) {
  const int lane = threadIdx.x % 32;
  const int t = blockIdx.x * kRowWarps + threadIdx.x / 32;
  if (t >= N) return;  // whole warp leaves together
  const float* l = logits + static_cast<size_t>(t) * E;
  float* s = scores + static_cast<size_t>(t) * E;
  float m = -INFINITY;
  for (int e = lane; e < E; e += 32) m = fmaxf(m, l[e]);
  m = warp_max(m);
  double z = 0.0;
  for (int e = lane; e < E; e += 32) {
    const float v = expf(l[e] - m);
    s[e] = v;
    z += v;
  }
  z = warp_sum(z);
  for (int e = lane; e < E; e += 32) s[e] = static_cast<float>(s[e] / z);
}

__global__ void __launch_bounds__(kRowWarps * 32)
    softmax_backward_kernel(float* __restrict__ dlogits, const float* __restrict__ dscores,
                            const float* __restrict__ scores, int N, int E) {
  const int lane = threadIdx.x % 32;
  const int t = blockIdx.x * kRowWarps + threadIdx.x / 32;
  if (t >= N) return;
  const size_t o = static_cast<size_t>(t) * E;
  const float* ds = dscores + o;
  const float* s = scores + o;
  float* dl = dlogits + o;
  double dot = 0.0;
  for (int e = lane; e < E; e += 32) dot += static_cast<double>(ds[e]) * s[e];
  dot = warp_sum(dot);
  for (int e = lane; e < E; e += 32) dl[e] = static_cast<float>(s[e] * (ds[e] - dot));
}

__global__ void __launch_bounds__(kTokThreads)
    topk_route_backward_kernel(float* __restrict__ dscores, const float* __restrict__ dgates,
                               const float* __restrict__ scores,
                               const int32_t* __restrict__ expert_idx, int N, int E, int K,
                               bool normalize, double c) {
  const int t = blockIdx.x * kTokThreads + threadIdx.x;
  if (t >= N) return;
  const float* s = scores + static_cast<size_t>(t) * E;
  const float* dg = dgates + static_cast<size_t>(t) * K;
  const int32_t* idx = expert_idx + static_cast<size_t>(t) * K;
  float* ds = dscores + static_cast<size_t>(t) * E;
  if (!normalize) {
    for (int k = 0; k < K; ++k) ds[idx[k]] += static_cast<float>(c * dg[k]);
    return;
  }
  double S = 0.0, dot = 0.0;
  for (int k = 0; k < K; ++k) {
    const float sv = s[idx[k]];
    S += sv;
    dot += static_cast<double>(dg[k]) * sv;
  }
  for (int k = 0; k < K; ++k) ds[idx[k]] += static_cast<float>(c * (dg[k] / S - dot / (S * S)));
}

// One block per group. Shared memory: part[kAuxThreads] and term[kAuxThreads]
// doubles (static), count[E] ints (dynamic). tok: null, or (normalised
// affinities) 2 * groups * L doubles of global scratch: S_t = sum_j s_tj, then
// the dot sum_j f_j s_tj, of each token, each summed by one thread in expert
// order (the CPU's order).
__global__ void __launch_bounds__(kAuxThreads)
    aux_loss_kernel(double* __restrict__ loss, float* __restrict__ dscores,
                    const float* __restrict__ scores, const int32_t* __restrict__ expert_idx,
                    double* __restrict__ tok, int L, int E, int K, double alpha,
                    double grad_scale) {
  __shared__ double part[kAuxThreads];
  __shared__ double term[kAuxThreads];
  extern __shared__ int count[];  // [E]
  const int tid = threadIdx.x;
  const size_t t0 = static_cast<size_t>(blockIdx.x) * L;
  double* const tsum = tok ? tok + t0 : nullptr;                                   // S_t
  double* const tdot = tok ? tok + static_cast<size_t>(gridDim.x) * L + t0 : nullptr;  // dot_t

  for (int e = tid; e < E; e += kAuxThreads) count[e] = 0;
  if (tsum)
    for (int t = tid; t < L; t += kAuxThreads) {
      const float* s = scores + (t0 + t) * E;
      double S = 0.0;
      for (int e = 0; e < E; ++e) S += s[e];
      tsum[t] = S;
    }
  __syncthreads();
  const size_t nk = static_cast<size_t>(L) * K;
  for (size_t i = tid; i < nk; i += kAuxThreads) {
    const int e = expert_idx[t0 * K + i];
    if (e >= 0 && e < E) atomicAdd(&count[e], 1);
  }
  // E / (K L), the CPU backend's expression
  const double fcoef = static_cast<double>(E) / (static_cast<double>(K) * L);

  // P: experts in chunks of Ec columns, R = kAuxThreads / Ec rows of tokens;
  // thread (row, col) sums tokens row, row+R, ... in order, then the row
  // partials are added in row order; the loss terms in expert order.
  const int Ec = E < kAuxThreads ? E : kAuxThreads;
  const int R = kAuxThreads / Ec;
  const int col = tid % Ec, row = tid / Ec;
  double lg = 0.0;  // thread 0 only
  for (int eb = 0; eb < E; eb += Ec) {
    const int e = eb + col;
    double acc = 0.0;
    if (row < R && e < E) {
      if (tsum) {
        for (int t = row; t < L; t += R) acc += scores[(t0 + t) * E + e] / tsum[t];
      } else {
        for (int t = row; t < L; t += R) acc += scores[(t0 + t) * E + e];
      }
    }
    part[tid] = acc;
    __syncthreads();  // also orders the counts above before their first use
    if (row == 0 && e < E) {
      double P = 0.0;
      for (int r = 0; r < R; ++r) P += part[r * Ec + col];
      const double f = count[e] * fcoef;
      term[col] = f * (P / L);
    }
    __syncthreads();
    if (tid == 0) {
      const int n = E - eb < Ec ? E - eb : Ec;
      for (int c = 0; c < n; ++c) lg += term[c];
    }
    __syncthreads();  // part/term are reused by the next chunk
  }
  if (tid == 0) loss[blockIdx.x] = alpha * lg;
  if (dscores && !tsum) {
    const size_t ne = static_cast<size_t>(L) * E;
    float* ds = dscores + t0 * E;
    for (size_t i = tid; i < ne; i += kAuxThreads) {
      const int e = static_cast<int>(i % E);
      const double f = count[e] * fcoef;
      ds[i] += static_cast<float>(grad_scale * alpha * f / L);
    }
  } else if (dscores) {
    // dL/ds_tj = alpha/L (f_j / S_t - dot_t / S_t^2), f_j = count_j E/(K L)
    for (int t = tid; t < L; t += kAuxThreads) {
      const float* s = scores + (t0 + t) * E;
      double dot = 0.0;
      for (int e = 0; e < E; ++e) dot += (count[e] * fcoef) * s[e];
      tdot[t] = dot;
    }
    __syncthreads();
    const size_t ne = static_cast<size_t>(L) * E;
    float* ds = dscores + t0 * E;
    for (size_t i = tid; i < ne; i += kAuxThreads) {
      const int t = static_cast<int>(i / E), e = static_cast<int>(i % E);
      const double f = count[e] * fcoef, S = tsum[t];
      ds[i] += static_cast<float>(grad_scale * alpha * (f / S - tdot[t] / (S * S)) / L);
    }
  }
}

void check_sizes(const char* op, int N, int E) {
  MOE_CHECK(N >= 0 && E >= 1, std::string(op) + ": bad sizes N=" + std::to_string(N) +
                                  " E=" + std::to_string(E));
}

}  // namespace

void topk_route(int32_t* expert_idx, float* gates, const float* scores, const float* bias, int N,
                const RouteSpec& spec, cudaStream_t stream) {
  const int E = spec.E, K = spec.K, G = spec.n_group, TG = spec.topk_group;
  MOE_CHECK(N >= 0 && E >= 1 && K >= 1 && K <= E && K <= kTopkMaxK,
            "topk_route: bad sizes N=" + std::to_string(N) + " E=" + std::to_string(E) +
                " K=" + std::to_string(K) + " (need 1 <= K <= min(E, " +
                std::to_string(kTopkMaxK) + "))");
  MOE_CHECK(G >= 1 && G <= kTopkMaxGroups && E % G == 0 && TG >= 1 && TG <= G &&
                K <= TG * (E / G),
            "topk_route: bad groups n_group=" + std::to_string(G) + " topk_group=" +
                std::to_string(TG) + " E=" + std::to_string(E) + " K=" + std::to_string(K) +
                " (need n_group <= " + std::to_string(kTopkMaxGroups) +
                ", n_group | E, topk_group <= n_group, K <= topk_group * E / n_group)");
  if (N == 0) return;
  MOE_CHECK(expert_idx && gates && scores, "topk_route: null pointer");  // bias may be null
  const int blocks = (N + kTopkWarps - 1) / kTopkWarps;
  topk_route_kernel<<<blocks, kTopkWarps * 32, 0, stream>>>(
      expert_idx, gates, scores, bias, N, E, K, spec.bias_mode == BiasMode::Multiplicative,
      spec.normalize, float(spec.route_scale), G, TG);
  MOE_CUDA_CHECK(cudaGetLastError());
}

void router_scores_forward(float* scores, const float* logits, int N, int E, GateFn fn,
                           cudaStream_t stream) {
  check_sizes("router_scores_forward", N, E);
  if (N == 0) return;
  MOE_CHECK(scores && logits, "router_scores_forward: null pointer");
  if (fn == GateFn::Softmax) {
    softmax_forward_kernel<<<(N + kRowWarps - 1) / kRowWarps, kRowWarps * 32, 0, stream>>>(
        scores, logits, N, E);
  } else {
    const size_t n = static_cast<size_t>(N) * E;
    sigmoid_forward_kernel<<<grid_for(n, kEltThreads), kEltThreads, 0, stream>>>(
        scores, logits, n);
  }
  MOE_CUDA_CHECK(cudaGetLastError());
}

void router_scores_backward(float* dlogits, const float* dscores, const float* scores, int N,
                            int E, GateFn fn, cudaStream_t stream) {
  check_sizes("router_scores_backward", N, E);
  if (N == 0) return;
  MOE_CHECK(dlogits && dscores && scores, "router_scores_backward: null pointer");
  if (fn == GateFn::Softmax) {
    softmax_backward_kernel<<<(N + kRowWarps - 1) / kRowWarps, kRowWarps * 32, 0, stream>>>(
        dlogits, dscores, scores, N, E);
  } else {
    const size_t n = static_cast<size_t>(N) * E;
    sigmoid_backward_kernel<<<grid_for(n, kEltThreads), kEltThreads, 0, stream>>>(
        dlogits, dscores, scores, n);
  }
  MOE_CUDA_CHECK(cudaGetLastError());
}

void topk_route_backward(float* dscores, const float* dgates, const float* scores,
                         const int32_t* expert_idx, int N, const RouteSpec& spec,
                         cudaStream_t stream) {
  const int E = spec.E, K = spec.K;
  MOE_CHECK(N >= 0 && E >= 1 && K >= 1 && K <= E,
            "topk_route_backward: bad sizes N=" + std::to_string(N) + " E=" + std::to_string(E) +
                " K=" + std::to_string(K) + " (need 1 <= K <= E)");
  if (N == 0) return;
  MOE_CHECK(dscores && dgates && scores && expert_idx, "topk_route_backward: null pointer");
  topk_route_backward_kernel<<<(N + kTokThreads - 1) / kTokThreads, kTokThreads, 0, stream>>>(
      dscores, dgates, scores, expert_idx, N, E, K, spec.normalize, spec.route_scale);
  MOE_CUDA_CHECK(cudaGetLastError());
}

double aux_loss_forward_backward(float* dscores, const float* scores, const int32_t* expert_idx,
                                 const AuxLossArgs& args, cudaStream_t stream) {
  const int groups = args.groups, group_len = args.group_len, E = args.E, K = args.K;
  MOE_CHECK(groups >= 0 && group_len >= 1 && E >= 1 && E <= kMaxAuxExperts && K >= 1,
            "aux_loss_forward_backward: bad sizes groups=" + std::to_string(groups) +
                " group_len=" + std::to_string(group_len) + " E=" + std::to_string(E) +
                " K=" + std::to_string(K) + " (need E <= 8192)");
  if (groups == 0) return 0.0;
  MOE_CHECK(scores && expert_idx, "aux_loss_forward_backward: null pointer");
  // One allocation: the per-group losses, then (normalised affinities) the
  // per-token S_t and dot_t.
  const size_t ntok = static_cast<size_t>(groups) * group_len;
  const size_t ndbl = static_cast<size_t>(groups) + (args.normalize_affinities ? 2 * ntok : 0);
  double* dloss = nullptr;
  MOE_CUDA_CHECK(cudaMallocAsync(reinterpret_cast<void**>(&dloss), ndbl * sizeof(double), stream));
  double* tok = args.normalize_affinities ? dloss + groups : nullptr;
  const size_t shmem = static_cast<size_t>(E) * sizeof(int);
  aux_loss_kernel<<<groups, kAuxThreads, shmem, stream>>>(dloss, dscores, scores, expert_idx, tok,
                                                          group_len, E, K, args.alpha,
                                                          args.grad_scale);
  const cudaError_t launch = cudaGetLastError();
  std::vector<double> loss(static_cast<size_t>(groups));
  cudaError_t copy = cudaSuccess;
  if (launch == cudaSuccess)
    copy = cudaMemcpyAsync(loss.data(), dloss, loss.size() * sizeof(double),
                           cudaMemcpyDeviceToHost, stream);
  const cudaError_t freed = cudaFreeAsync(dloss, stream);
  const cudaError_t synced = cudaStreamSynchronize(stream);
  MOE_CUDA_CHECK(launch);
  MOE_CUDA_CHECK(copy);
  MOE_CUDA_CHECK(freed);
  MOE_CUDA_CHECK(synced);
  double total = 0.0;
  for (double l : loss) total += l;  // group order, like the CPU backend
  return total;
}

}  // namespace moe::kernels
