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

// Group-limited routing (RouteSpec::n_group / topk_group): one token, the
// experts DeepSeek-V3's rule picks, worked out by hand. Group score = the sum
// of the group's two best keys (its key alone for one-expert groups); the
// topk_group best groups are kept (equal scores: lower group; NaN last); the
// top-K is taken among the kept groups' experts only. `plain` is the plain
// top-K of the same keys where it differs (what the groups change); empty
// where they change nothing.
struct GroupRouteCase {
  const char* name;
  std::vector<float> scores;  // one token; E = scores.size()
  std::vector<float> bias;    // empty: null bias
  int K;
  bool multiplicative;
  int n_group, topk_group;
  std::vector<int32_t> want;
  std::vector<int32_t> plain;
};

inline std::vector<GroupRouteCase> group_route_cases() {
  return {
      // groups {0.9,0.8} 1.7, {0.1,0.2} 0.3, {0.3,0} 0.3, {.05,.05}: g1 beats
      // g2 on the tie, so expert 3 (0.2) is picked, not expert 4 (0.3)
      {"one group holds every top score", {0.9f, 0.8f, 0.1f, 0.2f, 0.3f, 0.f, 0.05f, 0.05f}, {},
       3, false, 4, 2, {0, 1, 3}, {0, 1, 4}},
      // three groups score 0.75 exactly: the lowest group index wins
      {"equal group scores go to the lower group",
       {0.5f, 0.25f, 0.25f, 0.5f, 0.375f, 0.375f, 0.f, 0.f}, {}, 2, false, 4, 1, {0, 1}, {0, 3}},
      // top-2 sums, not the best key: 0.5+0.5 = 1.0 beats 0.9+0
      {"the two best keys, not the best", {0.5f, 0.5f, 0.5f, 0.1f, 0.9f, 0.f, 0.f, 0.f}, {}, 2,
       false, 2, 1, {0, 1}, {4, 0}},
      // g0 {NaN, 0.9}: NaN; g1 0.2; g2 0.5; g3 {-inf, 1}: -inf. Kept g2, g1.
      {"nan group score ranks last, -inf above it",
       {kNaN, 0.9f, 0.1f, 0.1f, 0.25f, 0.25f, -kInf, 1.f}, {}, 2, false, 4, 2, {4, 5}, {7, 1}},
      // g0 {+inf, 0}: +inf; g1 1.0; g2 {+inf, -inf}: NaN; g3 0.4. Kept g0, g1.
      {"+inf group first, +inf + -inf is nan", {kInf, 0.f, 0.5f, 0.5f, kInf, -kInf, 0.2f, 0.2f},
       {}, 3, false, 4, 2, {0, 2, 3}, {0, 4, 2}},
      // keys -0.2, -0.3 | -0.5, -0.45: g0 kept. Masking dropped experts with
      // 0.0 (transformers' glm4_moe) would pick experts 2 and 3 (0.0 > -0.2).
      {"negative biased keys in the kept group (-inf, not 0.0)", {0.6f, 0.5f, 0.4f, 0.45f},
       {-0.8f, -0.8f, -0.9f, -0.9f}, 2, false, 2, 1, {0, 1}, {}},
      // K = 3 of one kept group {+inf, 1, NaN}: its NaN key still goes before
      // the dropped group's 0.5
      {"a kept nan key beats every dropped expert", {kInf, 1.f, kNaN, 0.5f, 0.4f, 0.3f}, {}, 3,
       false, 2, 1, {0, 1, 2}, {0, 1, 3}},
      // keys s * b = {.05,.05 | .4,.4 | .9,.1}: g2 (1.0) kept over g1 (0.8);
      // s + b = {.6,.6 | 2.2,2.2 | 1.9,1.1} would keep g1 (4.4 over 3.0)
      {"multiplicative bias", {0.5f, 0.5f, 0.2f, 0.2f, 0.9f, 0.1f},
       {0.1f, 0.1f, 2.f, 2.f, 1.f, 1.f}, 2, true, 3, 1, {4, 5}, {4, 2}},
      {"additive bias, same numbers", {0.5f, 0.5f, 0.2f, 0.2f, 0.9f, 0.1f},
       {0.1f, 0.1f, 2.f, 2.f, 1.f, 1.f}, 2, false, 3, 1, {2, 3}, {}},
      // one expert per group: the group score is that key; keeping the best
      // topk_group >= K experts leaves plain top-K
      {"one-expert groups", {0.1f, kNaN, 0.7f, 0.3f}, {}, 2, false, 4, 2, {2, 3}, {}},
  };
}

// Group-limited top-K from its definition, written independently of the
// backends (no topk_before, no GroupTop2): keys in fp32; each group's keys
// sorted by the order of reference_topk, score = the first two summed (one
// key: itself); groups stably sorted by score, NaN last; then the kept
// groups' experts stably sorted by key, NaN last, the first K taken.
inline std::vector<int32_t> reference_group_topk(const std::vector<float>& scores,
                                                 const std::vector<float>& bias, int N, int E,
                                                 int K, bool multiplicative, int n_group,
                                                 int topk_group) {
  const int m = E / n_group;
  auto desc_nan_last = [](const std::vector<float>& v) {
    return [&v](int32_t a, int32_t b) {
      const bool na = std::isnan(v[a]), nb = std::isnan(v[b]);
      if (na != nb) return nb;
      if (na) return false;
      return v[a] > v[b];
    };
  };
  std::vector<int32_t> out;
  for (int t = 0; t < N; ++t) {
    std::vector<float> key(E);
    for (int e = 0; e < E; ++e) {
      const float s = scores[size_t(t) * E + e];
      key[e] = bias.empty() ? s : multiplicative ? s * bias[e] : s + bias[e];
    }
    std::vector<float> gscore(n_group);
    for (int g = 0; g < n_group; ++g) {
      std::vector<int32_t> mem(m);
      std::iota(mem.begin(), mem.end(), g * m);
      std::stable_sort(mem.begin(), mem.end(), desc_nan_last(key));
      gscore[g] = m == 1 ? key[mem[0]] : key[mem[0]] + key[mem[1]];
    }
    std::vector<int32_t> groups(n_group);
    std::iota(groups.begin(), groups.end(), 0);
    std::stable_sort(groups.begin(), groups.end(), desc_nan_last(gscore));
    std::vector<char> kept(n_group, 0);
    for (int r = 0; r < topk_group; ++r) kept[groups[r]] = 1;
    std::vector<int32_t> cand;
    for (int e = 0; e < E; ++e)
      if (kept[e / m]) cand.push_back(e);
    std::stable_sort(cand.begin(), cand.end(), desc_nan_last(key));
    out.insert(out.end(), cand.begin(), cand.begin() + K);
  }
  return out;
}

// The groups (of n_group over E) that each token's picks fall in, counted.
inline std::vector<int> groups_touched(const std::vector<int32_t>& idx, int N, int E, int K,
                                       int n_group) {
  std::vector<int> out(N);
  const int m = E / n_group;
  for (int t = 0; t < N; ++t) {
    std::vector<char> hit(n_group, 0);
    for (int k = 0; k < K; ++k) hit[idx[size_t(t) * K + k] / m] = 1;
    for (char h : hit) out[t] += h;
  }
  return out;
}

}  // namespace moe::test
