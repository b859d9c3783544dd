// RMSNorm forward (plain and fused with the residual add) and backward, the
// twins of kernels/rmsnorm.cu.
#include <cmath>

#include "backend/cpu/cpu_backend.h"

namespace moe::cpu {

// One row: y = x * rstd * w, rstd = 1/sqrt(mean(x^2) + eps); mean of squares
// in double, y computed in T and stored as A.
template <typename T, typename A>
void rmsnorm_row(A* yr, T* rstd, const T* xr, const T* w, int D, double eps) {
  double ss = 0.0;
  for (int d = 0; d < D; d++) ss += static_cast<double>(xr[d]) * xr[d];
  const T r = static_cast<T>(1.0 / std::sqrt(ss / D + eps));
  *rstd = r;
  for (int d = 0; d < D; d++) yr[d] = static_cast<T>(xr[d] * r * w[d]);
}

template <typename T, typename A>
void CpuBackend<T, A>::rmsnorm_forward(A* y, T* rstd, const T* x, const T* w, int N, int D,
                                       double eps) {
#pragma omp parallel for num_threads(nt_) schedule(static)
  for (int n = 0; n < N; n++) {
    const size_t row = static_cast<size_t>(n) * D;
    rmsnorm_row(y + row, rstd + n, x + row, w, D, eps);
  }
}

template <typename T, typename A>
void CpuBackend<T, A>::residual_rmsnorm_forward(T* sum, A* y, T* rstd, const T* resid,
                                                const A* delta, const T* w, int N, int D,
                                                double eps) {
#pragma omp parallel for num_threads(nt_) schedule(static)
  for (int n = 0; n < N; n++) {
    const size_t row = static_cast<size_t>(n) * D;
    for (int d = 0; d < D; d++) sum[row + d] = resid[row + d] + static_cast<T>(delta[row + d]);
    rmsnorm_row(y + row, rstd + n, sum + row, w, D, eps);
  }
}

// dx_j += r w_j dy_j - x_j r^3/D sum_k dy_k w_k x_k;  dw_j += sum_n dy_nj x_nj r_n.
template <typename T, typename A>
void CpuBackend<T, A>::rmsnorm_backward(T* dx, A* dx_act, T* dw, const A* dy, const T* x,
                                        const T* w, const T* rstd, int N, int D) {
#pragma omp parallel for num_threads(nt_) schedule(static)
  for (int n = 0; n < N; n++) {
    const T* xr = x + static_cast<size_t>(n) * D;
    const A* gr = dy + static_cast<size_t>(n) * D;
    T* dxr = dx + static_cast<size_t>(n) * D;
    const double r = rstd[n];
    double dot = 0.0;
    for (int d = 0; d < D; d++) dot += static_cast<double>(gr[d]) * w[d] * xr[d];
    const double c = dot * r * r * r / D;
    for (int d = 0; d < D; d++)
      dxr[d] += static_cast<T>(r * static_cast<double>(w[d]) * static_cast<double>(gr[d]) -
                               c * xr[d]);
    if (dx_act) {
      A* out = dx_act + static_cast<size_t>(n) * D;
      for (int d = 0; d < D; d++) out[d] = static_cast<A>(dxr[d]);
    }
  }
  // dw: column blocks in parallel, rows summed serially in double.
  const int blocks = (D + kColBlock - 1) / kColBlock;
#pragma omp parallel for num_threads(nt_) schedule(static)
  for (int blk = 0; blk < blocks; blk++) {
    const int d0 = blk * kColBlock, d1 = d0 + kColBlock < D ? d0 + kColBlock : D;
    double acc[kColBlock] = {};
    for (int n = 0; n < N; n++) {
      const T* xr = x + static_cast<size_t>(n) * D;
      const A* gr = dy + static_cast<size_t>(n) * D;
      const double r = rstd[n];
      for (int d = d0; d < d1; d++) acc[d - d0] += static_cast<double>(gr[d]) * xr[d] * r;
    }
    for (int d = d0; d < d1; d++) dw[d] += static_cast<T>(acc[d - d0]);
  }
}

MOE_OPS_RMSNORM(MOE_CPU_INSTANTIATE)

}  // namespace moe::cpu
