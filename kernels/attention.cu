// Causal softmax attention over the fused qkv buffer, fp32, flash-style, and
// the rotary embedding applied to its q and k parts (RoPE, at the end).
//
// Layout: qkv [B*S, 3*H*hd] = q | k | v (head h at columns h*hd of each part),
// out [B*S, H*hd], lse [B, H, S]; scale 1/sqrt(hd).
//
// Forward: one block per (query tile of kTile rows, b*H + h); kWarps warps,
// each owning kRowsPerWarp query rows. The block walks the key tiles up to its
// last query; per tile, lane j of a warp scores key j against each of its rows
// (a dot product over hd from shared memory), the warp takes the row max and
// sum with a fixed xor-shuffle tree, and the online softmax rescales the
// running output (lane owns columns lane, lane+32, ...). Only the final row
// statistics reach memory: lse = m + log(l), out = acc / l.
//
// Backward, with p_ij = exp(scale q_i.k_j - lse_i), D_i = <dout_i, out_i>,
// ds_ij = p_ij (dout_i.v_j - D_i):
//   dq_i = scale sum_j ds_ij k_j   -> dq kernel, one block per query tile,
//                                     loop over key tiles j <= i
//   dk_j = scale sum_i ds_ij q_i   -> dkdv kernel, one block per key tile,
//   dv_j = sum_i p_ij dout_i          loop over query tiles i >= j
// Every element of dqkv has exactly one writer; all sums run in a fixed order,
// so the bits are the same on every run and there are no atomics.
//
// Head dim: kernels are templated on HDMAX (32, 64, 128), the padded width of
// the shared tiles and of the per-lane accumulators; the actual hd (<= HDMAX)
// is a runtime value, so hd 16 / 32 use the generic HDMAX = 32 path and any
// hd <= 128 is served by the smallest HDMAX that holds it.
//
// Performance notes (correctness first): this is a SIMT fp32 kernel. A tensor
// core version (FlashAttention-2 style) would keep the tiles in bf16, compute
// S = Q K^T and O += P V with mma.sync / wgmma (ldmatrix from swizzled shared
// memory instead of the +1 padding used here), hold the score tile in
// registers rather than shared memory, use 64-128 row tiles with
// double-buffered cp.async (or TMA on sm_90) loads, and skip the per-element
// causal mask on tiles fully below the diagonal. The math and the one-writer
// structure of the backward would stay the same.
#include <cmath>
#include <string>

#include "attention.h"
#include "core/error.h"
#include "cuda_check.h"
#include "elem.cuh"

namespace moe::kernels {
namespace {

constexpr int kTile = 32;  // query rows and key rows per tile (= warp size: lane <-> key/query)
constexpr int kWarps = 4;
constexpr int kThreads = kWarps * 32;
constexpr int kRowsPerWarp = kTile / kWarps;
constexpr int kMaxHeadDim = 128;

// Loads rows [r0, r0 + kTile) of a head's hd columns (row stride ld floats,
// rows >= S read as 0) into a shared tile with row stride P.
template <int P>
__device__ __forceinline__ void load_tile(float* __restrict__ dst, const float* __restrict__ src,
                                          size_t ld, int r0, int S, int hd) {
  for (int idx = threadIdx.x; idx < kTile * hd; idx += kThreads) {
    const int r = idx / hd, d = idx % hd;
    dst[r * P + d] = (r0 + r < S) ? src[static_cast<size_t>(r0 + r) * ld + d] : 0.f;
  }
}

// The (batch, head) a block works on (blockIdx.y = b*H + h) and where the
// head's row 0 is in the fused qkv-shaped buffers (row stride W = 3*H*hd) and
// in the [N, H*hd] ones (row stride OW); row i of the head is at + i*stride.
struct HeadView {
  int bh;
  size_t W, OW, qkv_head, out_head;
  __device__ HeadView(int S, int H, int hd)
      : bh(blockIdx.y),
        W(static_cast<size_t>(3) * H * hd),
        OW(static_cast<size_t>(H) * hd),
        qkv_head(static_cast<size_t>(bh / H) * S * W + static_cast<size_t>(bh % H) * hd),
        out_head(static_cast<size_t>(bh / H) * S * OW + static_cast<size_t>(bh % H) * hd) {}
};

template <int HDMAX>
struct Smem {
  static constexpr int P = HDMAX + 1;  // padded row stride: conflict-free when lanes vary the row
  static constexpr int tile = kTile * P;
  static constexpr int fwd_floats = 3 * tile + kTile * kTile;
  static constexpr int dq_floats = 4 * tile + kTile * kTile;
  static constexpr int dkdv_floats = 4 * tile + 2 * kTile * kTile + 2 * kTile;
};

template <int HDMAX>
__global__ void __launch_bounds__(kThreads)
    attention_forward_kernel(float* __restrict__ out, float* __restrict__ lse,
                             const float* __restrict__ qkv, int S, int H, int hd, float scale) {
  constexpr int P = Smem<HDMAX>::P;
  constexpr int C = HDMAX / 32;  // columns per lane
  extern __shared__ float smem[];
  float* Qs = smem;
  float* Ks = Qs + Smem<HDMAX>::tile;
  float* Vs = Ks + Smem<HDMAX>::tile;
  float* Ps = Vs + Smem<HDMAX>::tile;  // [kTile rows][kTile keys]

  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  const int q0 = blockIdx.x * kTile;
  const HeadView hv(S, H, hd);
  const int bh = hv.bh;
  const size_t W = hv.W, OW = hv.OW;
  const float* base = qkv + hv.qkv_head;

  load_tile<P>(Qs, base, W, q0, S, hd);

  float m[kRowsPerWarp], l[kRowsPerWarp], acc[kRowsPerWarp][C];
#pragma unroll
  for (int r = 0; r < kRowsPerWarp; ++r) {
    m[r] = -INFINITY;
    l[r] = 0.f;
#pragma unroll
    for (int c = 0; c < C; ++c) acc[r][c] = 0.f;
  }

  const int q_last = min(S, q0 + kTile) - 1;
  for (int k0 = 0; k0 <= q_last; k0 += kTile) {
    __syncthreads();  // previous tile fully consumed
    load_tile<P>(Ks, base + OW, W, k0, S, hd);
    load_tile<P>(Vs, base + 2 * OW, W, k0, S, hd);
    __syncthreads();
    const int j = k0 + lane;
#pragma unroll
    for (int r = 0; r < kRowsPerWarp; ++r) {
      const int qr = warp * kRowsPerWarp + r;
      const int i = q0 + qr;
      if (i >= S) continue;  // warp-uniform
      float s = -INFINITY;
      if (j <= i) {  // j <= i < S
        float dot = 0.f;
        for (int d = 0; d < hd; ++d) dot += Qs[qr * P + d] * Ks[lane * P + d];
        s = dot * scale;
      }
      // Key k0 <= q0 <= i is always visible, so m_new is finite.
      const float m_new = fmaxf(m[r], warp_max(s));
      const float p = (j <= i) ? expf(s - m_new) : 0.f;
      const float alpha = expf(m[r] - m_new);  // 0 on the first tile (m = -inf)
      l[r] = l[r] * alpha + warp_sum(p);
      m[r] = m_new;
      Ps[qr * kTile + lane] = p;
      __syncwarp();
      const int jn = min(kTile, i - k0 + 1);  // visible keys of this tile
#pragma unroll
      for (int c = 0; c < C; ++c) {
        const int d = lane + 32 * c;
        if (d < hd) {
          float a = acc[r][c] * alpha;
          for (int jj = 0; jj < jn; ++jj) a += Ps[qr * kTile + jj] * Vs[jj * P + d];
          acc[r][c] = a;
        }
      }
    }
  }

#pragma unroll
  for (int r = 0; r < kRowsPerWarp; ++r) {
    const int i = q0 + warp * kRowsPerWarp + r;
    if (i >= S) continue;
    const float inv_l = 1.f / l[r];
    float* o = out + hv.out_head + static_cast<size_t>(i) * OW;
#pragma unroll
    for (int c = 0; c < C; ++c) {
      const int d = lane + 32 * c;
      if (d < hd) o[d] = acc[r][c] * inv_l;
    }
    if (lane == 0) lse[static_cast<size_t>(bh) * S + i] = m[r] + logf(l[r]);
  }
}

// D[bh*S + i] = <dout_i, out_i> over the head's hd columns; one warp per row.
__global__ void __launch_bounds__(kThreads)
    attention_rowdot_kernel(float* __restrict__ Dv, const float* __restrict__ dout,
                            const float* __restrict__ out, int B, int S, int H, int hd) {
  const int64_t row = static_cast<int64_t>(blockIdx.x) * kWarps + threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  if (row >= static_cast<int64_t>(B) * H * S) return;  // warp-uniform
  const int i = static_cast<int>(row % S);
  const int h = static_cast<int>(row / S % H);
  const int b = static_cast<int>(row / (static_cast<int64_t>(S) * H));
  const size_t o = (static_cast<size_t>(b) * S + i) * H * hd + static_cast<size_t>(h) * hd;
  float acc = 0.f;
  for (int d = lane; d < hd; d += 32) acc += dout[o + d] * out[o + d];
  acc = warp_sum(acc);
  if (lane == 0) Dv[row] = acc;
}

template <int HDMAX>
__global__ void __launch_bounds__(kThreads)
    attention_dq_kernel(float* __restrict__ dqkv, const float* __restrict__ dout,
                        const float* __restrict__ lse, const float* __restrict__ Dv,
                        const float* __restrict__ qkv, int S, int H, int hd, float scale) {
  constexpr int P = Smem<HDMAX>::P;
  constexpr int C = HDMAX / 32;
  extern __shared__ float smem[];
  float* Qs = smem;
  float* dOs = Qs + Smem<HDMAX>::tile;
  float* Ks = dOs + Smem<HDMAX>::tile;
  float* Vs = Ks + Smem<HDMAX>::tile;
  float* DSs = Vs + Smem<HDMAX>::tile;  // [kTile rows][kTile keys]

  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  const int q0 = blockIdx.x * kTile;
  const HeadView hv(S, H, hd);
  const int bh = hv.bh;
  const size_t W = hv.W, OW = hv.OW;
  const float* base = qkv + hv.qkv_head;

  load_tile<P>(Qs, base, W, q0, S, hd);
  load_tile<P>(dOs, dout + hv.out_head, OW, q0, S, hd);

  float lse_r[kRowsPerWarp], D_r[kRowsPerWarp], acc[kRowsPerWarp][C];
#pragma unroll
  for (int r = 0; r < kRowsPerWarp; ++r) {
    const int i = q0 + warp * kRowsPerWarp + r;
    lse_r[r] = i < S ? lse[static_cast<size_t>(bh) * S + i] : 0.f;
    D_r[r] = i < S ? Dv[static_cast<size_t>(bh) * S + i] : 0.f;
#pragma unroll
    for (int c = 0; c < C; ++c) acc[r][c] = 0.f;
  }

  const int q_last = min(S, q0 + kTile) - 1;
  for (int k0 = 0; k0 <= q_last; k0 += kTile) {
    __syncthreads();
    load_tile<P>(Ks, base + OW, W, k0, S, hd);
    load_tile<P>(Vs, base + 2 * OW, W, k0, S, hd);
    __syncthreads();
    const int j = k0 + lane;
#pragma unroll
    for (int r = 0; r < kRowsPerWarp; ++r) {
      const int qr = warp * kRowsPerWarp + r;
      const int i = q0 + qr;
      if (i >= S) continue;  // warp-uniform
      float ds = 0.f;
      if (j <= i) {
        float qk = 0.f, dp = 0.f;
        for (int d = 0; d < hd; ++d) {
          qk += Qs[qr * P + d] * Ks[lane * P + d];
          dp += dOs[qr * P + d] * Vs[lane * P + d];
        }
        const float p = expf(qk * scale - lse_r[r]);
        ds = p * (dp - D_r[r]);
      }
      DSs[qr * kTile + lane] = ds;
      __syncwarp();
      const int jn = min(kTile, i - k0 + 1);
#pragma unroll
      for (int c = 0; c < C; ++c) {
        const int d = lane + 32 * c;
        if (d < hd) {
          float a = acc[r][c];
          for (int jj = 0; jj < jn; ++jj) a += DSs[qr * kTile + jj] * Ks[jj * P + d];
          acc[r][c] = a;
        }
      }
    }
  }

#pragma unroll
  for (int r = 0; r < kRowsPerWarp; ++r) {
    const int i = q0 + warp * kRowsPerWarp + r;
    if (i >= S) continue;
    float* dq = dqkv + hv.qkv_head + static_cast<size_t>(i) * W;
#pragma unroll
    for (int c = 0; c < C; ++c) {
      const int d = lane + 32 * c;
      if (d < hd) dq[d] = acc[r][c] * scale;
    }
  }
}

template <int HDMAX>
__global__ void __launch_bounds__(kThreads)
    attention_dkdv_kernel(float* __restrict__ dqkv, const float* __restrict__ dout,
                          const float* __restrict__ lse, const float* __restrict__ Dv,
                          const float* __restrict__ qkv, int S, int H, int hd, float scale) {
  constexpr int P = Smem<HDMAX>::P;
  constexpr int C = HDMAX / 32;
  extern __shared__ float smem[];
  float* Ks = smem;                      // this block's keys
  float* Vs = Ks + Smem<HDMAX>::tile;
  float* Qs = Vs + Smem<HDMAX>::tile;    // current query tile
  float* dOs = Qs + Smem<HDMAX>::tile;
  float* Pss = dOs + Smem<HDMAX>::tile;  // [kTile keys][kTile queries]
  float* DSs = Pss + kTile * kTile;
  float* Ls = DSs + kTile * kTile;       // lse of the query tile
  float* Ds = Ls + kTile;                // D of the query tile

  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  const int k0 = blockIdx.x * kTile;
  const HeadView hv(S, H, hd);
  const int bh = hv.bh;
  const size_t W = hv.W, OW = hv.OW;
  const float* base = qkv + hv.qkv_head;
  const float* dbase = dout + hv.out_head;

  load_tile<P>(Ks, base + OW, W, k0, S, hd);
  load_tile<P>(Vs, base + 2 * OW, W, k0, S, hd);

  float dk[kRowsPerWarp][C], dv[kRowsPerWarp][C];
#pragma unroll
  for (int r = 0; r < kRowsPerWarp; ++r)
#pragma unroll
    for (int c = 0; c < C; ++c) dk[r][c] = dv[r][c] = 0.f;

  for (int q0 = k0; q0 < S; q0 += kTile) {
    __syncthreads();
    load_tile<P>(Qs, base, W, q0, S, hd);
    load_tile<P>(dOs, dbase, OW, q0, S, hd);
    if (threadIdx.x < kTile) {
      const int i = q0 + threadIdx.x;
      Ls[threadIdx.x] = i < S ? lse[static_cast<size_t>(bh) * S + i] : 0.f;
      Ds[threadIdx.x] = i < S ? Dv[static_cast<size_t>(bh) * S + i] : 0.f;
    }
    __syncthreads();
    const int i = q0 + lane;
    const int i_end = min(S, q0 + kTile);  // queries [q0, i_end) exist
#pragma unroll
    for (int r = 0; r < kRowsPerWarp; ++r) {
      const int kr = warp * kRowsPerWarp + r;
      const int j = k0 + kr;
      if (j >= S) continue;  // warp-uniform
      float p = 0.f, ds = 0.f;
      if (i >= j && i < S) {
        float qk = 0.f, dp = 0.f;
        for (int d = 0; d < hd; ++d) {
          qk += Qs[lane * P + d] * Ks[kr * P + d];
          dp += dOs[lane * P + d] * Vs[kr * P + d];
        }
        p = expf(qk * scale - Ls[lane]);
        ds = p * (dp - Ds[lane]);
      }
      Pss[kr * kTile + lane] = p;
      DSs[kr * kTile + lane] = ds;
      __syncwarp();
      const int ii0 = max(0, j - q0);  // first visible query of this tile
      const int ii1 = i_end - q0;
#pragma unroll
      for (int c = 0; c < C; ++c) {
        const int d = lane + 32 * c;
        if (d < hd) {
          float a = dk[r][c], v = dv[r][c];
          for (int ii = ii0; ii < ii1; ++ii) {
            a += DSs[kr * kTile + ii] * Qs[ii * P + d];
            v += Pss[kr * kTile + ii] * dOs[ii * P + d];
          }
          dk[r][c] = a;
          dv[r][c] = v;
        }
      }
    }
  }

#pragma unroll
  for (int r = 0; r < kRowsPerWarp; ++r) {
    const int j = k0 + warp * kRowsPerWarp + r;
    if (j >= S) continue;
    float* dkp = dqkv + hv.qkv_head + static_cast<size_t>(j) * W + OW;
    float* dvp = dkp + OW;
#pragma unroll
    for (int c = 0; c < C; ++c) {
      const int d = lane + 32 * c;
      if (d < hd) {
        dkp[d] = dk[r][c] * scale;
        dvp[d] = dv[r][c];
      }
    }
  }
}

// Launches kernel with `floats` of dynamic shared memory (opting in above 48 KiB).
template <typename Kernel, typename... Args>
void launch(Kernel kernel, dim3 grid, int floats, cudaStream_t stream, Args... args) {
  const size_t bytes = sizeof(float) * static_cast<size_t>(floats);
  MOE_CUDA_CHECK(
      cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                           static_cast<int>(bytes)));
  kernel<<<grid, kThreads, bytes, stream>>>(args...);
  MOE_CUDA_CHECK(cudaGetLastError());
}

template <int HDMAX>
void forward_impl(float* out, float* lse, const float* qkv, int B, int S, int H, int hd,
                  float scale, cudaStream_t stream) {
  const dim3 grid((S + kTile - 1) / kTile, B * H);
  launch(attention_forward_kernel<HDMAX>, grid, Smem<HDMAX>::fwd_floats, stream, out, lse, qkv,
         S, H, hd, scale);
}

template <int HDMAX>
void backward_impl(float* dqkv, const float* dout, const float* lse, const float* Dv,
                   const float* qkv, int B, int S, int H, int hd, float scale,
                   cudaStream_t stream) {
  const dim3 grid((S + kTile - 1) / kTile, B * H);
  launch(attention_dq_kernel<HDMAX>, grid, Smem<HDMAX>::dq_floats, stream, dqkv, dout, lse, Dv,
         qkv, S, H, hd, scale);
  launch(attention_dkdv_kernel<HDMAX>, grid, Smem<HDMAX>::dkdv_floats, stream, dqkv, dout, lse,
         Dv, qkv, S, H, hd, scale);
}

void check_shape(const char* op, int B, int S, int H, int hd) {
  MOE_CHECK(B >= 0 && S >= 0 && H > 0 && hd > 0 && hd <= kMaxHeadDim,
            std::string(op) + ": bad shape B=" + std::to_string(B) + " S=" + std::to_string(S) +
                " H=" + std::to_string(H) + " hd=" + std::to_string(hd) + " (hd <= " +
                std::to_string(kMaxHeadDim) + ")");
  MOE_CHECK(static_cast<int64_t>(B) * H <= 65535, std::string(op) + ": B*H above 65535");
}

float attention_scale(int hd) {
  return static_cast<float>(1.0 / std::sqrt(static_cast<double>(hd)));
}

}  // namespace

void attention_forward(float* out, float* lse, const float* qkv, int B, int S, int H, int hd,
                       cudaStream_t stream) {
  check_shape("attention_forward", B, S, H, hd);
  if (B == 0 || S == 0) return;
  MOE_CHECK(out && lse && qkv, "attention_forward: null pointer");
  const float scale = attention_scale(hd);
  if (hd <= 32)
    forward_impl<32>(out, lse, qkv, B, S, H, hd, scale, stream);
  else if (hd <= 64)
    forward_impl<64>(out, lse, qkv, B, S, H, hd, scale, stream);
  else
    forward_impl<128>(out, lse, qkv, B, S, H, hd, scale, stream);
}

size_t attention_backward_workspace_bytes(int B, int S, int H) {
  if (B <= 0 || S <= 0 || H <= 0) return 0;
  return static_cast<size_t>(B) * H * S * sizeof(float);
}

void attention_backward(float* dqkv, const float* dout, const float* out, const float* lse,
                        const float* qkv, int B, int S, int H, int hd, void* workspace,
                        size_t workspace_bytes, cudaStream_t stream) {
  check_shape("attention_backward", B, S, H, hd);
  if (B == 0 || S == 0) return;
  MOE_CHECK(dqkv && dout && out && lse && qkv, "attention_backward: null pointer");
  const size_t need = attention_backward_workspace_bytes(B, S, H);
  MOE_CHECK(workspace && workspace_bytes >= need,
            "attention_backward: workspace of " + std::to_string(workspace_bytes) +
                " bytes, needs " + std::to_string(need));
  auto* Dv = static_cast<float*>(workspace);
  const int64_t rows = static_cast<int64_t>(B) * H * S;
  attention_rowdot_kernel<<<static_cast<unsigned>((rows + kWarps - 1) / kWarps), kThreads, 0,
                            stream>>>(Dv, dout, out, B, S, H, hd);
  MOE_CUDA_CHECK(cudaGetLastError());
  const float scale = attention_scale(hd);
  if (hd <= 32)
    backward_impl<32>(dqkv, dout, lse, Dv, qkv, B, S, H, hd, scale, stream);
  else if (hd <= 64)
    backward_impl<64>(dqkv, dout, lse, Dv, qkv, B, S, H, hd, scale, stream);
  else
    backward_impl<128>(dqkv, dout, lse, Dv, qkv, B, S, H, hd, scale, stream);
}


// RoPE, on the q and k parts of the same fused qkv rows attention reads.
namespace {

constexpr int kRopeThreads = 256;

// ------------------------------------------------------------------- RoPE --

// One thread per (row n, pair i < hd/2). Its angle (n % S) * theta^(-2i/hd),
// cos and sin are computed once in fp64 and applied to the pair in each of the
// 2H q and k heads of the row; the rotation itself is also done in fp64 and
// rounded to fp32 once, as on the CPU. fp64 matters: in fp32 an angle of a
// few thousand radians already carries an absolute error of ~1e-4.
// Consecutive threads take consecutive i, so each head's loads coalesce.
template <typename A>
__global__ void __launch_bounds__(kRopeThreads)
    rope_kernel(A* qkv, size_t total, int S, int H, int hd, double theta, double dir) {
  const int half = hd / 2;
  const size_t W = static_cast<size_t>(3) * H * hd;
  for (size_t t = (static_cast<size_t>(blockIdx.x) * blockDim.x + threadIdx.x); t < total; t += (static_cast<size_t>(gridDim.x) * blockDim.x)) {
    const size_t n = t / half;
    const int i = static_cast<int>(t % half);
    const double inv_freq = pow(theta, -2.0 * i / hd);
    const double angle = static_cast<double>(n % S) * inv_freq;
    double sn, cs;
    sincos(angle, &sn, &cs);
    sn *= dir;
    A* row = qkv + n * W;
    for (int h = 0; h < 2 * H; ++h) {  // q heads then k heads: the first 2*H*hd columns
      A* x = row + static_cast<size_t>(h) * hd;
      const double a = to_f32(x[i]), b = to_f32(x[i + half]);
      store(&x[i], static_cast<float>(a * cs - b * sn));
      store(&x[i + half], static_cast<float>(b * cs + a * sn));
    }
  }
}

template <typename A>
void rope_launch(const char* what, A* qkv, int B, int S, int H, int hd, double theta,
                 double dir, cudaStream_t stream) {
  MOE_CHECK(B >= 0 && S > 0 && H > 0 && hd > 0 && hd % 2 == 0,
            std::string(what) + ": bad shape B=" + std::to_string(B) + " S=" +
                std::to_string(S) + " H=" + std::to_string(H) + " hd=" + std::to_string(hd) +
                " (hd must be even)");
  MOE_CHECK(theta > 0.0, std::string(what) + ": theta must be positive");
  const size_t total = static_cast<size_t>(B) * S * (hd / 2);
  if (total == 0) return;
  MOE_CHECK(qkv, std::string(what) + ": null pointer");
  rope_kernel<<<grid_for(total, kRopeThreads), kRopeThreads, 0, stream>>>(
      qkv, total, S, H, hd, theta, dir);
  MOE_CUDA_CHECK(cudaGetLastError());
}

}  // namespace

template <typename A>
void rope_forward(A* qkv, int B, int S, int H, int hd, double theta, cudaStream_t stream) {
  rope_launch("rope_forward", qkv, B, S, H, hd, theta, 1.0, stream);
}

template <typename A>
void rope_backward(A* dqkv, int B, int S, int H, int hd, double theta, cudaStream_t stream) {
  rope_launch("rope_backward", dqkv, B, S, H, hd, theta, -1.0, stream);
}

#define INSTANTIATE(A)                                                          \
  template void rope_forward<A>(A*, int, int, int, int, double, cudaStream_t); \
  template void rope_backward<A>(A*, int, int, int, int, double, cudaStream_t);
MOE_FOR_ACTIVATIONS(INSTANTIATE)
#undef INSTANTIATE

}  // namespace moe::kernels
