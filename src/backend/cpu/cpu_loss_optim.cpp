// Cross-entropy loss and the AdamW update.
#include <cmath>

#include "backend/cpu/cpu_ops.h"
#include "core/error.h"

namespace moe::cpu {

// Per row: lse by max-subtracted log-sum-exp (double), loss = lse - x[target];
// then dlogits = grad_scale (softmax - onehot). dlogits may alias logits:
// the loss is taken before the row is overwritten and each entry is read
// before it is written.
template <typename T, typename A>
void cross_entropy(int nt, T* losses, A* dlogits, const A* logits, const int32_t* targets, int N,
                   int V, double grad_scale) {
  for (int n = 0; n < N; n++)
    MOE_CHECK(targets[n] >= 0 && targets[n] < V, "cross_entropy: target out of range");
#pragma omp parallel for num_threads(nt) schedule(static)
  for (int n = 0; n < N; n++) {
    const A* x = logits + static_cast<size_t>(n) * V;
    double m = x[0];
    for (int j = 1; j < V; j++) m = double(x[j]) > m ? static_cast<double>(x[j]) : m;
    double z = 0.0;
    for (int j = 0; j < V; j++) z += std::exp(double(x[j]) - m);
    const double lse = m + std::log(z);
    const int tgt = targets[n];
    losses[n] = static_cast<T>(lse - double(x[tgt]));
    if (!dlogits) continue;
    A* d = dlogits + static_cast<size_t>(n) * V;
    for (int j = 0; j < V; j++) {
      const double p = std::exp(double(x[j]) - lse);
      d[j] = static_cast<A>(grad_scale * (j == tgt ? p - 1.0 : p));
    }
  }
}

// PyTorch AdamW: p *= 1 - lr*wd (decoupled, on the pre-update parameter;
// elements [0, decay_count) only), then the bias-corrected Adam step. Math in
// double.
template <typename T>
void adamw_step(int nt, T* params, const T* grads, T* m, T* v, size_t n, const AdamWParams& p) {
  const double decay = 1.0 - p.lr * p.weight_decay;
  const double bc1 = 1.0 - std::pow(p.beta1, static_cast<double>(p.step));
  const double bc2 = 1.0 - std::pow(p.beta2, static_cast<double>(p.step));
#pragma omp parallel for num_threads(nt) schedule(static)
  for (size_t i = 0; i < n; i++) {
    const double g = static_cast<double>(grads[i]) * p.grad_scale;
    const double mi = p.beta1 * m[i] + (1.0 - p.beta1) * g;
    const double vi = p.beta2 * v[i] + (1.0 - p.beta2) * g * g;
    m[i] = static_cast<T>(mi);
    v[i] = static_cast<T>(vi);
    const double upd = (mi / bc1) / (std::sqrt(vi / bc2) + p.eps);
    params[i] = static_cast<T>(params[i] * (i < p.decay_count ? decay : 1.0) - p.lr * upd);
  }
}

template void cross_entropy<float, float>(int, float*, float*, const float*, const int32_t*, int,
                                         int, double);
template void cross_entropy<double, double>(int, double*, double*, const double*, const int32_t*,
                                            int, int, double);
template void cross_entropy<float, bf16>(int, float*, bf16*, const bf16*, const int32_t*, int, int,
                                         double);
#define INSTANTIATE(T) \
  template void adamw_step<T>(int, T*, const T*, T*, T*, size_t, const AdamWParams&);
INSTANTIATE(float)
INSTANTIATE(double)
#undef INSTANTIATE

}  // namespace moe::cpu
