// SwiGLU activation: h = silu(a1) * a3 over a13 = [a1 | a3] as [N, 2F].
#include <cmath>

#include "backend/cpu/cpu_ops.h"

namespace moe::cpu {

template <typename C>
static C sigmoid(C a) {
  return C(1) / (C(1) + std::exp(-a));  // exp overflow gives 1/inf = 0, never NaN
}

template <typename A>
void swiglu_forward(int nt, A* h, const A* a13, int N, int F) {
  using C = compute_t<A>;
#pragma omp parallel for num_threads(nt) schedule(static)
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
template <typename A>
void swiglu_backward(int nt, A* da13, const A* dh, const A* a13, int N, int F) {
  using C = compute_t<A>;
#pragma omp parallel for num_threads(nt) schedule(static)
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

#define INSTANTIATE(A)                                          \
  template void swiglu_forward<A>(int, A*, const A*, int, int); \
  template void swiglu_backward<A>(int, A*, const A*, const A*, int, int);
INSTANTIATE(float)
INSTANTIATE(double)
INSTANTIATE(bf16)
#undef INSTANTIATE

}  // namespace moe::cpu
