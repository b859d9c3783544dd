// Deterministic fp64 reductions (sum, sum of squares), the cross-entropy loss
// and the AdamW update: the twins of kernels/loss_optim.cu.
#include <cmath>
#include <vector>

#include "backend/cpu/cpu_backend.h"
#include "core/error.h"

namespace moe::cpu {

// Sums f(x[i]) in double: fixed chunks in parallel, then the partials in order.
template <typename T, typename F>
static double chunked_sum(int nt, const T* x, size_t n, F f) {
  size_t chunks = (n + kReduceChunk - 1) / kReduceChunk;
  std::vector<double> part(chunks, 0.0);
#pragma omp parallel for num_threads(nt) schedule(static)
  for (size_t c = 0; c < chunks; c++) {
    size_t lo = c * kReduceChunk, hi = lo + kReduceChunk < n ? lo + kReduceChunk : n;
    double acc = 0.0;
    for (size_t i = lo; i < hi; i++) acc += f(static_cast<double>(x[i]));
    part[c] = acc;
  }
  double total = 0.0;
  for (double p : part) total += p;
  return total;
}

template <typename T, typename A>
double CpuBackend<T, A>::sum(const T* x, size_t n) {
  return chunked_sum(nt_, x, n, [](double v) { return v; });
}

template <typename T, typename A>
double CpuBackend<T, A>::sum_squares(const T* x, size_t n) {
  return chunked_sum(nt_, x, n, [](double v) { return v * v; });
}

namespace {

// Partial maxima and sums per lane, combined in lane order: the loops
// vectorize and the order stays fixed.
constexpr int kLanes = 8;

template <typename C, typename A>
C row_max(const A* x, int V) {
  C m[kLanes];
  for (int l = 0; l < kLanes; l++) m[l] = x[0];
  int j = 0;
  for (; j + kLanes <= V; j += kLanes)
    for (int l = 0; l < kLanes; l++) m[l] = C(x[j + l]) > m[l] ? C(x[j + l]) : m[l];
  for (; j < V; j++) m[0] = C(x[j]) > m[0] ? C(x[j]) : m[0];
  for (int l = 1; l < kLanes; l++) m[0] = m[l] > m[0] ? m[l] : m[0];
  return m[0];
}

template <typename C>
double row_sum(const C* e, int V) {
  double z[kLanes] = {};
  int j = 0;
  for (; j + kLanes <= V; j += kLanes)
    for (int l = 0; l < kLanes; l++) z[l] += e[j + l];
  for (; j < V; j++) z[0] += e[j];
  double r = 0.0;
  for (int l = 0; l < kLanes; l++) r += z[l];
  return r;
}

}  // namespace

// Per row: e_j = exp(x_j - m) in the compute type (float for fp32 and bf16)
// into a per-thread buffer, z = sum e_j and lse = m + log z in double (the
// loss of a confident prediction is log(1 + tiny)), loss = lse - x[target];
// then dlogits = grad_scale (e_j / z - onehot), one exp per logit. dlogits
// may alias logits: the loss is taken before the row is overwritten and each
// entry is read before it is written.
template <typename T, typename A>
void CpuBackend<T, A>::cross_entropy(T* losses, A* dlogits, const A* logits, const int32_t* targets,
                                     int N, int V, double grad_scale) {
  using C = compute_t<A>;
  for (int n = 0; n < N; n++)
    MOE_CHECK(targets[n] >= 0 && targets[n] < V, "cross_entropy: target out of range");
#pragma omp parallel num_threads(nt_)
  {
    thread_local std::vector<C> buf;
    if (buf.size() < static_cast<size_t>(V)) buf.resize(V);
    C* e = buf.data();
#pragma omp for schedule(static)
    for (int n = 0; n < N; n++) {
      const A* x = logits + static_cast<size_t>(n) * V;
      const C m = row_max<C>(x, V);
      for (int j = 0; j < V; j++) e[j] = std::exp(C(x[j]) - m);
      const double z = row_sum(e, V);
      const int tgt = targets[n];
      losses[n] = static_cast<T>(double(m) + std::log(z) - double(x[tgt]));
      if (!dlogits) continue;
      A* d = dlogits + static_cast<size_t>(n) * V;
      const double g = grad_scale / z;
      for (int j = 0; j < V; j++) d[j] = static_cast<A>(g * e[j]);
      d[tgt] = static_cast<A>(grad_scale * (double(e[tgt]) / z - 1.0));
    }
  }
}

// PyTorch AdamW: p *= 1 - lr*wd (decoupled, on the pre-update parameter;
// elements [0, decay_count) only), then the bias-corrected Adam step. Math in
// double.
template <typename T, typename A>
void CpuBackend<T, A>::adamw_step(T* params, const T* grads, T* m, T* v, size_t n,
                                  const AdamWParams& p) {
  const double decay = 1.0 - p.lr * p.weight_decay;
  const double bc1 = 1.0 - std::pow(p.beta1, static_cast<double>(p.step));
  const double bc2 = 1.0 - std::pow(p.beta2, static_cast<double>(p.step));
#pragma omp parallel for num_threads(nt_) schedule(static)
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

MOE_OPS_LOSS_OPTIM(MOE_CPU_INSTANTIATE)

}  // namespace moe::cpu
