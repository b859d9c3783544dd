// Linear layers on BLAS: y = x W^T with W stored [out, in], row-major.
#include <vector>

#include "backend/cpu/cpu_blas.h"
#include "backend/cpu/cpu_backend.h"
#include "core/error.h"

namespace moe::cpu {

// bf16 mode: the operands of each matmul as float arrays. Activations are
// widened exactly; weights are rounded to bf16 first, as the CUDA backend's
// bf16 weight copies are. Buffers per thread and slot, grown once and reused.
namespace {
enum Slot { kX, kW, kY, kDY, kSlots };

float* scratch(Slot slot, size_t n) {
  thread_local std::vector<float> buf[kSlots];
  if (buf[slot].size() < n) buf[slot].resize(n);
  return buf[slot].data();
}
const float* widened(Slot slot, const bf16* x, size_t n) {
  float* f = scratch(slot, n);
  for (size_t i = 0; i < n; i++) f[i] = x[i];
  return f;
}
const float* bf16_weights(const float* W, size_t n) {
  float* f = scratch(kW, n);
  for (size_t i = 0; i < n; i++) f[i] = round_to_bf16(W[i]);
  return f;
}
void store(bf16* y, const float* f, size_t n) {
  for (size_t i = 0; i < n; i++) y[i] = f[i];
}
}  // namespace

// y = x W^T (rows of one group).
template <typename T, typename A>
static void forward_rows(A* y, const A* x, const T* W, int N, int I, int O) {
  if constexpr (is_bf16_v<A>) {
    float* yf = scratch(kY, size_t(N) * O);
    gemm<float>(false, true, N, O, I, 1.0f, widened(kX, x, size_t(N) * I), I,
                bf16_weights(W, size_t(O) * I), I, 0.0f, yf, O);
    store(y, yf, size_t(N) * O);
  } else {
    gemm<T>(false, true, N, O, I, T(1), x, I, W, I, T(0), y, O);
  }
}

// dx (= or +=) dy W with W rounded in bf16 mode (round_w), and dW += dy^T x;
// dy_t: dy already as a T array (the router's fp32 gradient) or null.
template <typename T, typename A>
static void backward_rows(A* dx, T* dW, const A* dy, const T* dy_t, const A* x, const T* W, int N,
                          int I, int O, bool accumulate_dx, bool round_w) {
  if constexpr (is_bf16_v<A>) {
    const float* dyf = dy_t ? dy_t : widened(kDY, dy, size_t(N) * O);
    if (dx) {
      float* dxf = scratch(kY, size_t(N) * I);
      if (accumulate_dx)
        for (size_t i = 0; i < size_t(N) * I; i++) dxf[i] = dx[i];
      gemm<float>(false, false, N, I, O, 1.0f, dyf, O, round_w ? bf16_weights(W, size_t(O) * I) : W,
                  I, accumulate_dx ? 1.0f : 0.0f, dxf, I);
      store(dx, dxf, size_t(N) * I);
    }
    // dW += dy^T x; with no rows there is nothing to add.
    if (N > 0) gemm<float>(true, false, O, I, N, 1.0f, dyf, O, widened(kX, x, size_t(N) * I), I,
                           1.0f, dW, I);
  } else {
    (void)round_w;
    const T* g = dy_t ? dy_t : dy;
    if (dx) gemm<T>(false, false, N, I, O, T(1), g, O, W, I, accumulate_dx ? T(1) : T(0), dx, I);
    if (N > 0) gemm<T>(true, false, O, I, N, T(1), g, O, x, I, T(1), dW, I);
  }
}

template <typename T, typename A>
void CpuBackend<T, A>::linear_forward(A* y, const A* x, const T* W, int N, int I, int O) {
  blas_set_threads(nt_);
  forward_rows(y, x, W, N, I, O);
}

template <typename T, typename A>
void CpuBackend<T, A>::linear_backward(A* dx, T* dW, const A* dy, const A* x, const T* W, int N,
                                       int I, int O, bool accumulate_dx) {
  blas_set_threads(nt_);
  backward_rows<T, A>(dx, dW, dy, nullptr, x, W, N, I, O, accumulate_dx, true);
}

template <typename T, typename A>
void CpuBackend<T, A>::router_linear_forward(T* y, const A* x, const T* W, int N, int I, int O) {
  blas_set_threads(nt_);
  if constexpr (is_bf16_v<A>)
    gemm<float>(false, true, N, O, I, 1.0f, widened(kX, x, size_t(N) * I), I, W, I, 0.0f, y, O);
  else
    gemm<T>(false, true, N, O, I, T(1), x, I, W, I, T(0), y, O);
}

template <typename T, typename A>
void CpuBackend<T, A>::router_linear_backward(A* dx, T* dW, const T* dy, const A* x, const T* W,
                                              int N, int I, int O, bool accumulate_dx) {
  blas_set_threads(nt_);
  backward_rows<T, A>(dx, dW, nullptr, dy, x, W, N, I, O, accumulate_dx, false);
}

template <typename T, typename A>
void CpuBackend<T, A>::grouped_linear_forward(A* y, const A* x, const T* W,
                                              const int64_t* offsets_host, int groups, int I,
                                              int O) {
  blas_set_threads(nt_);
  for (int g = 0; g < groups; g++) {
    int64_t r0 = offsets_host[g], n = offsets_host[g + 1] - r0;
    MOE_CHECK(n >= 0, "grouped_linear_forward: offsets must be non-decreasing");
    if (n == 0) continue;
    forward_rows(y + r0 * O, x + r0 * I, W + static_cast<size_t>(g) * O * I, static_cast<int>(n),
                 I, O);
  }
}

template <typename T, typename A>
void CpuBackend<T, A>::grouped_linear_backward(A* dx, T* dW, const A* dy, const A* x, const T* W,
                                               const int64_t* offsets_host, int groups, int I,
                                               int O) {
  blas_set_threads(nt_);
  for (int g = 0; g < groups; g++) {
    int64_t r0 = offsets_host[g], n = offsets_host[g + 1] - r0;
    MOE_CHECK(n >= 0, "grouped_linear_backward: offsets must be non-decreasing");
    if (n == 0) continue;
    const size_t woff = static_cast<size_t>(g) * O * I;
    backward_rows<T, A>(dx ? dx + r0 * I : nullptr, dW + woff, dy + r0 * O, nullptr, x + r0 * I,
                        W + woff, static_cast<int>(n), I, O, false, true);
  }
}

MOE_OPS_LINEAR(MOE_CPU_INSTANTIATE)

}  // namespace moe::cpu
