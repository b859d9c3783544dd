// Elementwise ops, the twins of kernels/elementwise.cu: add / scale (fp32 or
// fp64 parameters and gradients), the token embedding forward and backward,
// and the SwiGLU activation h = silu(a1) * a3 over a13 = [a1 | a3] as [N, 2F].
#include <cmath>

#include "backend/cpu/cpu_backend.h"

namespace moe::cpu {

template <typename T, typename A>
void CpuBackend<T, A>::add_inplace(T* y, const T* x, size_t n) {
#pragma omp parallel for num_threads(nt_) schedule(static)
  for (size_t i = 0; i < n; i++) y[i] += x[i];
}

template <typename T, typename A>
void CpuBackend<T, A>::scale_inplace(T* x, double a, size_t n) {
  const T s = static_cast<T>(a);
#pragma omp parallel for num_threads(nt_) schedule(static)
  for (size_t i = 0; i < n; i++) x[i] *= s;
}

template <typename T, typename A>
void CpuBackend<T, A>::embedding_forward(T* y, const T* table, const int32_t* tokens, int N,
                                         int D) {
#pragma omp parallel for num_threads(nt_) schedule(static)
  for (int n = 0; n < N; n++) {
    const T* src = table + static_cast<size_t>(tokens[n]) * D;
    T* dst = y + static_cast<size_t>(n) * D;
    for (int d = 0; d < D; d++) dst[d] = src[d];
  }
}

// Parallel over column blocks of D, tokens in order inside: repeated tokens
// never race and every entry sums its rows in the same order.
template <typename T, typename A>
void CpuBackend<T, A>::embedding_backward(T* dtable, const T* dy, const int32_t* tokens, int N,
                                          int D) {
  const int blocks = (D + kColBlock - 1) / kColBlock;
#pragma omp parallel for num_threads(nt_) schedule(static)
  for (int blk = 0; blk < blocks; blk++) {
    const int d0 = blk * kColBlock, d1 = d0 + kColBlock < D ? d0 + kColBlock : D;
    for (int n = 0; n < N; n++) {
      T* dst = dtable + static_cast<size_t>(tokens[n]) * D;
      const T* src = dy + static_cast<size_t>(n) * D;
      for (int d = d0; d < d1; d++) dst[d] += src[d];
    }
  }
}

template <typename C>
static C sigmoid(C a) {
  return C(1) / (C(1) + std::exp(-a));  // exp overflow gives 1/inf = 0, never NaN
}

template <typename T, typename A>
void CpuBackend<T, A>::swiglu_forward(A* h, const A* a13, int N, int F) {
  using C = compute_t<A>;
#pragma omp parallel for num_threads(nt_) schedule(static)
  for (int n = 0; n < N; n++) {
    const A* a1 = a13 + static_cast<size_t>(n) * 2 * F;
    const A* a3 = a1 + F;
    A* hr = h + static_cast<size_t>(n) * F;
    for (int j = 0; j < F; j++) {
      const C x = a1[j];
      hr[j] = x * sigmoid(x) * C(a3[j]);
    }
  }
}

// d silu(a)/da = sig(a) (1 + a (1 - sig(a))). da13 is overwritten.
template <typename T, typename A>
void CpuBackend<T, A>::swiglu_backward(A* da13, const A* dh, const A* a13, int N, int F) {
  using C = compute_t<A>;
#pragma omp parallel for num_threads(nt_) schedule(static)
  for (int n = 0; n < N; n++) {
    const A* a1 = a13 + static_cast<size_t>(n) * 2 * F;
    const A* a3 = a1 + F;
    const A* g = dh + static_cast<size_t>(n) * F;
    A* d1 = da13 + static_cast<size_t>(n) * 2 * F;
    A* d3 = d1 + F;
    for (int j = 0; j < F; j++) {
      const C x = a1[j], y = a3[j], gj = g[j];
      const C s = sigmoid(x);
      const C silu = x * s;
      d1[j] = gj * y * s * (C(1) + x * (C(1) - s));
      d3[j] = gj * silu;
    }
  }
}

MOE_OPS_ELEMENTWISE(MOE_CPU_INSTANTIATE)

}  // namespace moe::cpu
