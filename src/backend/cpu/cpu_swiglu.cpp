// SwiGLU activation: h = silu(a1) * a3 over a13 = [a1 | a3] as [N, 2F].
#include <cmath>

#include "backend/cpu/cpu_ops.h"

namespace moe::cpu {

template <typename T>
static T sigmoid(T a) {
  return T(1) / (T(1) + std::exp(-a));  // exp overflow gives 1/inf = 0, never NaN
}

template <typename T>
void swiglu_forward(int nt, T* h, const T* a13, int N, int F) {
#pragma omp parallel for num_threads(nt) schedule(static)
  for (int n = 0; n < N; n++) {
    const T* a1 = a13 + static_cast<size_t>(n) * 2 * F;
    const T* a3 = a1 + F;
    T* hr = h + static_cast<size_t>(n) * F;
    for (int j = 0; j < F; j++) hr[j] = a1[j] * sigmoid(a1[j]) * a3[j];
  }
}

// d silu(a)/da = sig(a) (1 + a (1 - sig(a))). da13 is overwritten.
template <typename T>
void swiglu_backward(int nt, T* da13, const T* dh, const T* a13, int N, int F) {
#pragma omp parallel for num_threads(nt) schedule(static)
  for (int n = 0; n < N; n++) {
    const T* a1 = a13 + static_cast<size_t>(n) * 2 * F;
    const T* a3 = a1 + F;
    const T* g = dh + static_cast<size_t>(n) * F;
    T* d1 = da13 + static_cast<size_t>(n) * 2 * F;
    T* d3 = d1 + F;
    for (int j = 0; j < F; j++) {
      const T s = sigmoid(a1[j]);
      const T silu = a1[j] * s;
      d1[j] = g[j] * a3[j] * s * (T(1) + a1[j] * (T(1) - s));
      d3[j] = g[j] * silu;
    }
  }
}

#define INSTANTIATE(T)                                          \
  template void swiglu_forward<T>(int, T*, const T*, int, int); \
  template void swiglu_backward<T>(int, T*, const T*, const T*, int, int);
INSTANTIATE(float)
INSTANTIATE(double)
#undef INSTANTIATE

}  // namespace moe::cpu
