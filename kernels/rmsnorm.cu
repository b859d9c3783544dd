// RMSNorm forward and backward: the residual stream x, weights and statistics
// in fp32, the norm output y and its gradient dy as activations (A = float or
// bf16, kernels/elem.cuh); all arithmetic in fp32.
//
//   forward:  r = 1 / sqrt(mean(x^2) + eps);  y = x * r * w;  rstd[n] = r
//   backward: g = dy * w
//             dx += r * (g - x * r^2 * mean(g * x))
//             dw += sum_n dy * x * r
//
// One block per row for the row statistics. dw is a reduction over rows; it is
// done in two deterministic passes (per-chunk partials, then a fixed-order sum
// of the partials) instead of float atomics, so the bits never depend on
// scheduling.
#include <algorithm>

#include "core/error.h"
#include "cuda_check.h"
#include "elem.cuh"
#include "rmsnorm.h"

namespace moe::kernels {
namespace {

constexpr int kThreads = 256;  // per block for every kernel here (a multiple of 32)
constexpr int kWarps = kThreads / 32;

// dw chunking: at most kMaxChunks partial rows, each summing at least
// kMinRowsPerChunk rows. Depends on N only, so results are the same on any GPU.
constexpr int kMaxChunks = 256;
constexpr int kMinRowsPerChunk = 32;

int rows_per_chunk(int N) { return std::max(kMinRowsPerChunk, (N + kMaxChunks - 1) / kMaxChunks); }
int num_chunks(int N) { return (N + rows_per_chunk(N) - 1) / rows_per_chunk(N); }

// The block sums: block_sum of elem.cuh (a fixed tree, so equal inputs give
// equal bits), each with its own shared-memory scratch of kWarps partials.

template <typename A>
__global__ void __launch_bounds__(kThreads)
    rmsnorm_forward_kernel(A* __restrict__ y, float* __restrict__ rstd,
                           const float* __restrict__ x, const float* __restrict__ w, int D,
                           float eps) {
  const size_t row = static_cast<size_t>(blockIdx.x) * D;
  float ss = 0.f;
  for (int j = threadIdx.x; j < D; j += kThreads) ss += x[row + j] * x[row + j];
  __shared__ float warp_sums[kWarps];
  ss = block_sum<kWarps>(ss, warp_sums);
  // 1/sqrtf rather than rsqrtf: both are IEEE-rounded, rsqrtf is not.
  const float r = 1.f / sqrtf(ss / D + eps);
  if (threadIdx.x == 0) rstd[blockIdx.x] = r;
  for (int j = threadIdx.x; j < D; j += kThreads) store(&y[row + j], x[row + j] * r * w[j]);
}

// The residual add fused with the norm: one read of resid and delta, one
// write of their sum, the statistics and y from the same registers' values.
// Each thread re-reads only the sum entries it wrote itself (no barrier needed).
template <typename A>
__global__ void __launch_bounds__(kThreads)
    residual_rmsnorm_forward_kernel(float* __restrict__ sum, A* __restrict__ y,
                                    float* __restrict__ rstd, const float* __restrict__ resid,
                                    const A* __restrict__ delta, const float* __restrict__ w,
                                    int D, float eps) {
  const size_t row = static_cast<size_t>(blockIdx.x) * D;
  float ss = 0.f;
  for (int j = threadIdx.x; j < D; j += kThreads) {
    const float v = resid[row + j] + to_f32(delta[row + j]);
    sum[row + j] = v;
    ss += v * v;
  }
  __shared__ float warp_sums[kWarps];
  ss = block_sum<kWarps>(ss, warp_sums);
  const float r = 1.f / sqrtf(ss / D + eps);
  if (threadIdx.x == 0) rstd[blockIdx.x] = r;
  for (int j = threadIdx.x; j < D; j += kThreads) store(&y[row + j], sum[row + j] * r * w[j]);
}

// dx for one row per block: needs the row's mean(g * x), hence the block sum.
// dx_act (may be null) receives the updated dx as an activation.
template <typename A>
__global__ void __launch_bounds__(kThreads)
    rmsnorm_backward_dx_kernel(float* __restrict__ dx, A* __restrict__ dx_act,
                               const A* __restrict__ dy, const float* __restrict__ x,
                               const float* __restrict__ w, const float* __restrict__ rstd, int D) {
  const size_t row = static_cast<size_t>(blockIdx.x) * D;
  float gx = 0.f;
  for (int j = threadIdx.x; j < D; j += kThreads) gx += to_f32(dy[row + j]) * w[j] * x[row + j];
  __shared__ float warp_sums[kWarps];
  gx = block_sum<kWarps>(gx, warp_sums);
  const float r = rstd[blockIdx.x];
  const float c = gx / D * r * r;  // the projection coefficient r^2 * mean(g * x)
  for (int j = threadIdx.x; j < D; j += kThreads) {
    const float v = dx[row + j] + r * (to_f32(dy[row + j]) * w[j] - x[row + j] * c);
    dx[row + j] = v;
    if (dx_act) store(&dx_act[row + j], v);
  }
}

// partial[c, j] = sum over the rows of chunk c (in row order) of dy * x * r.
// Grid (column tiles, chunks); a warp reads adjacent columns, so loads coalesce.
template <typename A>
__global__ void __launch_bounds__(kThreads)
    rmsnorm_backward_dw_partial_kernel(float* __restrict__ partial, const A* __restrict__ dy,
                                       const float* __restrict__ x,
                                       const float* __restrict__ rstd, int N, int D,
                                       int rows_per_chunk) {
  const int j = blockIdx.x * kThreads + threadIdx.x;
  if (j >= D) return;
  const int n0 = blockIdx.y * rows_per_chunk;
  const int n1 = min(N, n0 + rows_per_chunk);
  float acc = 0.f;
  for (int n = n0; n < n1; ++n) {
    const size_t i = static_cast<size_t>(n) * D + j;
    acc += to_f32(dy[i]) * x[i] * rstd[n];
  }
  partial[static_cast<size_t>(blockIdx.y) * D + j] = acc;
}

// dw[j] += sum over chunks c = 0, 1, ... (fixed order) of partial[c, j].
__global__ void __launch_bounds__(kThreads)
    rmsnorm_backward_dw_reduce_kernel(float* __restrict__ dw, const float* __restrict__ partial,
                                      int chunks, int D) {
  const int j = blockIdx.x * kThreads + threadIdx.x;
  if (j >= D) return;
  float acc = 0.f;
  for (int c = 0; c < chunks; ++c) acc += partial[static_cast<size_t>(c) * D + j];
  dw[j] += acc;
}

int column_tiles(int D) { return (D + kThreads - 1) / kThreads; }

}  // namespace

template <typename A>
void rmsnorm_forward(A* y, float* rstd, const float* x, const float* w, int N, int D, float eps,
                     cudaStream_t stream) {
  MOE_CHECK(N >= 0 && D > 0, "rmsnorm_forward: bad shape N=" + std::to_string(N) +
                                 " D=" + std::to_string(D));
  if (N == 0) return;
  MOE_CHECK(y && rstd && x && w, "rmsnorm_forward: null pointer");
  rmsnorm_forward_kernel<<<N, kThreads, 0, stream>>>(y, rstd, x, w, D, eps);
  MOE_CUDA_CHECK(cudaGetLastError());
}

template <typename A>
void residual_rmsnorm_forward(float* sum, A* y, float* rstd, const float* resid, const A* delta,
                              const float* w, int N, int D, float eps, cudaStream_t stream) {
  MOE_CHECK(N >= 0 && D > 0, "residual_rmsnorm_forward: bad shape N=" + std::to_string(N) +
                                 " D=" + std::to_string(D));
  if (N == 0) return;
  MOE_CHECK(sum && y && rstd && resid && delta && w, "residual_rmsnorm_forward: null pointer");
  residual_rmsnorm_forward_kernel<<<N, kThreads, 0, stream>>>(sum, y, rstd, resid, delta, w, D,
                                                              eps);
  MOE_CUDA_CHECK(cudaGetLastError());
}

size_t rmsnorm_backward_workspace_bytes(int N, int D) {
  if (N <= 0 || D <= 0) return 0;
  return static_cast<size_t>(num_chunks(N)) * static_cast<size_t>(D) * sizeof(float);
}

template <typename A>
void rmsnorm_backward(float* dx, A* dx_act, float* dw, const A* dy, const float* x, const float* w,
                      const float* rstd, int N, int D, void* workspace, size_t workspace_bytes,
                      cudaStream_t stream) {
  MOE_CHECK(N >= 0 && D > 0, "rmsnorm_backward: bad shape N=" + std::to_string(N) +
                                 " D=" + std::to_string(D));
  if (N == 0) return;
  MOE_CHECK(dx && dw && dy && x && w && rstd, "rmsnorm_backward: null pointer");
  const size_t need = rmsnorm_backward_workspace_bytes(N, D);
  MOE_CHECK(workspace && workspace_bytes >= need,
            "rmsnorm_backward: workspace of " + std::to_string(workspace_bytes) +
                " bytes, needs " + std::to_string(need));
  auto* partial = static_cast<float*>(workspace);

  rmsnorm_backward_dx_kernel<<<N, kThreads, 0, stream>>>(dx, dx_act, dy, x, w, rstd, D);
  MOE_CUDA_CHECK(cudaGetLastError());
  const int chunks = num_chunks(N);
  rmsnorm_backward_dw_partial_kernel<<<dim3(column_tiles(D), chunks), kThreads, 0, stream>>>(
      partial, dy, x, rstd, N, D, rows_per_chunk(N));
  MOE_CUDA_CHECK(cudaGetLastError());
  rmsnorm_backward_dw_reduce_kernel<<<column_tiles(D), kThreads, 0, stream>>>(dw, partial,
                                                                               chunks, D);
  MOE_CUDA_CHECK(cudaGetLastError());
}

#define INSTANTIATE(A)                                                                          \
  template void rmsnorm_forward<A>(A*, float*, const float*, const float*, int, int, float,     \
                                   cudaStream_t);                                               \
  template void residual_rmsnorm_forward<A>(float*, A*, float*, const float*, const A*,         \
                                            const float*, int, int, float, cudaStream_t);       \
  template void rmsnorm_backward<A>(float*, A*, float*, const A*, const float*, const float*,   \
                                    const float*, int, int, void*, size_t, cudaStream_t);
MOE_FOR_ACTIVATIONS(INSTANTIATE)
#undef INSTANTIATE

}  // namespace moe::kernels
