// RoPE (rotate-half) and causal softmax attention over the fused qkv buffer
// [N, 3*H*hd]: q | k | v, head h at columns h*hd of each part.
//
// Attention works per (batch, head) tile on BLAS GEMMs that read q, k, v and
// write dq, dk, dv in place in the fused buffers (row stride 3*H*hd). The
// forward keeps only lse[B,H,S]; the backward recomputes the probabilities
// from q, k and lse into an S x S buffer per thread. Everything computes in
// the compute type (float for fp32 and bf16, double for fp64), exp included;
// bf16 tiles are widened to float first and results rounded once.
#include <algorithm>
#include <cmath>
#include <type_traits>
#include <vector>

#include "backend/cpu/cpu_blas.h"
#include "backend/cpu/cpu_backend.h"
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

template <typename T, typename A>
void CpuBackend<T, A>::rope_forward(A* qkv, int B, int S, int H, int hd, double theta) {
  rope_apply(nt_, qkv, B, S, H, hd, theta, 1.0);
}

template <typename T, typename A>
void CpuBackend<T, A>::rope_backward(A* dqkv, int B, int S, int H, int hd, double theta) {
  rope_apply(nt_, dqkv, B, S, H, hd, theta, -1.0);
}

namespace {

// Row block of the causal tiling: a block of query rows meets only the keys
// up to its last row, so the GEMMs skip the blocks above the diagonal. Fixed,
// so the summation order never depends on the thread count.
constexpr int kBlock = 64;

// S rows of hd of one (batch, head) in the compute type C, row stride ld.
template <typename P>
struct Tile {
  P* p;
  int ld;
  P* row(int i) const { return p + static_cast<size_t>(i) * ld; }
};

template <typename C>
C* grow(std::vector<C>& v, size_t n) {
  if (v.size() < n) v.resize(n);
  return v.data();
}

// An input tile: a view into the fused buffer when it already holds C, else
// (bf16) a widened copy in buf.
template <typename C, typename A>
Tile<const C> read_tile(const A* src, int ld, int S, int hd, std::vector<C>& buf) {
  if constexpr (std::is_same_v<A, C>) {
    return {src, ld};
  } else {
    C* f = grow(buf, static_cast<size_t>(S) * hd);
    for (int i = 0; i < S; i++)
      for (int d = 0; d < hd; d++)
        f[static_cast<size_t>(i) * hd + d] = static_cast<C>(src[static_cast<size_t>(i) * ld + d]);
    return {f, hd};
  }
}

// An output tile: GEMMs write in place when dst holds C, else (bf16) into buf,
// which store_tile rounds into dst once.
template <typename C, typename A>
Tile<C> out_tile(A* dst, int ld, int S, int hd, std::vector<C>& buf) {
  if constexpr (std::is_same_v<A, C>) {
    return {dst, ld};
  } else {
    return {grow(buf, static_cast<size_t>(S) * hd), hd};
  }
}
template <typename C, typename A>
void store_tile(A* dst, int ld, const Tile<C>& t, int S, int hd) {
  if constexpr (!std::is_same_v<A, C>) {
    for (int i = 0; i < S; i++)
      for (int d = 0; d < hd; d++)
        dst[static_cast<size_t>(i) * ld + d] = static_cast<A>(t.row(i)[d]);
  }
}

// Per-thread buffers, grown once and reused across calls.
template <typename C>
struct Scratch {
  std::vector<C> q, k, v, o, dout, dq, dk, dv;  // bf16 mode: tiles widened to float
  std::vector<C> p, dp, D;
};
template <typename C>
Scratch<C>& scratch() {
  thread_local Scratch<C> s;
  return s;
}

// Query row i of the scores, in place: p_j = exp(x_j - m) / z for j <= i and
// 0 for i < j < end (the mask inside the diagonal block). Returns m + log z.
template <typename C>
C softmax_row(C* p, int i, int end) {
  C m = -INFINITY;
  for (int j = 0; j <= i; j++) m = p[j] > m ? p[j] : m;
  C z = 0;
  for (int j = 0; j <= i; j++) z += (p[j] = std::exp(p[j] - m));
  const C inv = C(1) / z;
  for (int j = 0; j <= i; j++) p[j] *= inv;
  for (int j = i + 1; j < end; j++) p[j] = C(0);
  return m + std::log(z);
}

}  // namespace

// One (batch, head) tile per iteration, by query blocks: scores = scale q k^T
// (GEMM), row softmax, out = P v (GEMM). BLAS runs single-threaded inside the
// parallel loop, so every tile is computed the same way whatever nt is.
template <typename T, typename A>
void CpuBackend<T, A>::attention_forward(A* out, T* lse, const A* qkv, int B, int S, int H,
                                         int hd) {
  using C = compute_t<A>;
  const int W = 3 * H * hd, OW = H * hd;
  const C scale = static_cast<C>(1.0 / std::sqrt(static_cast<double>(hd)));
  blas_set_threads(1);
#pragma omp parallel for num_threads(nt_) schedule(static)
  for (int t = 0; t < B * H; t++) {
    const int b = t / H, h = t % H;
    Scratch<C>& s = scratch<C>();
    const A* x = qkv + static_cast<size_t>(b) * S * W + static_cast<size_t>(h) * hd;
    const Tile<const C> q = read_tile<C>(x, W, S, hd, s.q);
    const Tile<const C> k = read_tile<C>(x + OW, W, S, hd, s.k);
    const Tile<const C> v = read_tile<C>(x + 2 * OW, W, S, hd, s.v);
    A* o_dst = out + static_cast<size_t>(b) * S * OW + static_cast<size_t>(h) * hd;
    const Tile<C> o = out_tile<C>(o_dst, OW, S, hd, s.o);
    C* P = grow(s.p, static_cast<size_t>(kBlock) * S);
    T* l = lse + static_cast<size_t>(t) * S;  // lse[b, h, :]
    for (int i0 = 0; i0 < S; i0 += kBlock) {
      const int i1 = std::min(S, i0 + kBlock);
      gemm<C>(false, true, i1 - i0, i1, hd, scale, q.row(i0), q.ld, k.p, k.ld, C(0), P, S);
      for (int i = i0; i < i1; i++)
        l[i] = static_cast<T>(softmax_row(P + static_cast<size_t>(i - i0) * S, i, i1));
      gemm<C>(false, false, i1 - i0, hd, i1, C(1), P, S, v.p, v.ld, C(0), o.row(i0), o.ld);
    }
    store_tile(o_dst, OW, o, S, hd);
  }
}

// With p_ij = exp(scale q_i.k_j - lse_i), dp_ij = dout_i.v_j, D_i = dout_i.out_i
// and ds_ij = p_ij (dp_ij - D_i):
//   dq = scale dS k;  dk = scale dS^T q;  dv = P^T dout.
// Per (batch, head) tile: P is recomputed from lse into an S x S buffer, dv
// taken from it, then P is overwritten by dS. dq goes by query blocks, dk and
// dv by key blocks (key j meets the queries i >= j): each output is written
// by one GEMM, so no accumulation across threads.
template <typename T, typename A>
void CpuBackend<T, A>::attention_backward(A* dqkv, const A* dout, const A* out, const T* lse,
                                          const A* qkv, int B, int S, int H, int hd) {
  using C = compute_t<A>;
  const int W = 3 * H * hd, OW = H * hd;
  const C scale = static_cast<C>(1.0 / std::sqrt(static_cast<double>(hd)));
  const size_t SS = static_cast<size_t>(S) * S;
  blas_set_threads(1);
#pragma omp parallel for num_threads(nt_) schedule(static)
  for (int t = 0; t < B * H; t++) {
    const int b = t / H, h = t % H;
    Scratch<C>& s = scratch<C>();
    const size_t xo = static_cast<size_t>(b) * S * W + static_cast<size_t>(h) * hd;
    const size_t oo = static_cast<size_t>(b) * S * OW + static_cast<size_t>(h) * hd;
    const Tile<const C> q = read_tile<C>(qkv + xo, W, S, hd, s.q);
    const Tile<const C> k = read_tile<C>(qkv + xo + OW, W, S, hd, s.k);
    const Tile<const C> v = read_tile<C>(qkv + xo + 2 * OW, W, S, hd, s.v);
    const Tile<const C> o = read_tile<C>(out + oo, OW, S, hd, s.o);
    const Tile<const C> go = read_tile<C>(dout + oo, OW, S, hd, s.dout);
    const Tile<C> dq = out_tile<C>(dqkv + xo, W, S, hd, s.dq);
    const Tile<C> dk = out_tile<C>(dqkv + xo + OW, W, S, hd, s.dk);
    const Tile<C> dv = out_tile<C>(dqkv + xo + 2 * OW, W, S, hd, s.dv);
    const T* l = lse + static_cast<size_t>(t) * S;
    C* P = grow(s.p, SS);  // row i at P + i*S; above the diagonal: 0 or unused
    C* dP = grow(s.dp, static_cast<size_t>(kBlock) * S);
    C* D = grow(s.D, static_cast<size_t>(S));
    for (int i = 0; i < S; i++) {
      C acc = 0;
      for (int d = 0; d < hd; d++) acc += go.row(i)[d] * o.row(i)[d];
      D[i] = acc;
    }
    for (int i0 = 0; i0 < S; i0 += kBlock) {  // P, by query blocks as in the forward
      const int i1 = std::min(S, i0 + kBlock);
      C* Pb = P + static_cast<size_t>(i0) * S;
      gemm<C>(false, true, i1 - i0, i1, hd, scale, q.row(i0), q.ld, k.p, k.ld, C(0), Pb, S);
      for (int i = i0; i < i1; i++) {
        C* p = P + static_cast<size_t>(i) * S;
        const C li = static_cast<C>(l[i]);
        for (int j = 0; j <= i; j++) p[j] = std::exp(p[j] - li);
        for (int j = i + 1; j < i1; j++) p[j] = C(0);
      }
    }
    // Key block [j0, j1) against query rows [j0, S): P[j0:, j0:j1]^T.
    for (int j0 = 0; j0 < S; j0 += kBlock) {
      const int j1 = std::min(S, j0 + kBlock);
      gemm<C>(true, false, j1 - j0, hd, S - j0, C(1), P + static_cast<size_t>(j0) * S + j0, S,
              go.row(j0), go.ld, C(0), dv.row(j0), dv.ld);
    }
    for (int i0 = 0; i0 < S; i0 += kBlock) {
      const int i1 = std::min(S, i0 + kBlock);
      C* Pb = P + static_cast<size_t>(i0) * S;
      gemm<C>(false, true, i1 - i0, i1, hd, C(1), go.row(i0), go.ld, v.p, v.ld, C(0), dP, S);
      for (int i = i0; i < i1; i++) {
        C* p = P + static_cast<size_t>(i) * S;
        const C* dp = dP + static_cast<size_t>(i - i0) * S;
        for (int j = 0; j <= i; j++) p[j] *= dp[j] - D[i];
      }
      gemm<C>(false, false, i1 - i0, hd, i1, scale, Pb, S, k.p, k.ld, C(0), dq.row(i0), dq.ld);
    }
    for (int j0 = 0; j0 < S; j0 += kBlock) {
      const int j1 = std::min(S, j0 + kBlock);
      gemm<C>(true, false, j1 - j0, hd, S - j0, scale, P + static_cast<size_t>(j0) * S + j0, S,
              q.row(j0), q.ld, C(0), dk.row(j0), dk.ld);
    }
    store_tile(dqkv + xo, W, dq, S, hd);
    store_tile(dqkv + xo + OW, W, dk, S, hd);
    store_tile(dqkv + xo + 2 * OW, W, dv, S, hd);
  }
}

MOE_OPS_ATTENTION(MOE_CPU_INSTANTIATE)

}  // namespace moe::cpu
