// Row-major GEMM on cblas (OpenBLAS) for float or double, shared by the
// linear layers, attention and moe-bench's GEMM peak; OpenBLAS's thread count.
#pragma once

#include <cblas.h>

#include <cstddef>

namespace moe::cpu {

// Makes OpenBLAS use nt threads for the following gemm calls (no-op when the
// BLAS is not OpenBLAS). Process-global: call it outside parallel regions.
void blas_set_threads(int nt);

// C[M,N] = alpha * op(A) op(B) + beta * C, row-major.
template <typename T>
inline void gemm(bool trans_a, bool trans_b, int M, int N, int K, T alpha, const T* A, int lda,
                 const T* B, int ldb, T beta, T* C, int ldc) {
  if (M == 0 || N == 0) return;
  if (K == 0) {  // empty inner dimension: C = beta * C (BLAS rejects ld = 0)
    for (int i = 0; i < M; i++) {
      T* c = C + static_cast<size_t>(i) * ldc;
      for (int j = 0; j < N; j++) c[j] = beta == T(0) ? T(0) : beta * c[j];
    }
    return;
  }
  const CBLAS_TRANSPOSE ta = trans_a ? CblasTrans : CblasNoTrans;
  const CBLAS_TRANSPOSE tb = trans_b ? CblasTrans : CblasNoTrans;
  if constexpr (sizeof(T) == sizeof(double)) {
    cblas_dgemm(CblasRowMajor, ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
  } else {
    cblas_sgemm(CblasRowMajor, ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
  }
}

}  // namespace moe::cpu
