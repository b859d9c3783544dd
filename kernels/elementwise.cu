// Elementwise kernels: add / scale, token embedding forward and backward,
// SwiGLU forward and backward (RoPE is with attention, kernels/attention.cu).
//
// Embedding rows and the add/scale ops are fp32 (the residual stream and
// parameters); SwiGLU runs on activations, A = float or bf16
// (kernels/elem.cuh), in fp32. Every kernel is deterministic: nothing here sums in a
// scheduling-dependent order and there are no float atomics (see
// embedding_backward for the one scatter-add).
#include <string>

#include "core/error.h"
#include "cuda_check.h"
#include "elem.cuh"
#include "elementwise.h"

namespace moe::kernels {
namespace {

constexpr int kThreads = 256;         // per block, every kernel here
__device__ __forceinline__ size_t global_tid() {
  return static_cast<size_t>(blockIdx.x) * blockDim.x + threadIdx.x;
}
__device__ __forceinline__ size_t grid_stride() {
  return static_cast<size_t>(gridDim.x) * blockDim.x;
}

// ------------------------------------------------------------ add / scale --

__global__ void __launch_bounds__(kThreads)
    add_inplace_kernel(float* __restrict__ y, const float* __restrict__ x, size_t n) {
  for (size_t i = global_tid(); i < n; i += grid_stride()) y[i] += x[i];
}

__global__ void __launch_bounds__(kThreads) scale_inplace_kernel(float* x, float s, size_t n) {
  for (size_t i = global_tid(); i < n; i += grid_stride()) x[i] *= s;
}

// -------------------------------------------------------------- embedding --

__global__ void __launch_bounds__(kThreads)
    embedding_forward_kernel(float* __restrict__ y, const float* __restrict__ table,
                             const int32_t* __restrict__ tokens, size_t total, int D) {
  for (size_t i = global_tid(); i < total; i += grid_stride()) {
    const size_t n = i / D, d = i % D;
    y[i] = table[static_cast<size_t>(tokens[n]) * D + d];
  }
}

// Deterministic scatter-add without atomics or a sort. The grid is
// (column tiles of kThreads columns) x (kTokenClasses token classes). Block
// (cx, c) owns the entries dtable[v, cx*kThreads .. +kThreads) of every token
// value v with v % kTokenClasses == c: no other block ever writes them, so
// there is no race. The block scans all N tokens in order (a tile at a time
// through shared memory) and thread j adds dy[n, j] for each owned token, so
// every entry is summed in token order: exactly the CPU backend's order, hence
// the same bits, on every run and every device. Cost: each block reads the
// whole token array (N ints, tiny and L2-resident) and its share of dy.
constexpr int kTokenClasses = 64;

__global__ void __launch_bounds__(kThreads)
    embedding_backward_kernel(float* __restrict__ dtable, const float* __restrict__ dy,
                              const int32_t* __restrict__ tokens, int N, int D) {
  __shared__ int32_t tile[kThreads];
  const int j = blockIdx.x * kThreads + threadIdx.x;
  const unsigned cls = blockIdx.y;
  for (int n0 = 0; n0 < N; n0 += kThreads) {
    const int len = min(kThreads, N - n0);
    if (threadIdx.x < len) tile[threadIdx.x] = tokens[n0 + threadIdx.x];
    __syncthreads();
    if (j < D) {
      for (int t = 0; t < len; ++t) {
        const int32_t tok = tile[t];
        if (static_cast<unsigned>(tok) % kTokenClasses != cls) continue;
        dtable[static_cast<size_t>(tok) * D + j] += dy[static_cast<size_t>(n0 + t) * D + j];
      }
    }
    __syncthreads();  // the tile is overwritten next
  }
}

// ----------------------------------------------------------------- SwiGLU --

__device__ __forceinline__ float sigmoidf(float a) {
  return 1.f / (1.f + expf(-a));  // expf overflow gives 1/inf = 0, never NaN
}

template <typename A>
__global__ void __launch_bounds__(kThreads)
    swiglu_forward_kernel(A* __restrict__ h, const A* __restrict__ a13, size_t total, int F) {
  for (size_t i = global_tid(); i < total; i += grid_stride()) {
    const size_t n = i / F, j = i % F;
    const float a1 = to_f32(a13[n * 2 * F + j]), a3 = to_f32(a13[n * 2 * F + F + j]);
    store(&h[i], a1 * sigmoidf(a1) * a3);
  }
}

// d silu(a)/da = sig(a) (1 + a (1 - sig(a))).
template <typename A>
__global__ void __launch_bounds__(kThreads)
    swiglu_backward_kernel(A* __restrict__ da13, const A* __restrict__ dh,
                           const A* __restrict__ a13, size_t total, int F) {
  for (size_t i = global_tid(); i < total; i += grid_stride()) {
    const size_t n = i / F, j = i % F;
    const size_t i1 = n * 2 * F + j, i3 = i1 + F;
    const float a1 = to_f32(a13[i1]), a3 = to_f32(a13[i3]), g = to_f32(dh[i]);
    const float s = sigmoidf(a1);
    const float silu = a1 * s;
    store(&da13[i1], g * a3 * s * (1.f + a1 * (1.f - s)));
    store(&da13[i3], g * silu);
  }
}

void check_launch() { MOE_CUDA_CHECK(cudaGetLastError()); }

}  // namespace

void add_inplace(float* y, const float* x, size_t n, cudaStream_t stream) {
  if (n == 0) return;
  MOE_CHECK(y && x, "add_inplace: null pointer");
  add_inplace_kernel<<<grid_for(n, kThreads), kThreads, 0, stream>>>(y, x, n);
  check_launch();
}

void scale_inplace(float* x, double a, size_t n, cudaStream_t stream) {
  if (n == 0) return;
  MOE_CHECK(x, "scale_inplace: null pointer");
  scale_inplace_kernel<<<grid_for(n, kThreads), kThreads, 0, stream>>>(x, static_cast<float>(a), n);
  check_launch();
}

void embedding_forward(float* y, const float* table, const int32_t* tokens, int N, int D,
                       cudaStream_t stream) {
  MOE_CHECK(N >= 0 && D > 0, "embedding_forward: bad shape N=" + std::to_string(N) +
                                 " D=" + std::to_string(D));
  if (N == 0) return;
  MOE_CHECK(y && table && tokens, "embedding_forward: null pointer");
  const size_t total = static_cast<size_t>(N) * D;
  embedding_forward_kernel<<<grid_for(total, kThreads), kThreads, 0, stream>>>(
      y, table, tokens, total, D);
  check_launch();
}

void embedding_backward(float* dtable, const float* dy, const int32_t* tokens, int N, int D,
                        cudaStream_t stream) {
  MOE_CHECK(N >= 0 && D > 0, "embedding_backward: bad shape N=" + std::to_string(N) +
                                 " D=" + std::to_string(D));
  if (N == 0) return;
  MOE_CHECK(dtable && dy && tokens, "embedding_backward: null pointer");
  const dim3 grid((D + kThreads - 1) / kThreads, kTokenClasses);
  embedding_backward_kernel<<<grid, kThreads, 0, stream>>>(dtable, dy, tokens, N, D);
  check_launch();
}

template <typename A>
void swiglu_forward(A* h, const A* a13, int N, int F, cudaStream_t stream) {
  MOE_CHECK(N >= 0 && F > 0, "swiglu_forward: bad shape N=" + std::to_string(N) +
                                 " F=" + std::to_string(F));
  if (N == 0) return;
  MOE_CHECK(h && a13, "swiglu_forward: null pointer");
  const size_t total = static_cast<size_t>(N) * F;
  swiglu_forward_kernel<<<grid_for(total, kThreads), kThreads, 0, stream>>>(h, a13, total, F);
  check_launch();
}

template <typename A>
void swiglu_backward(A* da13, const A* dh, const A* a13, int N, int F, cudaStream_t stream) {
  MOE_CHECK(N >= 0 && F > 0, "swiglu_backward: bad shape N=" + std::to_string(N) +
                                 " F=" + std::to_string(F));
  if (N == 0) return;
  MOE_CHECK(da13 && dh && a13, "swiglu_backward: null pointer");
  const size_t total = static_cast<size_t>(N) * F;
  swiglu_backward_kernel<<<grid_for(total, kThreads), kThreads, 0, stream>>>(
      da13, dh, a13, total, F);
  check_launch();
}

#define INSTANTIATE(A)                                                                         \
  template void swiglu_forward<A>(A*, const A*, int, int, cudaStream_t);                      \
  template void swiglu_backward<A>(A*, const A*, const A*, int, int, cudaStream_t);
MOE_FOR_ACTIVATIONS(INSTANTIATE)
#undef INSTANTIATE

}  // namespace moe::kernels
