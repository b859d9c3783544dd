// Linear layers on BLAS: y = x W^T with W stored [out, in], row-major.
#include <cblas.h>

#include "backend/cpu/cpu_ops.h"
#include "core/error.h"

namespace moe::cpu {

// C[M,N] = alpha * op(A) op(B) + beta * C, row-major, for float or double.
template <typename T>
static void gemm(bool trans_a, bool trans_b, int M, int N, int K, T alpha, const T* A, int lda,
                 const T* B, int ldb, T beta, T* C, int ldc) {
  if (M == 0 || N == 0) return;
  if (K == 0) {  // empty inner dimension: C = beta * C (BLAS rejects ld = 0)
    for (int i = 0; i < M; i++) {
      T* c = C + static_cast<size_t>(i) * ldc;
      for (int j = 0; j < N; j++) c[j] = beta == T(0) ? T(0) : beta * c[j];
    }
    return;
  }
  CBLAS_TRANSPOSE ta = trans_a ? CblasTrans : CblasNoTrans;
  CBLAS_TRANSPOSE tb = trans_b ? CblasTrans : CblasNoTrans;
  if constexpr (sizeof(T) == sizeof(double)) {
    cblas_dgemm(CblasRowMajor, ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
  } else {
    cblas_sgemm(CblasRowMajor, ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
  }
}

template <typename T>
void linear_forward(int nt, T* y, const T* x, const T* W, int N, int I, int O) {
  blas_set_threads(nt);
  gemm<T>(false, true, N, O, I, T(1), x, I, W, I, T(0), y, O);  // y = x W^T
}

template <typename T>
void linear_backward(int nt, T* dx, T* dW, const T* dy, const T* x, const T* W, int N, int I, int O,
                     bool accumulate_dx) {
  blas_set_threads(nt);
  if (dx) gemm<T>(false, false, N, I, O, T(1), dy, O, W, I, accumulate_dx ? T(1) : T(0), dx, I);
  // dW += dy^T x; with no rows there is nothing to add (K = 0 would be a no-op anyway).
  if (N > 0) gemm<T>(true, false, O, I, N, T(1), dy, O, x, I, T(1), dW, I);
}

template <typename T>
void grouped_linear_forward(int nt, T* y, const T* x, const T* W, const int64_t* offsets_host,
                            int groups, int I, int O) {
  blas_set_threads(nt);
  for (int g = 0; g < groups; g++) {
    int64_t r0 = offsets_host[g], n = offsets_host[g + 1] - r0;
    MOE_CHECK(n >= 0, "grouped_linear_forward: offsets must be non-decreasing");
    if (n == 0) continue;
    gemm<T>(false, true, static_cast<int>(n), O, I, T(1), x + r0 * I, I,
            W + static_cast<size_t>(g) * O * I, I, T(0), y + r0 * O, O);
  }
}

template <typename T>
void grouped_linear_backward(int nt, T* dx, T* dW, const T* dy, const T* x, const T* W,
                             const int64_t* offsets_host, int groups, int I, int O) {
  blas_set_threads(nt);
  for (int g = 0; g < groups; g++) {
    int64_t r0 = offsets_host[g], n = offsets_host[g + 1] - r0;
    MOE_CHECK(n >= 0, "grouped_linear_backward: offsets must be non-decreasing");
    if (n == 0) continue;
    const size_t woff = static_cast<size_t>(g) * O * I;
    if (dx)
      gemm<T>(false, false, static_cast<int>(n), I, O, T(1), dy + r0 * O, O, W + woff, I, T(0),
              dx + r0 * I, I);
    gemm<T>(true, false, O, I, static_cast<int>(n), T(1), dy + r0 * O, O, x + r0 * I, I, T(1),
            dW + woff, I);
  }
}

#define INSTANTIATE(T)                                                                           \
  template void linear_forward<T>(int, T*, const T*, const T*, int, int, int);                   \
  template void linear_backward<T>(int, T*, T*, const T*, const T*, const T*, int, int, int,     \
                                   bool);                                                        \
  template void grouped_linear_forward<T>(int, T*, const T*, const T*, const int64_t*, int, int, \
                                          int);                                                  \
  template void grouped_linear_backward<T>(int, T*, T*, const T*, const T*, const T*,            \
                                           const int64_t*, int, int, int);
INSTANTIATE(float)
INSTANTIATE(double)
#undef INSTANTIATE

}  // namespace moe::cpu
