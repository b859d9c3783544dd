// Dropless token dispatch: a stable counting sort of the (token, slot) pairs
// by expert, and the row gathers/scatters that use it.
#include <cstring>
#include <vector>

#include "backend/cpu/cpu_ops.h"
#include "core/error.h"

namespace moe::cpu {

// Serial on purpose: the pass is O(N*K) and the order must be the slot order.
void dispatch_plan(int32_t* row_of_slot, int64_t* counts_host, const int32_t* expert_idx, int N,
                   int E, int K) {
  const size_t pairs = static_cast<size_t>(N) * K;
  for (int e = 0; e < E; e++) counts_host[e] = 0;
  for (size_t p = 0; p < pairs; p++) {
    const int32_t e = expert_idx[p];
    MOE_CHECK(e >= 0 && e < E, "dispatch_plan: expert index out of range");
    counts_host[e]++;
  }
  std::vector<int64_t> next(E);
  int64_t off = 0;
  for (int e = 0; e < E; e++) {
    next[e] = off;
    off += counts_host[e];
  }
  for (size_t p = 0; p < pairs; p++) row_of_slot[p] = static_cast<int32_t>(next[expert_idx[p]]++);
}

template <typename T>
void gather_rows(int nt, T* dst, const T* src, const int32_t* index, int64_t rows, int D) {
#pragma omp parallel for num_threads(nt) schedule(static)
  for (int64_t i = 0; i < rows; i++)
    std::memcpy(dst + static_cast<size_t>(i) * D, src + static_cast<size_t>(index[i]) * D,
                sizeof(T) * static_cast<size_t>(D));
}

template <typename T>
void permute_rows(int nt, T* xp, const T* x, const int32_t* row_of_slot, int N, int K, int D) {
#pragma omp parallel for num_threads(nt) schedule(static)
  for (int t = 0; t < N; t++) {
    const T* src = x + static_cast<size_t>(t) * D;
    for (int k = 0; k < K; k++) {
      T* dst = xp + static_cast<size_t>(row_of_slot[static_cast<size_t>(t) * K + k]) * D;
      for (int d = 0; d < D; d++) dst[d] = src[d];
    }
  }
}

template <typename T>
void permute_rows_backward(int nt, T* dx, const T* dxp, const int32_t* row_of_slot, int N, int K,
                           int D) {
#pragma omp parallel for num_threads(nt) schedule(static)
  for (int t = 0; t < N; t++) {
    T* dst = dx + static_cast<size_t>(t) * D;
    for (int k = 0; k < K; k++) {
      const T* src = dxp + static_cast<size_t>(row_of_slot[static_cast<size_t>(t) * K + k]) * D;
      for (int d = 0; d < D; d++) dst[d] += src[d];
    }
  }
}

template <typename T>
void combine_forward(int nt, T* y, const T* yp, const T* gates, const int32_t* row_of_slot, int N,
                     int K, int D) {
#pragma omp parallel for num_threads(nt) schedule(static)
  for (int t = 0; t < N; t++) {
    T* dst = y + static_cast<size_t>(t) * D;
    for (int k = 0; k < K; k++) {
      const size_t slot = static_cast<size_t>(t) * K + k;
      const T* src = yp + static_cast<size_t>(row_of_slot[slot]) * D;
      const T g = gates[slot];
      for (int d = 0; d < D; d++) dst[d] += g * src[d];
    }
  }
}

template <typename T>
void combine_backward(int nt, T* dyp, T* dgates, const T* dy, const T* yp, const T* gates,
                      const int32_t* row_of_slot, int N, int K, int D) {
#pragma omp parallel for num_threads(nt) schedule(static)
  for (int t = 0; t < N; t++) {
    const T* g = dy + static_cast<size_t>(t) * D;
    for (int k = 0; k < K; k++) {
      const size_t slot = static_cast<size_t>(t) * K + k;
      const size_t row = static_cast<size_t>(row_of_slot[slot]) * D;
      const T gate = gates[slot];
      double dot = 0.0;
      for (int d = 0; d < D; d++) {
        dot += static_cast<double>(g[d]) * yp[row + d];
        dyp[row + d] = gate * g[d];
      }
      dgates[slot] = static_cast<T>(dot);
    }
  }
}

#define INSTANTIATE(T)                                                                          \
  template void gather_rows<T>(int, T*, const T*, const int32_t*, int64_t, int);               \
  template void permute_rows<T>(int, T*, const T*, const int32_t*, int, int, int);              \
  template void permute_rows_backward<T>(int, T*, const T*, const int32_t*, int, int, int);     \
  template void combine_forward<T>(int, T*, const T*, const T*, const int32_t*, int, int, int); \
  template void combine_backward<T>(int, T*, T*, const T*, const T*, const T*, const int32_t*,  \
                                    int, int, int);
INSTANTIATE(float)
INSTANTIATE(double)
#undef INSTANTIATE

}  // namespace moe::cpu
