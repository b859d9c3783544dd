// The CPU backend's bf16 mode (Backend<float, bf16>, train.precision:
// bfloat16 on the CPU), the exact-semantics reference of the GPU's mixed
// precision: bf16 storage of activations at the points where the GPU stores
// bf16, fp32 compute, weights read rounded to bf16 by the matmuls.
//   - the bf16 type rounds to nearest even (against a reference written from
//     the definition, over a million bit patterns, and by hand);
//   - every op's bf16 output is the fp64 result on the same (bf16) inputs,
//     rounded once: within one bf16 ulp; fp32 outputs to fp32 accuracy; ops
//     on fp32 GEMMs (linear, router, attention) with, on top, the fp32 error
//     bound that holds for any BLAS kernel and thread count (fp32_bound);
//   - a whole training step against fp64, and a training curve against fp32;
//   - the chunked LM head + loss gives the one-chunk results.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <random>
#include <utility>
#include <vector>

#include "backend/backend.h"
#include "core/bf16.h"
#include "data/token_source.h"
#include "model/transformer.h"
#include "train/trainer.h"

namespace moe {
namespace {

// ------------------------------------------------------------ the type ----

uint32_t bits_of(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}
float float_of(uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

// Round to nearest even from the definition: the two bf16 neighbours of f
// (truncation and the next value away from zero), the nearer one, ties to the
// one with an even last bit; compared in double, where both are exact.
uint16_t reference_round(float f) {
  const uint32_t u = bits_of(f);
  const uint16_t lo = uint16_t(u >> 16), hi = uint16_t(lo + 1);
  const double x = f, a = float_of(uint32_t(lo) << 16);
  // Rounding up past the largest bf16 gives inf; for the distance it stands
  // where the next power of two would be (IEEE 754 overflow rounding).
  const double b = (hi & 0x7f80) == 0x7f80 && (lo & 0x7f80) != 0x7f80
                       ? std::copysign(std::ldexp(1.0, 128), x)
                       : double(float_of(uint32_t(hi) << 16));
  const double da = std::fabs(x - a), db = std::fabs(b - x);
  if (da < db) return lo;
  if (db < da) return hi;
  return (lo & 1) ? hi : lo;
}

TEST(Bf16Type, RoundsToNearestEvenLikeTheDefinition) {
  std::mt19937 rng(7);
  int checked = 0;
  for (int i = 0; i < 1000000; ++i) {
    const float f = float_of(rng());
    if (std::isnan(f)) continue;
    ASSERT_EQ(bf16(f).bits, reference_round(f)) << std::hexfloat << f;
    ++checked;
  }
  EXPECT_GT(checked, 990000);
}

TEST(Bf16Type, HandCases) {
  EXPECT_EQ(bf16(1.0f).bits, 0x3F80);
  EXPECT_EQ(bf16(-2.0f).bits, 0xC000);
  EXPECT_EQ(bf16(1.0f + 0x1p-8f).bits, 0x3F80);          // halfway, 0x3F80 even: down
  EXPECT_EQ(bf16(1.0f + 3 * 0x1p-8f).bits, 0x3F82);      // halfway, 0x3F81 odd: up
  EXPECT_EQ(bf16(1.0f + 0x1p-8f + 0x1p-20f).bits, 0x3F81);  // above halfway: up
  EXPECT_EQ(bf16(-0.0f).bits, 0x8000);
  EXPECT_EQ(bf16(INFINITY).bits, 0x7F80);
  EXPECT_EQ(bf16(3.4e38f).bits, 0x7F80);  // past the largest bf16: inf
  EXPECT_TRUE(std::isnan(float(bf16(NAN))));
  EXPECT_TRUE(std::isnan(float(bf16(float_of(0x7F800001u)))));  // a NaN whose top bits are inf's
  EXPECT_EQ(float(bf16(0.15625f)), 0.15625f);              // exact values stay exact
  EXPECT_EQ(round_to_bf16(1.0f + 0x1p-9f), 1.0f);
}

// ----------------------------------------------------------------- ops ----

using V64 = std::vector<double>;

std::vector<bf16> random_bf16(size_t n, uint64_t seed, double scale = 1.0) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<double> dist(0.0, scale);
  std::vector<bf16> v(n);
  for (auto& x : v) x = bf16(dist(rng));
  return v;
}
std::vector<float> random_f32(size_t n, uint64_t seed, double scale = 1.0) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<double> dist(0.0, scale);
  std::vector<float> v(n);
  for (auto& x : v) x = float(dist(rng));
  return v;
}
template <typename U>
V64 wide(const std::vector<U>& v) {
  return V64(v.begin(), v.end());
}
// The weights a bf16 matmul reads: rounded to bf16.
V64 wide_rounded(const std::vector<float>& w) {
  V64 r(w.size());
  for (size_t i = 0; i < w.size(); ++i) r[i] = round_to_bf16(w[i]);
  return r;
}

// What an fp32 GEMM may legitimately differ by. OpenBLAS's sgemm rounds
// differently with its kernel (Haswell, Zen, SkylakeX, ...) and thread count,
// so a GEMM's fp32 result is held to a bound valid for any summation order:
// an fp32 sum of n terms (products, alpha and a start value included) lies
// within gamma_n sum|terms| ~ n u sum|terms| of the exact value, u = 2^-24;
// sum|terms| is the same fp64 op run on the absolute values of its inputs.
// Deterministic hand loops (norms, SwiGLU, combine, loss, RoPE) need none.
constexpr double kU32 = 0x1p-24;
V64 absv(const V64& v) {
  V64 a(v.size());
  for (size_t i = 0; i < v.size(); ++i) a[i] = std::fabs(v[i]);
  return a;
}
V64 fp32_bound(const V64& abs_terms, int n) {
  V64 b(abs_terms.size());
  for (size_t i = 0; i < b.size(); ++i) b[i] = n * kU32 * abs_terms[i];
  return b;
}

// Every bf16 output element is the fp64 reference rounded once: within one
// bf16 ulp (half for the rounding, half for the fp32 computation before it)
// plus, for an op on fp32 GEMMs, the bound of its fp32 result (attention: see
// attention_forward_bounds). The factor 1.01 covers gamma_n's second-order
// term, the fp64 reference's own ~1e-16 and the bf16 rounding of the fp32
// error itself (2^-8 of it). Without the bound an element whose exact value
// is ~0 (or cancels) would need the GEMM's last bits to match the reference.
void expect_within_one_ulp(const std::vector<bf16>& got, const V64& ref, const char* what,
                           const V64& bound = {}) {
  ASSERT_EQ(got.size(), ref.size()) << what;
  ASSERT_TRUE(bound.empty() || bound.size() == ref.size()) << what;
  int exact = 0, counted = 0;
  for (size_t i = 0; i < ref.size(); ++i) {
    const double r = ref[i], g = float(got[i]), b = bound.empty() ? 0.0 : 1.01 * bound[i];
    const double ulp = r == 0 ? 1e-30 : std::ldexp(1.0, std::ilogb(r) - 7);
    ASSERT_LE(std::fabs(g - r), ulp * 1.0001 + b)
        << what << " element " << i << ": " << g << " vs " << r << " (fp32 bound " << b << ")";
    if (b >= 0.5 * ulp) continue;  // the fp32 result may round to either neighbour
    ++counted;
    exact += float(got[i]) == float(bf16(r));
  }
  // The fp32 computation and the fp64 reference round to the same bf16
  // almost always (a flip needs a rounding boundary within the fp32 error,
  // ~1e-4 of the elements): a systematic error (a missing or extra rounding)
  // would not.
  EXPECT_GT(exact, int(0.97 * double(counted))) << what;
}
// fp32 results of GEMMs: every element within its bound (see fp32_bound).
void expect_within(const std::vector<float>& got, const V64& ref, const V64& bound,
                   const char* what) {
  ASSERT_EQ(got.size(), ref.size()) << what;
  ASSERT_EQ(bound.size(), ref.size()) << what;
  for (size_t i = 0; i < ref.size(); ++i)
    ASSERT_LE(std::fabs(got[i] - ref[i]), 1.01 * bound[i])
        << what << " element " << i << ": " << got[i] << " vs " << ref[i];
}
// Normwise, for fp32 results of deterministic hand loops (no BLAS, a fixed
// order whatever the thread count): the tolerances below are derived each.
void expect_close(const std::vector<float>& got, const V64& ref, double rel, const char* what) {
  ASSERT_EQ(got.size(), ref.size()) << what;
  double num = 0, den = 0;
  for (size_t i = 0; i < ref.size(); ++i) {
    num += (got[i] - ref[i]) * (got[i] - ref[i]);
    den += ref[i] * ref[i];
  }
  EXPECT_LE(std::sqrt(num), rel * std::sqrt(den) + 1e-30) << what;
}
template <typename U>
std::vector<float> narrow(const std::vector<U>& v) {
  return std::vector<float>(v.begin(), v.end());
}

class Bf16Ops : public ::testing::Test {
 protected:
  std::unique_ptr<Backend<float, bf16>> be = make_cpu_backend<float, bf16>(2);
  std::unique_ptr<Backend<double>> ref = make_cpu_backend<double>(2);
};

TEST_F(Bf16Ops, LinearReadsWeightsRoundedToBf16) {
  // Hand case: W0 = 1 + 0.75 * 2^-7 rounds to 1 + 2^-7; x = (1, 1), W1 = -1.
  // Exact: y = 0.75 * 2^-7; with the bf16 weight: y = 2^-7 (both bf16 values).
  // Both sums are exact in fp32 in either order, so EXPECT_EQ.
  const std::vector<bf16> x = {bf16(1.0f), bf16(1.0f)};
  const std::vector<float> W = {1.0f + 0.75f * 0x1p-7f, -1.0f};
  std::vector<bf16> y(1);
  be->linear_forward(y.data(), x.data(), W.data(), 1, 2, 1);
  EXPECT_EQ(float(y[0]), 0x1p-7f);
  // The router's matmul reads the unrounded weight, in fp32.
  std::vector<float> logits(1);
  be->router_linear_forward(logits.data(), x.data(), W.data(), 1, 2, 1);
  EXPECT_EQ(logits[0], 0.75f * 0x1p-7f);
}

TEST_F(Bf16Ops, LinearForwardBackwardAgainstFp64) {
  const int N = 37, I = 48, O = 29;
  const auto x = random_bf16(size_t(N) * I, 1), dy = random_bf16(size_t(N) * O, 2);
  const auto W = random_f32(size_t(O) * I, 3, 0.2);
  const V64 x64 = wide(x), dy64 = wide(dy), W64 = wide_rounded(W);

  std::vector<bf16> y(size_t(N) * O);
  be->linear_forward(y.data(), x.data(), W.data(), N, I, O);
  V64 y64(y.size()), ay(y.size());
  ref->linear_forward(y64.data(), x64.data(), W64.data(), N, I, O);
  ref->linear_forward(ay.data(), absv(x64).data(), absv(W64).data(), N, I, O);  // sum|terms|
  expect_within_one_ulp(y, y64, "y", fp32_bound(ay, I));

  // dx accumulated onto a bf16 start value, rounded once; dW += in fp32.
  std::vector<bf16> dx = random_bf16(size_t(N) * I, 4);
  std::vector<float> dW = random_f32(size_t(O) * I, 5);
  V64 dx64 = wide(dx), dW64 = wide(dW), adx = absv(dx64), adW = absv(dW64);
  be->linear_backward(dx.data(), dW.data(), dy.data(), x.data(), W.data(), N, I, O, true);
  ref->linear_backward(dx64.data(), dW64.data(), dy64.data(), x64.data(), W64.data(), N, I, O, true);
  ref->linear_backward(adx.data(), adW.data(), absv(dy64).data(), absv(x64).data(),
                       absv(W64).data(), N, I, O, true);
  expect_within_one_ulp(dx, dx64, "dx", fp32_bound(adx, O + 1));  // O products + the start value
  expect_within(dW, dW64, fp32_bound(adW, N + 1), "dW");
}

TEST_F(Bf16Ops, RouterMatmulIsFp32) {
  const int N = 21, I = 32, E = 8;
  const auto x = random_bf16(size_t(N) * I, 11);
  const auto W = random_f32(size_t(E) * I, 12, 0.3);
  const auto dlog = random_f32(size_t(N) * E, 13);
  std::vector<float> y(size_t(N) * E);
  be->router_linear_forward(y.data(), x.data(), W.data(), N, I, E);
  V64 y64(y.size()), ay(y.size()), x64 = wide(x), W64 = wide(W), dl64 = wide(dlog);
  ref->linear_forward(y64.data(), x64.data(), W64.data(), N, I, E);
  ref->linear_forward(ay.data(), absv(x64).data(), absv(W64).data(), N, I, E);
  expect_within(y, y64, fp32_bound(ay, I), "router logits");

  std::vector<bf16> dx = random_bf16(size_t(N) * I, 14);
  std::vector<float> dW(size_t(E) * I, 0.0f);
  V64 dx64 = wide(dx), dW64(dW.size(), 0.0), adx = absv(dx64), adW(dW.size(), 0.0);
  be->router_linear_backward(dx.data(), dW.data(), dlog.data(), x.data(), W.data(), N, I, E, true);
  ref->linear_backward(dx64.data(), dW64.data(), dl64.data(), x64.data(), W64.data(), N, I, E, true);
  ref->linear_backward(adx.data(), adW.data(), absv(dl64).data(), absv(x64).data(),
                       absv(W64).data(), N, I, E, true);
  expect_within_one_ulp(dx, dx64, "router dx", fp32_bound(adx, E + 1));
  expect_within(dW, dW64, fp32_bound(adW, N + 1), "router dW");
}

TEST_F(Bf16Ops, GroupedLinearAgainstFp64) {
  const int I = 16, O = 24, G = 3;
  const std::vector<int64_t> off = {0, 5, 5, 12};  // an empty group in the middle
  const int N = int(off.back());
  const auto x = random_bf16(size_t(N) * I, 21), dy = random_bf16(size_t(N) * O, 22);
  const auto W = random_f32(size_t(G) * O * I, 23, 0.3);
  const V64 x64 = wide(x), dy64 = wide(dy), W64 = wide_rounded(W);
  std::vector<bf16> y(size_t(N) * O), dx(size_t(N) * I);
  std::vector<float> dW(W.size(), 0.0f);
  V64 y64(y.size()), dx64(dx.size()), dW64(W.size(), 0.0);
  V64 ay(y.size()), adx(dx.size()), adW(W.size(), 0.0);  // sum|terms|
  const V64 ax = absv(x64), ady = absv(dy64), aW = absv(W64);
  be->grouped_linear_forward(y.data(), x.data(), W.data(), off.data(), G, I, O);
  ref->grouped_linear_forward(y64.data(), x64.data(), W64.data(), off.data(), G, I, O);
  ref->grouped_linear_forward(ay.data(), ax.data(), aW.data(), off.data(), G, I, O);
  expect_within_one_ulp(y, y64, "grouped y", fp32_bound(ay, I));
  be->grouped_linear_backward(dx.data(), dW.data(), dy.data(), x.data(), W.data(), off.data(), G,
                              I, O);
  ref->grouped_linear_backward(dx64.data(), dW64.data(), dy64.data(), x64.data(), W64.data(),
                               off.data(), G, I, O);
  ref->grouped_linear_backward(adx.data(), adW.data(), ady.data(), ax.data(), aW.data(), off.data(),
                               G, I, O);
  expect_within_one_ulp(dx, dx64, "grouped dx", fp32_bound(adx, O));  // dx overwritten
  expect_within(dW, dW64, fp32_bound(adW, N + 1), "grouped dW");     // a group has <= N rows
}

TEST_F(Bf16Ops, NormsAgainstFp64) {
  const int N = 9, D = 40;
  const auto x = random_f32(size_t(N) * D, 31), w = random_f32(D, 32);
  const auto delta = random_bf16(size_t(N) * D, 33), dy = random_bf16(size_t(N) * D, 34);
  const V64 x64 = wide(x), w64 = wide(w), delta64 = wide(delta), dy64 = wide(dy);

  std::vector<bf16> y(size_t(N) * D);
  std::vector<float> rstd(N), sum(size_t(N) * D);
  V64 y64(y.size()), rstd64(N), sum64(sum.size());
  be->residual_rmsnorm_forward(sum.data(), y.data(), rstd.data(), x.data(), delta.data(), w.data(),
                               N, D, 1e-6);
  ref->residual_rmsnorm_forward(sum64.data(), y64.data(), rstd64.data(), x64.data(),
                                delta64.data(), w64.data(), N, D, 1e-6);
  // No BLAS: the sum is one fp32 rounding of the exact x + delta (<= u =
  // 6e-8 relative); rstd is one fp32 rounding of 1/sqrt(ms) in double, ms
  // from the rounded sum (its squares within 2 u, so 1/sqrt(ms) within u):
  // within 2 u.
  expect_close(sum, sum64, 1e-7, "residual sum (fp32)");
  expect_close(rstd, rstd64, 2 * kU32, "rstd (fp32)");
  expect_within_one_ulp(y, y64, "norm output");

  // Backward: dx (the residual gradient) in fp32, its bf16 copy rounded once.
  std::vector<float> dx = random_f32(size_t(N) * D, 35), dw(D, 0.0f);
  std::vector<bf16> dx_act(size_t(N) * D);
  V64 dx64 = wide(dx), dw64(D, 0.0), dx_act64(dx.size());
  be->rmsnorm_backward(dx.data(), dx_act.data(), dw.data(), dy.data(), sum.data(), w.data(),
                       rstd.data(), N, D);
  const V64 sumf = wide(sum), rstdf = wide(rstd);
  ref->rmsnorm_backward(dx64.data(), dx_act64.data(), dw64.data(), dy64.data(), sumf.data(),
                        w64.data(), rstdf.data(), N, D);
  // Computed in double, then dx = fl32(dx + fl32(term)) and dw one fp32
  // rounding: within 2 u (|dx| + |term|), ~2e-7 normwise here.
  expect_close(dx, dx64, 1e-6, "dx (fp32)");
  expect_close(dw, dw64, 1e-6, "dw (fp32)");
  std::vector<bf16> dx_round(dx.begin(), dx.end());
  EXPECT_EQ(0, std::memcmp(dx_act.data(), dx_round.data(), dx.size() * sizeof(bf16)))
      << "the activation copy is the fp32 result rounded once";
}

// Bounds of the CPU attention's fp32 results (attention.cpp, bf16 tiles
// widened to fp32) from the exact ones on the same inputs, for any BLAS
// kernel. Scores s = scale q.k come from an sgemm with alpha = scale rounded
// to fp32: within Delta = (hd + 2) u scale sum_d |q_d k_d|. Forward: e =
// exp(s - m), z = sum e, p = e / z, lse = m + log z in fp32 (expf, logf within
// 2 u), out = P V by an sgemm of <= S terms. With R = max_j (m - s_j):
//   p:   relative error <= 4 Delta_max + 2 u R + (i + 5) u   (query row i)
//   out: <= (that + (S + 1) u) sum_j p_j |v_j|
//   lse: <= 3 Delta_max + u (R + i + 2 + 2 log z + |lse|)
// R, z, p and lse are taken from the exact (fp64) scores.
struct AttnBounds {
  V64 out, lse;
};
// Offsets into qkv [B*S, 3*H*hd] (part 0 q, 1 k, 2 v) and into out or dout
// [B*S, H*hd]; score(i, j) = the dot q_i.k_j and the sum of its |terms|.
struct AttnLayout {
  const V64& qkv;
  int S, H, hd;
  size_t at(int part, int b, int h, int i, int d) const {
    return (size_t(b) * S + i) * 3 * H * hd + size_t(part) * H * hd + size_t(h) * hd + d;
  }
  size_t row(int b, int h, int i, int d) const {
    return (size_t(b) * S + i) * H * hd + size_t(h) * hd + d;
  }
  std::pair<double, double> score(int b, int h, int i, int j) const {
    double dot = 0, adot = 0;
    for (int d = 0; d < hd; ++d) {
      const double t = qkv[at(0, b, h, i, d)] * qkv[at(1, b, h, j, d)];
      dot += t;
      adot += std::fabs(t);
    }
    return {dot, adot};
  }
};

AttnBounds attention_forward_bounds(const V64& qkv, int B, int S, int H, int hd) {
  const AttnLayout L{qkv, S, H, hd};
  const double scale = 1.0 / std::sqrt(double(hd)), u = kU32;
  AttnBounds r{V64(size_t(B) * S * H * hd, 0.0), V64(size_t(B) * H * S, 0.0)};
  for (int b = 0; b < B; ++b)
    for (int h = 0; h < H; ++h)
      for (int i = 0; i < S; ++i) {
        V64 s(i + 1);
        double m = -INFINITY, dmax = 0;
        for (int j = 0; j <= i; ++j) {
          const auto [dot, adot] = L.score(b, h, i, j);
          s[j] = scale * dot;
          m = std::max(m, s[j]);
          dmax = std::max(dmax, (hd + 2) * u * scale * adot);
        }
        double z = 0, R = 0;
        for (int j = 0; j <= i; ++j) {
          z += std::exp(s[j] - m);
          R = std::max(R, m - s[j]);
        }
        const double lse = m + std::log(z);
        r.lse[(size_t(b) * H + h) * S + i] =
            3 * dmax + u * (R + i + 2 + 2 * std::log(z) + std::fabs(lse));
        const double rel = 4 * dmax + 2 * u * R + (i + 5) * u + (S + 1) * u;
        for (int j = 0; j <= i; ++j) {
          const double p = std::exp(s[j] - lse);
          for (int d = 0; d < hd; ++d)
            r.out[L.row(b, h, i, d)] += rel * p * std::fabs(qkv[L.at(2, b, h, j, d)]);
        }
      }
  return r;
}

// Backward (same notation; lse and out are the forward's fp32 and bf16
// results, which the reference reads too): p = exp(s - lse) is within
// relative Delta + u |s - lse| + 2 u; dP = dout.v by an sgemm and D =
// dout.out by a hand loop, each within hd u of a = sum|dout v| and c =
// sum|dout out|, so dS = p (dP - D) is within p (a + c) (Delta + u |s - lse| +
// (hd + 5) u); dq = scale dS K and dk = scale dS^T Q (sgemms of <= S terms,
// alpha = scale in fp32) add (S + 3) u of scale sum |dS| |k| (or |q|), and
// dv = P^T dout adds (S + 1) u of sum p |dout|. An exact dS of 0 (query 0:
// out_0 = v_0, so dP = D) is then allowed the fp32 difference of the two
// sums: whether the sgemm's order matches the hand loop's is the kernel's.
V64 attention_backward_bound(const V64& qkv, const V64& out, const V64& lse, const V64& dout,
                             int B, int S, int H, int hd) {
  const AttnLayout L{qkv, S, H, hd};
  const double scale = 1.0 / std::sqrt(double(hd)), u = kU32;
  V64 bound(qkv.size(), 0.0);
  for (int b = 0; b < B; ++b)
    for (int h = 0; h < H; ++h)
      for (int i = 0; i < S; ++i) {
        const double l = lse[(size_t(b) * H + h) * S + i];
        double c = 0;
        for (int d = 0; d < hd; ++d)
          c += std::fabs(dout[L.row(b, h, i, d)] * out[L.row(b, h, i, d)]);
        for (int j = 0; j <= i; ++j) {
          const auto [dot, adot] = L.score(b, h, i, j);
          double a = 0;
          for (int d = 0; d < hd; ++d)
            a += std::fabs(dout[L.row(b, h, i, d)] * qkv[L.at(2, b, h, j, d)]);
          const double s = scale * dot, p = std::exp(s - l);
          const double ep = (hd + 2) * u * scale * adot + u * std::fabs(s - l);
          const double w = scale * p * (a + c) * (ep + (hd + S + 8) * u);  // dq, dk
          const double wv = p * (ep + (S + 3) * u);                         // dv
          for (int d = 0; d < hd; ++d) {
            bound[L.at(0, b, h, i, d)] += w * std::fabs(qkv[L.at(1, b, h, j, d)]);
            bound[L.at(1, b, h, j, d)] += w * std::fabs(qkv[L.at(0, b, h, i, d)]);
            bound[L.at(2, b, h, j, d)] += wv * std::fabs(dout[L.row(b, h, i, d)]);
          }
        }
      }
  return bound;
}

TEST_F(Bf16Ops, AttentionAndRopeAgainstFp64) {
  const int B = 2, S = 13, H = 2, hd = 8, W = 3 * H * hd;
  std::vector<bf16> qkv = random_bf16(size_t(B) * S * W, 41);
  V64 qkv64 = wide(qkv);
  be->rope_forward(qkv.data(), B, S, H, hd, 10000.0);
  ref->rope_forward(qkv64.data(), B, S, H, hd, 10000.0);
  // RoPE is the same double expression on both sides, rounded once to bf16.
  expect_within_one_ulp(qkv, qkv64, "rope");

  const V64 q_in = wide(qkv);  // the reference continues from the bf16 values
  std::vector<bf16> out(size_t(B) * S * H * hd);
  std::vector<float> lse(size_t(B) * H * S);
  V64 out64(out.size()), lse64(lse.size());
  be->attention_forward(out.data(), lse.data(), qkv.data(), B, S, H, hd);
  ref->attention_forward(out64.data(), lse64.data(), q_in.data(), B, S, H, hd);
  const AttnBounds fb = attention_forward_bounds(q_in, B, S, H, hd);
  expect_within_one_ulp(out, out64, "attention out", fb.out);
  // lse is fp32: within its bound (<= 1e-5 relative; a bf16 rounding would be 4e-3).
  expect_within(lse, lse64, fb.lse, "lse (fp32)");

  const auto dout = random_bf16(out.size(), 42);
  std::vector<bf16> dqkv(qkv.size());
  V64 dqkv64(qkv.size());
  const V64 dout64 = wide(dout), outb = wide(out), lsef = wide(lse);
  be->attention_backward(dqkv.data(), dout.data(), out.data(), lse.data(), qkv.data(), B, S, H, hd);
  ref->attention_backward(dqkv64.data(), dout64.data(), outb.data(), lsef.data(), q_in.data(), B,
                          S, H, hd);
  expect_within_one_ulp(dqkv, dqkv64, "dqkv",
                        attention_backward_bound(q_in, outb, lsef, dout64, B, S, H, hd));
}

TEST_F(Bf16Ops, SwigluCombineAndLossAgainstFp64) {
  const int N = 11, F = 20, K = 2, D = F;
  const auto a13 = random_bf16(size_t(N) * 2 * F, 51), dh = random_bf16(size_t(N) * F, 52);
  std::vector<bf16> h(size_t(N) * F), da13(a13.size());
  V64 h64(h.size()), da64(a13.size());
  const V64 a64 = wide(a13), dh64 = wide(dh);
  be->swiglu_forward(h.data(), a13.data(), N, F);
  ref->swiglu_forward(h64.data(), a64.data(), N, F);
  expect_within_one_ulp(h, h64, "swiglu h");
  be->swiglu_backward(da13.data(), dh.data(), a13.data(), N, F);
  ref->swiglu_backward(da64.data(), dh64.data(), a64.data(), N, F);
  expect_within_one_ulp(da13, da64, "swiglu da13");

  // Combine: y += sum_k g * yp, summed in fp32 and rounded once.
  std::vector<int32_t> row(size_t(N) * K);
  for (int i = 0; i < N * K; ++i) row[i] = (i * 7) % (N * K);
  const auto yp = random_bf16(size_t(N) * K * D, 53);
  const auto gates = random_f32(size_t(N) * K, 54);
  std::vector<bf16> y = random_bf16(size_t(N) * D, 55);
  V64 y64 = wide(y);
  const V64 yp64 = wide(yp), g64 = wide(gates);
  be->combine_forward(y.data(), yp.data(), gates.data(), row.data(), N, K, D);
  ref->combine_forward(y64.data(), yp64.data(), g64.data(), row.data(), N, K, D);
  expect_within_one_ulp(y, y64, "combine");
  const auto dy = random_bf16(size_t(N) * D, 56);
  std::vector<bf16> dyp(yp.size());
  std::vector<float> dg(gates.size());
  V64 dyp64(yp.size()), dg64(gates.size());
  const V64 dy64 = wide(dy);
  be->combine_backward(dyp.data(), dg.data(), dy.data(), yp.data(), gates.data(), row.data(), N, K,
                       D);
  ref->combine_backward(dyp64.data(), dg64.data(), dy64.data(), yp64.data(), g64.data(),
                        row.data(), N, K, D);
  expect_within_one_ulp(dyp, dyp64, "combine dyp");
  expect_close(dg, dg64, 1e-6, "dgates (fp32)");  // a double dot product rounded once: <= u
  std::vector<bf16> dx = random_bf16(size_t(N) * D, 57);
  V64 dx64 = wide(dx);
  be->permute_rows_backward(dx.data(), dyp.data(), row.data(), N, K, D);
  const V64 dypb = wide(dyp);
  ref->permute_rows_backward(dx64.data(), dypb.data(), row.data(), N, K, D);
  expect_within_one_ulp(dx, dx64, "permute backward");

  // Loss from bf16 logits: fp32 losses, bf16 gradient written in place.
  const int V = 50;
  std::vector<bf16> logits = random_bf16(size_t(N) * V, 58, 3.0);
  std::vector<int32_t> tgt(N);
  for (int i = 0; i < N; ++i) tgt[i] = (i * 13) % V;
  const V64 l64 = wide(logits);
  V64 loss64(N), dl64(logits.size());
  ref->cross_entropy(loss64.data(), dl64.data(), l64.data(), tgt.data(), N, V, 0.25);
  std::vector<float> loss(N);
  be->cross_entropy(loss.data(), logits.data(), logits.data(), tgt.data(), N, V, 0.25);
  // loss = m + log z - x_t in double from fp32 exp terms (expf within ~u
  // each, so log z within ~u absolute), rounded once to fp32: within
  // u (1 + |loss|), 6.8e-8 normwise for these losses (2.2 .. 10); no BLAS.
  expect_close(loss, loss64, 1e-7, "losses (fp32)");
  expect_within_one_ulp(logits, dl64, "dlogits (in place)");
}

// ------------------------------------------------------------ the model ----

Config small_config() {
  Config c;
  c.model = {.vocab_size = 64, .hidden = 32, .heads = 2, .layers = 3, .first_dense_layers = 1,
             .dense_intermediate = 64, .seq_len = 16, .rope_theta = 10000, .norm_eps = 1e-6,
             .init_std = 0.05};
  c.moe.n_shared = 1;
  c.moe.n_routed = 8;
  c.moe.top_k = 2;
  c.moe.expert_intermediate = 16;
  c.balance.method = BalanceMethod::LossFree;
  c.train.global_batch = 4;
  c.train.micro_batch = 2;
  c.train.lr = 3e-3;
  c.train.warmup_steps = 5;
  c.train.min_lr = 3e-4;
  c.train.threads = 1;
  c.train.steps = 30;
  c.data.synthetic_branching = 2;
  return c;
}

struct Step {
  double loss;
  std::vector<double> grads;
};

template <typename T, typename A>
Step one_step(const Config& c, int B) {
  auto be = make_cpu_backend<T, A>(1);
  Transformer<T, A> model(c, *be, B);
  model.init_params(9);
  std::vector<int32_t> tok(size_t(B) * c.model.seq_len), tgt(tok.size());
  for (size_t i = 0; i < tok.size(); ++i) {
    tok[i] = int32_t((11 * i + 5) % c.model.vocab_size);
    tgt[i] = int32_t((3 * i + 2) % c.model.vocab_size);
  }
  ForwardOptions opt;
  opt.training = true;
  opt.ce_grad_scale = 1.0 / double(tok.size());
  model.params().zero_grads();
  const ForwardResult r = model.forward(tok.data(), tgt.data(), B, opt);
  model.backward();
  const auto g = model.params().grads_to_host();
  return {r.loss_sum / double(r.tokens), std::vector<double>(g.begin(), g.end())};
}

double cosine(const std::vector<double>& a, const std::vector<double>& b) {
  double ab = 0, aa = 0, bb = 0;
  for (size_t i = 0; i < a.size(); ++i) ab += a[i] * b[i], aa += a[i] * a[i], bb += b[i] * b[i];
  return ab / std::sqrt(aa * bb);
}

TEST(Bf16Model, OneStepAgainstFp64) {
  const Config c = small_config();
  const Step s64 = one_step<double, double>(c, 2);
  const Step s32 = one_step<float, float>(c, 2);
  const Step s16 = one_step<float, bf16>(c, 2);
  std::printf("  loss fp64 %.6f fp32 %.6f bf16 %.6f; grad cosine fp32 %.8f bf16 %.6f\n", s64.loss,
              s32.loss, s16.loss, cosine(s32.grads, s64.grads), cosine(s16.grads, s64.grads));
  // Whole-model statistics over ~30k fp32 GEMM outputs, so a BLAS kernel or
  // thread count changes them only in digits far below the tolerances.
  // fp32: relative errors of a few u per op, ~1e-7 on the mean loss
  // (observed equal to 7 digits); 1e-5 ~ 170 u. cos = 1 - |rel err|^2 / 2,
  // so 0.999999 allows a 1.4e-3 normwise gradient error: a bf16-sized error
  // (~2^-9 per rounding, accumulated: 3%) fails it; fp32 prints cos
  // 1.00000000 (error < 1e-4).
  // bf16: ~2^-9 per stored activation; observed loss 2.6e-5 relative and
  // cos 0.9995 (3.1% normwise) on every OpenBLAS kernel; 0.999 is 4.5%.
  EXPECT_NEAR(s32.loss, s64.loss, 1e-5 * s64.loss);
  EXPECT_NEAR(s16.loss, s64.loss, 1e-2 * s64.loss);
  EXPECT_NE(s16.loss, s32.loss);  // the bf16 roundings are really there
  EXPECT_GT(cosine(s32.grads, s64.grads), 0.999999);
  EXPECT_GT(cosine(s16.grads, s64.grads), 0.999);
}

TEST(Bf16Model, TrainingFollowsFp32) {
  const Config c = small_config();
  LocalComm comm;
  auto data = make_train_source(c);
  auto be32 = make_cpu_backend<float>(1);
  auto be16 = make_cpu_backend<float, bf16>(1);
  Trainer<float> t32(c, *be32, comm, *data);
  Trainer<float, bf16> t16(c, *be16, comm, *data);
  double worst = 0;
  for (int64_t s = 0; s < c.train.steps; ++s) {
    const StepStats a = t32.train_step(s), b = t16.train_step(s);
    ASSERT_FALSE(b.skipped) << "step " << s;
    worst = std::max(worst, std::fabs(a.loss - b.loss) / a.loss);
    // bf16 activations (2^-9 per rounding) make a different trajectory;
    // observed at most 7e-4 .. 9e-4 over 30 steps (SkylakeX, Haswell, Zen
    // sgemm): 2e-2 leaves 20x for the drift, which no kernel change nears.
    EXPECT_NEAR(b.loss, a.loss, 2e-2 * a.loss) << "step " << s;
  }
  std::printf("  30 steps: largest relative loss difference bf16 vs fp32 %.2e\n", worst);
  // Both learn: the last loss is well under the first.
  EXPECT_EQ(be16->name(), "cpu-bf16");
}

TEST(Bf16Model, HalvesTheActivationMemory) {
  // Same model in both modes: what differs is the activation bytes (A), and
  // the parameter state (T) is the same; so fp32 - bf16 = the bf16 bytes of
  // the activations, i.e. bf16 mode holds half of fp32's activation bytes.
  Config c = small_config();
  auto be32 = make_cpu_backend<float>(1);
  auto be16 = make_cpu_backend<float, bf16>(1);
  const size_t params = [&] {
    auto be = make_cpu_backend<float>(1);
    Transformer<float> m(c, *be, 1);
    return m.params().size() * 4 * sizeof(float);
  }();
  Transformer<float> m32(c, *be32, 4);
  Transformer<float, bf16> m16(c, *be16, 4);
  const size_t b32 = be32->current_bytes(), b16 = be16->current_bytes();
  EXPECT_LT(b16, b32);
  // At least a quarter of the non-parameter bytes go: every big per-token
  // buffer but the residual stream, its gradient and the fp32 router is A.
  EXPECT_GT(b32 - b16, (b32 - params) / 4);
}

TEST(LossChunks, ChunkedHeadEqualsOneChunk) {
  Config c = small_config();
  const int B = 2;  // 32 tokens: chunks of 7 leave a tail of 4
  const Step whole = one_step<double, double>(c, B);
  c.train.loss_chunk_tokens = 7;
  const Step chunked = one_step<double, double>(c, B);
  // fp64; the chunks change the dgemm shapes and how the head's dW and the
  // loss sum group their 32 token terms: any order is within 32 * 2^-53 of
  // sum|terms| (loss sum ~133: 5e-13, /32 for the mean: 1.5e-14; gradients
  // ~0.1: < 1e-15), so 1e-13 and 1e-12 hold for every BLAS kernel.
  EXPECT_NEAR(chunked.loss, whole.loss, 1e-13);
  ASSERT_EQ(chunked.grads.size(), whole.grads.size());
  double worst = 0;
  for (size_t i = 0; i < whole.grads.size(); ++i)
    worst = std::max(worst, std::fabs(chunked.grads[i] - whole.grads[i]));
  EXPECT_LT(worst, 1e-12);
  // The logits of one chunk only: the model holds less memory.
  auto be_a = make_cpu_backend<double>(1), be_b = make_cpu_backend<double>(1);
  Config big = small_config();
  big.model.vocab_size = 4096;
  Transformer<double> a(big, *be_a, B);
  big.train.loss_chunk_tokens = 8;
  Transformer<double> b(big, *be_b, B);
  EXPECT_EQ(a.loss_chunk_rows(), B * big.model.seq_len);
  EXPECT_EQ(b.loss_chunk_rows(), 8);
  EXPECT_LT(be_b->current_bytes(), be_a->current_bytes());
}

}  // namespace
}  // namespace moe
