// Router: gate scores, biased top-K selection with unbiased gates, and the
// auxiliary balance loss baseline.
#include <cmath>
#include <vector>

#include "backend/cpu/cpu_backend.h"
#include "core/error.h"
#include "core/topk_order.h"

namespace moe::cpu {

template <typename T, typename A>
void CpuBackend<T, A>::router_scores_forward(T* scores, const T* logits, int N, int E, GateFn fn) {
#pragma omp parallel for num_threads(nt_) schedule(static)
  for (int n = 0; n < N; n++) {
    const T* l = logits + static_cast<size_t>(n) * E;
    T* s = scores + static_cast<size_t>(n) * E;
    if (fn == GateFn::Sigmoid) {
      for (int e = 0; e < E; e++) s[e] = T(1) / (T(1) + std::exp(-l[e]));
    } else {  // softmax over the experts, max-subtracted, normaliser in double
      T m = l[0];
      for (int e = 1; e < E; e++) m = l[e] > m ? l[e] : m;
      double z = 0.0;
      for (int e = 0; e < E; e++) z += (s[e] = std::exp(l[e] - m));
      for (int e = 0; e < E; e++) s[e] = static_cast<T>(s[e] / z);
    }
  }
}

// sigmoid: dl = ds s (1 - s); softmax: dl_i = s_i (ds_i - sum_j ds_j s_j). Overwrites.
template <typename T, typename A>
void CpuBackend<T, A>::router_scores_backward(T* dlogits, const T* dscores, const T* scores, int N,
                                              int E, GateFn fn) {
#pragma omp parallel for num_threads(nt_) schedule(static)
  for (int n = 0; n < N; n++) {
    const T* ds = dscores + static_cast<size_t>(n) * E;
    const T* s = scores + static_cast<size_t>(n) * E;
    T* dl = dlogits + static_cast<size_t>(n) * E;
    if (fn == GateFn::Sigmoid) {
      for (int e = 0; e < E; e++) dl[e] = ds[e] * s[e] * (T(1) - s[e]);
    } else {
      double dot = 0.0;
      for (int e = 0; e < E; e++) dot += static_cast<double>(ds[e]) * s[e];
      for (int e = 0; e < E; e++) dl[e] = static_cast<T>(s[e] * (ds[e] - dot));
    }
  }
}

// K rounds of argmax over the unpicked experts in topk_before's total order
// (descending key, NaN last, then ascending index), the CUDA kernel's order:
// always K distinct experts, the same ones on both backends, NaN or not.
// A null bias selects on s alone. Group-limited routing (RouteSpec::n_group,
// only when topk_group < n_group) first drops the experts of all but the
// topk_group best groups (GroupTop2 scores, topk_order.h).
template <typename T, typename A>
void CpuBackend<T, A>::topk_route(int32_t* expert_idx, T* gates, const T* scores, const float* bias,
                                  int N, const RouteSpec& spec) {
  const int E = spec.E, K = spec.K, G = spec.n_group, TG = spec.topk_group;
  MOE_CHECK(K >= 1 && K <= E, "topk_route: need 1 <= K <= E");
  MOE_CHECK(G >= 1 && E % G == 0 && TG >= 1 && TG <= G && K <= TG * (E / G),
            "topk_route: need n_group | E, 1 <= topk_group <= n_group, K <= topk_group * E / n_group");
  const bool mult = spec.bias_mode == BiasMode::Multiplicative;
  const bool grouped = groups_limit_routing(G, TG);
  const int m = E / G;  // experts per group
#pragma omp parallel num_threads(nt_)
  {
    std::vector<T> key(E);
    std::vector<char> used(E);
    std::vector<T> gscore(grouped ? G : 0);
    std::vector<char> gkept(grouped ? G : 0);
#pragma omp for schedule(static)
    for (int n = 0; n < N; n++) {
      const T* s = scores + static_cast<size_t>(n) * E;
      int32_t* idx = expert_idx + static_cast<size_t>(n) * K;
      T* g = gates + static_cast<size_t>(n) * K;
      for (int e = 0; e < E; e++) {
        if (!bias) {  // no balancing: plain top-K of s
          key[e] = s[e];
        } else {
          const T b = static_cast<T>(bias[e]);
          key[e] = mult ? s[e] * b : s[e] + b;
        }
        used[e] = 0;
      }
      if (grouped) {
        // Keep the TG groups first in topk_before's order of (score, group);
        // the experts of the others are marked taken: never picked, below
        // every key of a kept group (-inf and NaN included).
        for (int gi = 0; gi < G; gi++) {
          GroupTop2<T> top2;
          for (int e = gi * m; e < (gi + 1) * m; e++) top2.push(key[e], e);
          gscore[gi] = top2.score();
          gkept[gi] = 0;
        }
        for (int r = 0; r < TG; r++) {
          int best = -1;
          for (int gi = 0; gi < G; gi++)
            if (!gkept[gi] && (best < 0 || topk_before(gscore[gi], gi, gscore[best], best)))
              best = gi;
          gkept[best] = 1;
        }
        for (int e = 0; e < E; e++) used[e] = !gkept[e / m];
      }
      double sel = 0.0;
      for (int k = 0; k < K; k++) {
        int best = -1;
        for (int e = 0; e < E; e++)
          if (!used[e] && (best < 0 || topk_before(key[e], e, key[best], best))) best = e;
        used[best] = 1;
        idx[k] = best;
        sel += s[best];
      }
      const double c = spec.normalize ? spec.route_scale / sel : spec.route_scale;
      for (int k = 0; k < K; k++) g[k] = static_cast<T>(s[idx[k]] * c);
    }
  }
}

// Without normalisation g_k = c s_k. With it g_k = c s_k / S (S = sum of the
// selected s), so ds_j += c (dg_j / S - sum_k dg_k s_k / S^2).
template <typename T, typename A>
void CpuBackend<T, A>::topk_route_backward(T* dscores, const T* dgates, const T* scores,
                                           const int32_t* expert_idx, int N,
                                           const RouteSpec& spec) {
  const int E = spec.E, K = spec.K;
  const double c = spec.route_scale;
#pragma omp parallel for num_threads(nt_) schedule(static)
  for (int n = 0; n < N; n++) {
    const T* s = scores + static_cast<size_t>(n) * E;
    const T* dg = dgates + static_cast<size_t>(n) * K;
    const int32_t* idx = expert_idx + static_cast<size_t>(n) * K;
    T* ds = dscores + static_cast<size_t>(n) * E;
    if (!spec.normalize) {
      for (int k = 0; k < K; k++) ds[idx[k]] += static_cast<T>(c * dg[k]);
      continue;
    }
    double S = 0.0, dot = 0.0;
    for (int k = 0; k < K; k++) {
      S += s[idx[k]];
      dot += static_cast<double>(dg[k]) * s[idx[k]];
    }
    for (int k = 0; k < K; k++) ds[idx[k]] += static_cast<T>(c * (dg[k] / S - dot / (S * S)));
  }
}

// Per group g: L_g = alpha sum_i f_gi P_gi, f_gi = E/(K L) count_gi (a constant),
// P_gi = mean_t p_ti.
// - p = s: dL_g/ds_ti = alpha f_gi / L.
// - p_ti = s_ti / S_t, S_t = sum_j s_tj (normalize_affinities):
//   dL_g/ds_tj = alpha/L (f_gj / S_t - sum_i f_gi s_ti / S_t^2).
//   S_t and the dot are summed in expert order, in double (the CUDA kernel
//   sums them per token in the same order).
template <typename T, typename A>
double CpuBackend<T, A>::aux_loss_forward_backward(T* dscores, const T* scores,
                                                   const int32_t* expert_idx,
                                                   const AuxLossArgs& args) {
  const int groups = args.groups, E = args.E, K = args.K, L = args.group_len;
  const double alpha = args.alpha, grad_scale = args.grad_scale;
  const bool norm = args.normalize_affinities;
  std::vector<double> loss(groups, 0.0);
#pragma omp parallel num_threads(nt_)
  {
    std::vector<double> f(E), P(E);
#pragma omp for schedule(static)
    for (int g = 0; g < groups; g++) {
      const size_t t0 = static_cast<size_t>(g) * L;
      for (int e = 0; e < E; e++) f[e] = P[e] = 0.0;
      for (int t = 0; t < L; t++) {
        const int32_t* idx = expert_idx + (t0 + t) * K;
        for (int k = 0; k < K; k++) f[idx[k]] += 1.0;
        const T* s = scores + (t0 + t) * E;
        if (!norm) {
          for (int e = 0; e < E; e++) P[e] += s[e];
        } else {
          double S = 0.0;
          for (int e = 0; e < E; e++) S += s[e];
          for (int e = 0; e < E; e++) P[e] += s[e] / S;
        }
      }
      double lg = 0.0;
      for (int e = 0; e < E; e++) {
        f[e] *= static_cast<double>(E) / (static_cast<double>(K) * L);
        lg += f[e] * (P[e] / L);
      }
      loss[g] = alpha * lg;
      if (dscores && !norm) {
        for (int t = 0; t < L; t++) {
          T* ds = dscores + (t0 + t) * E;
          for (int e = 0; e < E; e++) ds[e] += static_cast<T>(grad_scale * alpha * f[e] / L);
        }
      } else if (dscores) {
        for (int t = 0; t < L; t++) {
          const T* s = scores + (t0 + t) * E;
          T* ds = dscores + (t0 + t) * E;
          double S = 0.0, dot = 0.0;
          for (int e = 0; e < E; e++) {
            S += s[e];
            dot += f[e] * s[e];
          }
          for (int e = 0; e < E; e++)
            ds[e] += static_cast<T>(grad_scale * alpha * (f[e] / S - dot / (S * S)) / L);
        }
      }
    }
  }
  double total = 0.0;
  for (double l : loss) total += l;
  return total;
}

MOE_OPS_ROUTER(MOE_CPU_INSTANTIATE)

}  // namespace moe::cpu
