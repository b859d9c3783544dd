// Reductions (sum, sum of squares), fused cross-entropy and the AdamW update.
//
// Deterministic throughout: block reductions are fixed shuffle trees, the
// grid-level reductions go through per-chunk partials whose chunking depends
// on n only, and nothing uses floating-point atomics.
#include <cmath>
#include <limits>
#include <string>

#include "core/error.h"
#include "cuda_check.h"
#include "elem.cuh"
#include "loss_optim.h"

namespace moe::kernels {
namespace {

constexpr int kThreads = 256;  // per block (a multiple of 32)
constexpr int kWarps = kThreads / 32;

// Reductions: each first-pass block sums a fixed chunk of kReduceChunk inputs.
constexpr size_t kReduceChunk = 8192;

size_t reduce_partials(size_t n) { return (n + kReduceChunk - 1) / kReduceChunk; }

void check_launch() { MOE_CUDA_CHECK(cudaGetLastError()); }

// The block reductions: block_reduce of elem.cuh (SumOp, MaxOp), each with
// its own shared-memory scratch of kWarps values.

// ------------------------------------------------------------- reductions --

// partial[b] = sum over chunk b (inputs [b*kReduceChunk, ...)) of f(x), in fp64.
// Thread t takes inputs t, t+kThreads, ... of the chunk, then the block tree.
template <bool kSquares>
__global__ void __launch_bounds__(kThreads)
    reduce_partial_kernel(double* __restrict__ partial, const float* __restrict__ x, size_t n) {
  const size_t lo = static_cast<size_t>(blockIdx.x) * kReduceChunk;
  const size_t hi = lo + kReduceChunk < n ? lo + kReduceChunk : n;
  double acc = 0.0;
  for (size_t i = lo + threadIdx.x; i < hi; i += kThreads) {
    const double v = x[i];
    acc += kSquares ? v * v : v;
  }
  __shared__ double warp_vals[kWarps];
  acc = block_reduce<kWarps>(acc, SumOp{}, 0.0, warp_vals);
  if (threadIdx.x == 0) partial[blockIdx.x] = acc;
}

// *out = sum of partial[0..count) in a fixed order (one block).
__global__ void __launch_bounds__(kThreads)
    reduce_final_kernel(double* __restrict__ out, const double* __restrict__ partial,
                        size_t count) {
  double acc = 0.0;
  for (size_t i = threadIdx.x; i < count; i += kThreads) acc += partial[i];
  __shared__ double warp_vals[kWarps];
  acc = block_reduce<kWarps>(acc, SumOp{}, 0.0, warp_vals);
  if (threadIdx.x == 0) *out = acc;
}

template <bool kSquares>
double reduce(const char* what, const float* x, size_t n, void* workspace, size_t workspace_bytes,
              cudaStream_t stream) {
  if (n == 0) return 0.0;
  MOE_CHECK(x, std::string(what) + ": null pointer");
  const size_t need = reduce_workspace_bytes(n);
  MOE_CHECK(workspace && workspace_bytes >= need,
            std::string(what) + ": workspace of " + std::to_string(workspace_bytes) +
                " bytes, needs " + std::to_string(need));
  const size_t parts = reduce_partials(n);
  MOE_CHECK(parts <= static_cast<size_t>(std::numeric_limits<int>::max()),
            std::string(what) + ": n too large");
  auto* partial = static_cast<double*>(workspace);
  double* result = partial + parts;
  reduce_partial_kernel<kSquares>
      <<<static_cast<unsigned>(parts), kThreads, 0, stream>>>(partial, x, n);
  check_launch();
  reduce_final_kernel<<<1, kThreads, 0, stream>>>(result, partial, parts);
  check_launch();
  double host = 0.0;
  MOE_CUDA_CHECK(cudaMemcpyAsync(&host, result, sizeof(double), cudaMemcpyDeviceToHost, stream));
  MOE_CUDA_CHECK(cudaStreamSynchronize(stream));
  return host;
}

// ---------------------------------------------------------- cross-entropy --

// One block per row. Passes over the row: max (fp32, exact), z = sum exp(x - m)
// (fp64 exp and fp64 accumulation; the CPU sums fp32 exps in fp64: the loss of
// a confident prediction is log(1 + tiny) and needs the fp64 sum), then the gradient
// grad_scale * (exp(x - lse) - onehot) in fp64, rounded once. logits and
// dlogits may alias, so neither is __restrict__: every thread reads the
// target logit before the first block reduction (a barrier), and in the last
// pass each thread reads x[j] before writing d[j] itself.
template <typename A>
__global__ void __launch_bounds__(kThreads)
    cross_entropy_kernel(float* __restrict__ losses, A* dlogits, const A* logits,
                         const int32_t* __restrict__ targets, int V, double grad_scale) {
  const size_t row = static_cast<size_t>(blockIdx.x) * V;
  const A* x = logits + row;
  const int tgt = targets[blockIdx.x];
  const bool valid = tgt >= 0 && tgt < V;
  const float xt = valid ? to_f32(x[tgt]) : 0.f;

  float m = -INFINITY;
  for (int j = threadIdx.x; j < V; j += kThreads) m = MaxOp{}(m, to_f32(x[j]));
  __shared__ float warp_maxes[kWarps];
  m = block_reduce<kWarps>(m, MaxOp{}, -INFINITY, warp_maxes);

  double z = 0.0;
  for (int j = threadIdx.x; j < V; j += kThreads)
    z += exp(static_cast<double>(to_f32(x[j])) - m);
  __shared__ double warp_sums[kWarps];
  z = block_reduce<kWarps>(z, SumOp{}, 0.0, warp_sums);
  const double lse = static_cast<double>(m) + log(z);
  const double nan = __longlong_as_double(0x7ff8000000000000ll);

  if (threadIdx.x == 0) losses[blockIdx.x] = static_cast<float>(valid ? lse - xt : nan);
  if (!dlogits) return;
  A* d = dlogits + row;
  for (int j = threadIdx.x; j < V; j += kThreads) {
    const double p = exp(static_cast<double>(to_f32(x[j])) - lse);
    const double g = valid ? grad_scale * (j == tgt ? p - 1.0 : p) : nan;
    store(&d[j], static_cast<float>(g));
  }
}

// ------------------------------------------------------------------ AdamW --

struct AdamWConsts {
  double lr, beta1, one_minus_beta1, beta2, one_minus_beta2, eps, decay, bc1, bc2, grad_scale;
};

// Per element, fp64 math, the CPU backend's formula and order of operations.
__global__ void __launch_bounds__(kThreads)
    adamw_kernel(float* __restrict__ params, const float* __restrict__ grads,
                 float* __restrict__ m, float* __restrict__ v, size_t n, size_t decay_count,
                 AdamWConsts c) {
  const size_t stride = static_cast<size_t>(gridDim.x) * blockDim.x;
  for (size_t i = static_cast<size_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += stride) {
    const double g = static_cast<double>(grads[i]) * c.grad_scale;
    const double mi = c.beta1 * m[i] + c.one_minus_beta1 * g;
    const double vi = c.beta2 * v[i] + c.one_minus_beta2 * g * g;
    m[i] = static_cast<float>(mi);
    v[i] = static_cast<float>(vi);
    const double upd = (mi / c.bc1) / (sqrt(vi / c.bc2) + c.eps);
    params[i] = static_cast<float>(params[i] * (i < decay_count ? c.decay : 1.0) - c.lr * upd);
  }
}

}  // namespace

size_t reduce_workspace_bytes(size_t n) {
  if (n == 0) return 0;
  return (reduce_partials(n) + 1) * sizeof(double);  // partials, then the result
}

double sum(const float* x, size_t n, void* workspace, size_t workspace_bytes,
           cudaStream_t stream) {
  return reduce<false>("sum", x, n, workspace, workspace_bytes, stream);
}

double sum_squares(const float* x, size_t n, void* workspace, size_t workspace_bytes,
                   cudaStream_t stream) {
  return reduce<true>("sum_squares", x, n, workspace, workspace_bytes, stream);
}

template <typename A>
void cross_entropy(float* losses, A* dlogits, const A* logits, const int32_t* targets, int N, int V,
                   double grad_scale, cudaStream_t stream) {
  MOE_CHECK(N >= 0 && V > 0, "cross_entropy: bad shape N=" + std::to_string(N) +
                                 " V=" + std::to_string(V));
  if (N == 0) return;
  MOE_CHECK(losses && logits && targets, "cross_entropy: null pointer");
  cross_entropy_kernel<<<N, kThreads, 0, stream>>>(losses, dlogits, logits, targets, V,
                                                   grad_scale);
  check_launch();
}

#define INSTANTIATE(A)                                                                     \
  template void cross_entropy<A>(float*, A*, const A*, const int32_t*, int, int, double, \
                                 cudaStream_t);
MOE_FOR_ACTIVATIONS(INSTANTIATE)
#undef INSTANTIATE

void adamw_step(float* params, const float* grads, float* m, float* v, size_t n,
                const AdamWParams& hp, cudaStream_t stream) {
  const double lr = hp.lr, beta1 = hp.beta1, beta2 = hp.beta2;
  const int64_t step = hp.step;
  MOE_CHECK(step >= 1, "adamw_step: step must be >= 1 (1-based), got " + std::to_string(step));
  if (n == 0) return;
  MOE_CHECK(params && grads && m && v, "adamw_step: null pointer");
  AdamWConsts c{};
  c.lr = lr;
  c.beta1 = beta1;
  c.one_minus_beta1 = 1.0 - beta1;
  c.beta2 = beta2;
  c.one_minus_beta2 = 1.0 - beta2;
  c.eps = hp.eps;
  c.decay = 1.0 - lr * hp.weight_decay;
  c.bc1 = 1.0 - std::pow(beta1, static_cast<double>(step));
  c.bc2 = 1.0 - std::pow(beta2, static_cast<double>(step));
  c.grad_scale = hp.grad_scale;
  adamw_kernel<<<grid_for(n, kThreads), kThreads, 0, stream>>>(
      params, grads, m, v, n, hp.decay_count, c);
  check_launch();
}

}  // namespace moe::kernels
