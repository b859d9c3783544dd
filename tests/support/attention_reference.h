// fp64 host reference of causal softmax attention over the fused qkv layout,
// written from the definition, for the tensor-core attention tests
// (test_gpu_attention_tc.cpp on a GPU, emu/tests/test_emu_attention_tc.cpp
// and test_emu_ptx.cpp on the emulated device),
// plus bf16 rounding helpers. Plain C++, no CUDA.
//
// qkv [B*S, 3*H*hd] = q | k | v, head h at columns h*hd of each part; dout and
// out [B*S, H*hd]; lse [B, H, S]; scale 1/sqrt(hd); query i sees keys j <= i:
//   x_ij = scale q_i.k_j,  lse_i = log sum_j exp x_ij,  p_ij = exp(x_ij - lse_i)
//   out_i = sum_j p_ij v_j
//   dp_ij = dout_i.v_j,  D_i = sum_j p_ij dp_ij,  ds_ij = p_ij (dp_ij - D_i)
//   dq_i = scale sum_j ds_ij k_j,  dk_j = scale sum_i ds_ij q_i,  dv_j = sum_i p_ij dout_i
// Rows are spread over std::thread workers (row r to worker r % T, which
// balances the causal triangle); each row's sums run in a fixed order, so
// the result does not depend on the number of threads.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <thread>
#include <vector>

namespace moe::test {

// float -> bf16 bits, round to nearest even (finite inputs).
inline uint16_t bf16_bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, sizeof u);
  u += 0x7fffu + ((u >> 16) & 1u);
  return static_cast<uint16_t>(u >> 16);
}
inline float bf16_value(uint16_t b) {
  const uint32_t u = static_cast<uint32_t>(b) << 16;
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
}
// Rounds v to bf16 in place (the values the kernels see) and returns the bits.
inline std::vector<uint16_t> round_to_bf16(std::vector<float>& v) {
  std::vector<uint16_t> bits(v.size());
  for (size_t i = 0; i < v.size(); ++i) {
    bits[i] = bf16_bits(v[i]);
    v[i] = bf16_value(bits[i]);
  }
  return bits;
}
inline std::vector<float> bf16_to_floats(const std::vector<uint16_t>& bits) {
  std::vector<float> v(bits.size());
  for (size_t i = 0; i < bits.size(); ++i) v[i] = bf16_value(bits[i]);
  return v;
}

// max_i |got_i - ref_i| / max_i |ref_i| (0 for an all-zero reference and result).
template <typename Got>
double attn_normwise_error(const std::vector<Got>& got, const std::vector<double>& ref) {
  double err = 0.0, scale = 0.0;
  for (size_t i = 0; i < ref.size() && i < got.size(); ++i) {
    const double d = std::abs(static_cast<double>(got[i]) - ref[i]);
    err = std::max(err, std::isnan(d) ? INFINITY : d);
    scale = std::max(scale, std::abs(ref[i]));
  }
  if (got.size() != ref.size()) return INFINITY;
  return scale > 0.0 ? err / scale : err;
}

template <typename Got>
double attn_max_abs_error(const std::vector<Got>& got, const std::vector<double>& ref) {
  if (got.size() != ref.size()) return INFINITY;
  double err = 0.0;
  for (size_t i = 0; i < ref.size(); ++i) {
    const double d = std::abs(static_cast<double>(got[i]) - ref[i]);
    err = std::max(err, std::isnan(d) ? INFINITY : d);
  }
  return err;
}

// Calls f(r) for r in [0, n) on up to hardware_concurrency() threads.
template <typename F>
void attn_parallel_rows(int64_t n, const F& f) {
  const int64_t T = std::max<int64_t>(1, std::min<int64_t>(n, std::thread::hardware_concurrency()));
  std::vector<std::thread> workers;
  for (int64_t w = 0; w < T; ++w)
    workers.emplace_back([&, w] {
      for (int64_t r = w; r < n; r += T) f(r);
    });
  for (auto& t : workers) t.join();
}

struct AttnView {
  const std::vector<float>& qkv;
  int B, S, H, hd;
  size_t W() const { return static_cast<size_t>(3) * H * hd; }
  // Element d of row i of head (b, h) of part 0 (q), 1 (k) or 2 (v).
  double at(int part, int b, int h, int i, int d) const {
    return qkv[(static_cast<size_t>(b) * S + i) * W() + static_cast<size_t>(part) * H * hd +
               static_cast<size_t>(h) * hd + d];
  }
  double score(int b, int h, int i, int j) const {  // x_ij
    double s = 0.0;
    for (int d = 0; d < hd; ++d) s += at(0, b, h, i, d) * at(1, b, h, j, d);
    return s / std::sqrt(static_cast<double>(hd));
  }
  double lse(int b, int h, int i) const {
    double mx = -INFINITY;
    for (int j = 0; j <= i; ++j) mx = std::max(mx, score(b, h, i, j));
    double sum = 0.0;
    for (int j = 0; j <= i; ++j) sum += std::exp(score(b, h, i, j) - mx);
    return mx + std::log(sum);
  }
};

// out [B*S, H*hd], lse [B*H*S].
inline void reference_attention_forward(std::vector<double>& out, std::vector<double>& lse,
                                        const std::vector<float>& qkv, int B, int S, int H,
                                        int hd) {
  const AttnView a{qkv, B, S, H, hd};
  const size_t OW = static_cast<size_t>(H) * hd;
  out.assign(static_cast<size_t>(B) * S * OW, 0.0);
  lse.assign(static_cast<size_t>(B) * H * S, 0.0);
  attn_parallel_rows(static_cast<int64_t>(B) * H * S, [&](int64_t r) {
    const int i = static_cast<int>(r % S), h = static_cast<int>(r / S % H),
              b = static_cast<int>(r / S / H);
    const double l = a.lse(b, h, i);
    lse[r] = l;
    double* o = out.data() + (static_cast<size_t>(b) * S + i) * OW + static_cast<size_t>(h) * hd;
    for (int j = 0; j <= i; ++j) {
      const double p = std::exp(a.score(b, h, i, j) - l);
      for (int d = 0; d < hd; ++d) o[d] += p * a.at(2, b, h, j, d);
    }
  });
}

// dqkv [B*S, 3*H*hd] (q, k and v parts) for the output gradient dout [B*S, H*hd].
inline void reference_attention_backward(std::vector<double>& dqkv, const std::vector<float>& qkv,
                                         const std::vector<float>& dout, int B, int S, int H,
                                         int hd) {
  const AttnView a{qkv, B, S, H, hd};
  const size_t OW = static_cast<size_t>(H) * hd, W = a.W();
  const double scale = 1.0 / std::sqrt(static_cast<double>(hd));
  dqkv.assign(static_cast<size_t>(B) * S * W, 0.0);
  std::vector<double> lse(static_cast<size_t>(B) * H * S), D(lse.size());
  auto dO = [&](int b, int h, int i, int d) {
    return static_cast<double>(
        dout[(static_cast<size_t>(b) * S + i) * OW + static_cast<size_t>(h) * hd + d]);
  };
  auto dp = [&](int b, int h, int i, int j) {
    double s = 0.0;
    for (int d = 0; d < hd; ++d) s += dO(b, h, i, d) * a.at(2, b, h, j, d);
    return s;
  };
  // Pass 1, per query row: lse, D, dq.
  attn_parallel_rows(static_cast<int64_t>(B) * H * S, [&](int64_t r) {
    const int i = static_cast<int>(r % S), h = static_cast<int>(r / S % H),
              b = static_cast<int>(r / S / H);
    const double l = a.lse(b, h, i);
    std::vector<double> p(i + 1), g(i + 1);
    double Di = 0.0;
    for (int j = 0; j <= i; ++j) {
      p[j] = std::exp(a.score(b, h, i, j) - l);
      g[j] = dp(b, h, i, j);
      Di += p[j] * g[j];
    }
    lse[r] = l;
    D[r] = Di;
    double* dq = dqkv.data() + (static_cast<size_t>(b) * S + i) * W + static_cast<size_t>(h) * hd;
    for (int j = 0; j <= i; ++j) {
      const double ds = p[j] * (g[j] - Di);
      for (int d = 0; d < hd; ++d) dq[d] += scale * ds * a.at(1, b, h, j, d);
    }
  });
  // Pass 2, per key row: dk, dv.
  attn_parallel_rows(static_cast<int64_t>(B) * H * S, [&](int64_t r) {
    const int j = static_cast<int>(r % S), h = static_cast<int>(r / S % H),
              b = static_cast<int>(r / S / H);
    double* dk =
        dqkv.data() + (static_cast<size_t>(b) * S + j) * W + OW + static_cast<size_t>(h) * hd;
    double* dv = dk + OW;
    for (int i = j; i < S; ++i) {
      const size_t ri = (static_cast<size_t>(b) * H + h) * S + i;
      const double p = std::exp(a.score(b, h, i, j) - lse[ri]);
      const double ds = p * (dp(b, h, i, j) - D[ri]);
      for (int d = 0; d < hd; ++d) {
        dk[d] += scale * ds * a.at(0, b, h, i, d);
        dv[d] += p * dO(b, h, i, d);
      }
    }
  });
}

}  // namespace moe::test
