// Router: top-K expert selection with a selection-only bias. (The per-expert
// counts come from the dispatch plan, kernels/dispatch.cu.)
//
// topk: one warp per token. K rounds; in each round every lane scans its
// experts (lane, lane+32, ...) for the best one not yet taken, then the warp
// agrees on the winner with a shuffle arg-max. "Not yet taken" needs no
// memory: (key, index) pairs are totally ordered (backend/topk_order.h: key
// descending with NaN below -inf, then index ascending), so the next pick is
// the best pair strictly after the previous pick in that order. That same
// order gives ties to the lower expert index, lists experts in selection order
// and, being total, always yields K distinct experts in [0, E), NaN or not.
#include <climits>

#include "backend/cuda/cuda_device.h"
#include "backend/topk_order.h"
#include "core/error.h"
#include "kernels.h"

namespace moe::kernels {
namespace {

constexpr int kTopkWarps = 4;  // tokens per block

__device__ __forceinline__ bool before(float ka, int ia, float kb, int ib) {
  return topk_before(ka, ia, kb, ib);
}

__global__ void __launch_bounds__(kTopkWarps * 32)
    topk_route_kernel(int32_t* __restrict__ expert_idx, float* __restrict__ gates,
                      const float* __restrict__ scores, const float* __restrict__ bias, int N,
                      int E, int K, bool multiplicative, bool normalize, float route_scale) {
  const int lane = threadIdx.x % 32;
  const int t = blockIdx.x * kTopkWarps + threadIdx.x / 32;
  if (t >= N) return;  // whole warp leaves together, so the shuffles below stay full-warp
  const float* s = scores + static_cast<size_t>(t) * E;

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
      // Recomputed each round (cheap, cached); fp32 as the contract says. No
      // bias: plain top-K of s (the Backend contract, as on the CPU).
      const float key = !bias ? s[e] : multiplicative ? s[e] * bias[e] : s[e] + bias[e];
      if (before(prev_key, prev_idx, key, e) && before(key, e, best_key, best_idx)) {
        best_key = key;
        best_idx = e;
      }
    }
    // Butterfly arg-max: every lane ends with the same (unique) winner.
    for (int o = 16; o > 0; o >>= 1) {
      const float ok = __shfl_xor_sync(0xffffffffu, best_key, o);
      const int oi = __shfl_xor_sync(0xffffffffu, best_idx, o);
      if (before(ok, oi, best_key, best_idx)) {
        best_key = ok;
        best_idx = oi;
      }
    }
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

}  // namespace

void topk_route(int32_t* expert_idx, float* gates, const float* scores, const float* bias, int N,
                int E, int K, bool multiplicative_bias, bool normalize, float route_scale,
                cudaStream_t stream) {
  MOE_CHECK(N >= 0 && E >= 1 && K >= 1 && K <= E && K <= 32,
            "topk_route: bad sizes N=" + std::to_string(N) + " E=" + std::to_string(E) +
                " K=" + std::to_string(K) + " (need 1 <= K <= min(E, 32))");
  if (N == 0) return;
  MOE_CHECK(expert_idx && gates && scores, "topk_route: null pointer");  // bias may be null
  const int blocks = (N + kTopkWarps - 1) / kTopkWarps;
  topk_route_kernel<<<blocks, kTopkWarps * 32, 0, stream>>>(
      expert_idx, gates, scores, bias, N, E, K, multiplicative_bias, normalize, route_scale);
  MOE_CUDA_CHECK(cudaGetLastError());
}

}  // namespace moe::kernels
