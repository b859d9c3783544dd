// Top-K routing inputs with NaN and infinite scores or keys, the experts the
// documented order picks for them (src/core/topk_order.h: larger key
// first, +inf on top, NaN below -inf, equal keys and NaNs by lower index),
// and an independent reference of that order. Shared by the CPU test
// (ops/test_cpu_router.cpp) and the GPU test (gpu/test_gpu_router.cpp), which checks
// that the kernel picks exactly what the CPU backend picks.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <numeric>
#include <random>
#include <vector>

namespace moe::test {

constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();
constexpr float kInf = std::numeric_limits<float>::infinity();

struct NonFiniteRouteCase {
  const char* name;
  std::vector<float> scores;  // one token; E = scores.size()
  std::vector<float> bias;    // empty: null bias (select on s alone)
  int K;
  bool multiplicative;
  std::vector<int32_t> want;  // expert_idx in selection order
};

inline std::vector<NonFiniteRouteCase> nonfinite_route_cases() {
  return {
      {"nan sorts last", {kNaN, 0.1f, kNaN, 0.3f, 0.2f}, {}, 3, false, {3, 4, 1}},
      {"nans by lower index", {kNaN, 0.1f, kNaN, 0.3f, 0.2f}, {}, 4, false, {3, 4, 1, 0}},
      {"all nan", {kNaN, kNaN, kNaN, kNaN}, {}, 2, false, {0, 1}},
      {"+inf first, -inf above nan", {0.5f, kInf, 0.7f, -kInf, kNaN}, {}, 5, false, {1, 2, 0, 3, 4}},
      {"infinite ties by index", {kInf, 0.f, kInf, -kInf, -kInf}, {}, 4, false, {0, 2, 1, 3}},
      {"nan bias", {0.1f, 0.2f, 0.3f, 0.4f, 0.5f}, {0, 0, 0, kNaN, 0}, 5, false, {4, 2, 1, 0, 3}},
      {"inf + -inf bias is nan", {kInf, 0.2f, 0.1f}, {-kInf, 0, 0}, 2, false, {1, 2}},
      {"inf * 0 bias is nan", {kInf, 0.2f, 0.1f}, {0, 1, 1}, 3, true, {1, 2, 0}},
  };
}

// N tokens x E experts: normal scores with exact ties, about 1 in 5 NaN and
// 1 in 10 each +inf and -inf; a few all-NaN tokens.
inline std::vector<float> nonfinite_scores(int N, int E, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> normal(0.f, 1.f);
  std::uniform_int_distribution<int> pick(0, 19);
  std::vector<float> s(size_t(N) * E);
  for (int t = 0; t < N; ++t)
    for (int e = 0; e < E; ++e) {
      const int r = pick(rng);
      float& x = s[size_t(t) * E + e];
      x = t % 7 == 3 ? kNaN
          : r < 4    ? kNaN
          : r < 6    ? kInf
          : r < 8    ? -kInf
          : r < 10   ? 0.25f  // exact ties
                     : normal(rng);
    }
  return s;
}

// The order from its definition, written independently of topk_before: every
// number ranks above NaN, then by key descending, then by index ascending.
inline std::vector<int32_t> reference_topk(const std::vector<float>& scores,
                                           const std::vector<float>& bias, int N, int E, int K,
                                           bool multiplicative) {
  std::vector<int32_t> out;
  for (int t = 0; t < N; ++t) {
    std::vector<float> key(E);
    for (int e = 0; e < E; ++e) {
      const float s = scores[size_t(t) * E + e];
      key[e] = bias.empty() ? s : multiplicative ? s * bias[e] : s + bias[e];
    }
    std::vector<int32_t> order(E);
    std::iota(order.begin(), order.end(), 0);
    std::stable_sort(order.begin(), order.end(), [&](int32_t a, int32_t b) {
      const bool na = std::isnan(key[a]), nb = std::isnan(key[b]);
      if (na != nb) return nb;   // the number first
      if (na) return false;      // both NaN: stable, so by index
      return key[a] > key[b];    // equal keys: stable, so by index
    });
    out.insert(out.end(), order.begin(), order.begin() + K);
  }
  return out;
}

}  // namespace moe::test
