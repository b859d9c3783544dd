// RoPE (rotate-half) and causal softmax attention over the fused qkv buffer
// [N, 3*H*hd]: q | k | v, head h at columns h*hd of each part.
//
// Attention is flash-style: the forward keeps only lse[B,H,S]; the backward
// recomputes each probability from q, k and lse. Only one score row per
// thread is ever held. Scores, softmax and dot products accumulate in double.
#include <cmath>
#include <vector>

#include "backend/cpu/cpu_ops.h"
#include "core/error.h"

namespace moe::cpu {

// cos/sin of pos * theta^(-2i/hd) for pos < S, i < hd/2, in double.
static void rope_table(std::vector<double>& cs, std::vector<double>& sn, int S, int hd,
                       double theta) {
  const int half = hd / 2;
  cs.resize(static_cast<size_t>(S) * half);
  sn.resize(cs.size());
  for (int i = 0; i < half; i++) {
    const double inv_freq = std::pow(theta, -2.0 * i / hd);
    for (int pos = 0; pos < S; pos++) {
      const double a = pos * inv_freq;
      cs[static_cast<size_t>(pos) * half + i] = std::cos(a);
      sn[static_cast<size_t>(pos) * half + i] = std::sin(a);
    }
  }
}

// Rotates pairs (i, i+hd/2) of every q and k head by +angle (dir = 1) or by
// -angle (dir = -1, the inverse = transpose, used by the backward).
template <typename A>
static void rope_apply(int nt, A* qkv, int B, int S, int H, int hd, double theta, double dir) {
  MOE_CHECK(hd % 2 == 0, "rope: head_dim must be even");
  std::vector<double> cs, sn;
  rope_table(cs, sn, S, hd, theta);
  const int half = hd / 2, W = 3 * H * hd, N = B * S;
#pragma omp parallel for num_threads(nt) schedule(static)
  for (int n = 0; n < N; n++) {
    const double* c = cs.data() + static_cast<size_t>(n % S) * half;
    const double* s = sn.data() + static_cast<size_t>(n % S) * half;
    A* row = qkv + static_cast<size_t>(n) * W;
    for (int h = 0; h < 2 * H; h++) {  // q heads then k heads: the first 2*H*hd columns
      A* x = row + static_cast<size_t>(h) * hd;
      for (int i = 0; i < half; i++) {
        const double a = x[i], b = x[i + half], si = dir * s[i];
        x[i] = static_cast<A>(a * c[i] - b * si);
        x[i + half] = static_cast<A>(b * c[i] + a * si);
      }
    }
  }
}

template <typename A>
void rope_forward(int nt, A* qkv, int B, int S, int H, int hd, double theta) {
  rope_apply(nt, qkv, B, S, H, hd, theta, 1.0);
}

template <typename A>
void rope_backward(int nt, A* dqkv, int B, int S, int H, int hd, double theta) {
  rope_apply(nt, dqkv, B, S, H, hd, theta, -1.0);
}

template <typename A>
static double dot(const A* a, const A* b, int n) {
  double acc = 0.0;
  for (int d = 0; d < n; d++) acc += static_cast<double>(a[d]) * static_cast<double>(b[d]);
  return acc;
}

// The (batch, head, position) of a flat index over [B, H, S], the order lse
// and the per-row loops use.
namespace {
struct RowIndex {
  int b, h, pos;
  RowIndex(long idx, int S, int H)
      : b(static_cast<int>(idx / (static_cast<long>(S) * H))),
        h(static_cast<int>(idx / S % H)),
        pos(static_cast<int>(idx % S)) {}
};
}  // namespace

// One (batch, head, query) per iteration: score row, max-subtracted softmax,
// weighted sum of v.
template <typename T, typename A>
void attention_forward(int nt, A* out, T* lse, const A* qkv, int B, int S, int H, int hd) {
  const int W = 3 * H * hd, OW = H * hd;
  const double scale = 1.0 / std::sqrt(static_cast<double>(hd));
  const long total = static_cast<long>(B) * H * S;
#pragma omp parallel num_threads(nt)
  {
    std::vector<double> p(S), acc(hd);
#pragma omp for schedule(static)
    for (long idx = 0; idx < total; idx++) {
      const RowIndex r(idx, S, H);
      const int i = r.pos, h = r.h, b = r.b;
      const A* base = qkv + static_cast<size_t>(b) * S * W;
      const A* q = base + static_cast<size_t>(i) * W + h * hd;
      double m = -INFINITY;
      for (int j = 0; j <= i; j++) {
        p[j] = scale * dot(q, base + static_cast<size_t>(j) * W + OW + h * hd, hd);
        if (p[j] > m) m = p[j];
      }
      double z = 0.0;
      for (int j = 0; j <= i; j++) z += (p[j] = std::exp(p[j] - m));
      for (int d = 0; d < hd; d++) acc[d] = 0.0;
      for (int j = 0; j <= i; j++) {
        const A* v = base + static_cast<size_t>(j) * W + 2 * OW + h * hd;
        const double pj = p[j] / z;
        for (int d = 0; d < hd; d++) acc[d] += pj * static_cast<double>(v[d]);
      }
      A* o = out + (static_cast<size_t>(b) * S + i) * OW + h * hd;
      for (int d = 0; d < hd; d++) o[d] = static_cast<A>(acc[d]);
      lse[idx] = static_cast<T>(m + std::log(z));  // idx == (b*H + h)*S + i
    }
  }
}

// With p_ij = exp(scale q_i.k_j - lse_i), dp_ij = dout_i.v_j, D_i = dout_i.out_i
// and ds_ij = p_ij (dp_ij - D_i):
//   dq_i = scale sum_j ds_ij k_j;  dk_j = scale sum_i ds_ij q_i;  dv_j = sum_i p_ij dout_i.
// Pass 1 owns one query row (dq), pass 2 one key row (dk, dv): every output is
// written by one iteration, so no races and no dependence on the thread count.
template <typename T, typename A>
void attention_backward(int nt, A* dqkv, const A* dout, const A* out, const T* lse, const A* qkv,
                        int B, int S, int H, int hd) {
  const int W = 3 * H * hd, OW = H * hd;
  const double scale = 1.0 / std::sqrt(static_cast<double>(hd));
  const long total = static_cast<long>(B) * H * S;
  std::vector<double> Dv(total);
#pragma omp parallel for num_threads(nt) schedule(static)
  for (long idx = 0; idx < total; idx++) {
    const RowIndex r(idx, S, H);
    const int i = r.pos, h = r.h, b = r.b;
    const size_t o = (static_cast<size_t>(b) * S + i) * OW + h * hd;
    Dv[idx] = dot(dout + o, out + o, hd);
  }

#pragma omp parallel num_threads(nt)
  {
    std::vector<double> acc(hd), acc2(hd);
    // pass 1: dq of query i
#pragma omp for schedule(static)
    for (long idx = 0; idx < total; idx++) {
      const RowIndex r(idx, S, H);
      const int i = r.pos, h = r.h, b = r.b;
      const A* base = qkv + static_cast<size_t>(b) * S * W;
      const A* q = base + static_cast<size_t>(i) * W + h * hd;
      const A* go = dout + (static_cast<size_t>(b) * S + i) * OW + h * hd;
      const double l = lse[idx], Di = Dv[idx];
      for (int d = 0; d < hd; d++) acc[d] = 0.0;
      for (int j = 0; j <= i; j++) {
        const A* k = base + static_cast<size_t>(j) * W + OW + h * hd;
        const A* v = base + static_cast<size_t>(j) * W + 2 * OW + h * hd;
        const double p = std::exp(scale * dot(q, k, hd) - l);
        const double ds = p * (dot(go, v, hd) - Di);
        for (int d = 0; d < hd; d++) acc[d] += ds * static_cast<double>(k[d]);
      }
      A* dq = dqkv + (static_cast<size_t>(b) * S + i) * W + h * hd;
      for (int d = 0; d < hd; d++) dq[d] = static_cast<A>(scale * acc[d]);
    }
    // pass 2: dk and dv of key j; round-robin since row j sees S - j queries
#pragma omp for schedule(static, 1)
    for (long idx = 0; idx < total; idx++) {
      const RowIndex r(idx, S, H);
      const int j = r.pos, h = r.h, b = r.b;
      const A* base = qkv + static_cast<size_t>(b) * S * W;
      const A* k = base + static_cast<size_t>(j) * W + OW + h * hd;
      const A* v = base + static_cast<size_t>(j) * W + 2 * OW + h * hd;
      const long row0 = idx - j;  // (b*H + h)*S: lse and D of query 0
      for (int d = 0; d < hd; d++) acc[d] = acc2[d] = 0.0;
      for (int i = j; i < S; i++) {
        const A* q = base + static_cast<size_t>(i) * W + h * hd;
        const A* go = dout + (static_cast<size_t>(b) * S + i) * OW + h * hd;
        const double p = std::exp(scale * dot(q, k, hd) - static_cast<double>(lse[row0 + i]));
        const double ds = p * (dot(go, v, hd) - Dv[row0 + i]);
        for (int d = 0; d < hd; d++) {
          acc[d] += ds * static_cast<double>(q[d]);
          acc2[d] += p * static_cast<double>(go[d]);
        }
      }
      A* dk = dqkv + (static_cast<size_t>(b) * S + j) * W + OW + h * hd;
      A* dv = dk + OW;
      for (int d = 0; d < hd; d++) {
        dk[d] = static_cast<A>(scale * acc[d]);
        dv[d] = static_cast<A>(acc2[d]);
      }
    }
  }
}

#define INSTANTIATE_ROPE(A)                                             \
  template void rope_forward<A>(int, A*, int, int, int, int, double); \
  template void rope_backward<A>(int, A*, int, int, int, int, double);
#define INSTANTIATE(T, A)                                                                      \
  template void attention_forward<T, A>(int, A*, T*, const A*, int, int, int, int);            \
  template void attention_backward<T, A>(int, A*, const A*, const A*, const T*, const A*, int, \
                                         int, int, int);
INSTANTIATE_ROPE(float)
INSTANTIATE_ROPE(double)
INSTANTIATE_ROPE(bf16)
INSTANTIATE(float, float)
INSTANTIATE(double, double)
INSTANTIATE(float, bf16)
#undef INSTANTIATE
#undef INSTANTIATE_ROPE

}  // namespace moe::cpu
