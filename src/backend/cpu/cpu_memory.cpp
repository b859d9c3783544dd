// Memory, elementwise ops and deterministic fp64 reductions.
#include <cblas.h>  // OpenBLAS's also declares openblas_set_num_threads

#include <cstdlib>
#include <cstring>
#include <new>
#include <vector>

#include "backend/cpu/cpu_blas.h"
#include "backend/cpu/cpu_ops.h"

namespace moe::cpu {

void blas_set_threads(int nt) {
#ifdef OPENBLAS_VERSION
  // openblas_set_num_threads is process-global; only call it on a change.
  static int current = -1;
  if (nt != current) {
    openblas_set_num_threads(nt);
    current = nt;
  }
#else
  (void)nt;
#endif
}

void* alloc_bytes(size_t bytes) {
  // aligned_alloc needs a size that is a multiple of the alignment (and > 0
  // so that every allocation is a distinct, freeable pointer).
  size_t padded = (bytes + 63) / 64 * 64;
  if (padded == 0) padded = 64;
  void* p = std::aligned_alloc(64, padded);
  if (!p) throw std::bad_alloc();
  std::memset(p, 0, padded);
  return p;
}

void free_bytes(void* p) { std::free(p); }

void copy_bytes(void* dst, const void* src, size_t bytes) {
  if (bytes > 0) std::memcpy(dst, src, bytes);
}

void zero_bytes(void* p, size_t bytes) {
  if (bytes > 0) std::memset(p, 0, bytes);
}

template <typename T>
void add_inplace(int nt, T* y, const T* x, size_t n) {
#pragma omp parallel for num_threads(nt) schedule(static)
  for (size_t i = 0; i < n; i++) y[i] += x[i];
}

template <typename T>
void scale_inplace(int nt, T* x, double a, size_t n) {
  const T s = static_cast<T>(a);
#pragma omp parallel for num_threads(nt) schedule(static)
  for (size_t i = 0; i < n; i++) x[i] *= s;
}

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

template <typename T>
double sum(int nt, const T* x, size_t n) {
  return chunked_sum(nt, x, n, [](double v) { return v; });
}

template <typename T>
double sum_squares(int nt, const T* x, size_t n) {
  return chunked_sum(nt, x, n, [](double v) { return v * v; });
}

#define INSTANTIATE(T)                                     \
  template void add_inplace<T>(int, T*, const T*, size_t); \
  template void scale_inplace<T>(int, T*, double, size_t); \
  template double sum<T>(int, const T*, size_t);           \
  template double sum_squares<T>(int, const T*, size_t);
INSTANTIATE(float)
INSTANTIATE(double)
#undef INSTANTIATE

}  // namespace moe::cpu
