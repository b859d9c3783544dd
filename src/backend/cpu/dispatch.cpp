// Dropless token dispatch: a stable counting sort of the (token, slot) pairs
// by expert, and the row gathers/scatters that use it.
#include <cstring>
#include <vector>

#include "backend/cpu/cpu_backend.h"
#include "core/error.h"

namespace moe::cpu {

// Serial on purpose: the pass is O(N*K) and the order must be the slot order.
template <typename T, typename A>
void CpuBackend<T, A>::dispatch_plan(int32_t* row_of_slot, int64_t* counts_host,
                                     const int32_t* expert_idx, int N, int E, int K) {
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

template <typename T, typename A>
void CpuBackend<T, A>::gather_rows(A* dst, const A* src, const int32_t* index, int64_t rows,
                                   int D) {
#pragma omp parallel for num_threads(nt_) schedule(static)
  for (int64_t i = 0; i < rows; i++)
    std::memcpy(dst + static_cast<size_t>(i) * D, src + static_cast<size_t>(index[i]) * D,
                sizeof(A) * static_cast<size_t>(D));
}

template <typename T, typename A>
void CpuBackend<T, A>::permute_rows(A* xp, const A* x, const int32_t* row_of_slot, int N, int K,
                                    int D) {
#pragma omp parallel for num_threads(nt_) schedule(static)
  for (int t = 0; t < N; t++) {
    const A* src = x + static_cast<size_t>(t) * D;
    for (int k = 0; k < K; k++) {
      A* dst = xp + static_cast<size_t>(row_of_slot[static_cast<size_t>(t) * K + k]) * D;
      for (int d = 0; d < D; d++) dst[d] = src[d];
    }
  }
}

// The K rows are summed in compute precision and stored once.
template <typename T, typename A>
void CpuBackend<T, A>::permute_rows_backward(A* dx, const A* dxp, const int32_t* row_of_slot, int N,
                                             int K, int D) {
  using C = compute_t<A>;
#pragma omp parallel for num_threads(nt_) schedule(static)
  for (int t = 0; t < N; t++) {
    A* dst = dx + static_cast<size_t>(t) * D;
    for (int d = 0; d < D; d++) {
      C acc = dst[d];
      for (int k = 0; k < K; k++)
        acc += C(dxp[static_cast<size_t>(row_of_slot[static_cast<size_t>(t) * K + k]) * D + d]);
      dst[d] = acc;
    }
  }
}

template <typename T, typename A>
void CpuBackend<T, A>::combine_forward(A* y, const A* yp, const T* gates,
                                       const int32_t* row_of_slot, int N, int K, int D) {
  using C = compute_t<A>;
#pragma omp parallel for num_threads(nt_) schedule(static)
  for (int t = 0; t < N; t++) {
    A* dst = y + static_cast<size_t>(t) * D;
    const size_t slot0 = static_cast<size_t>(t) * K;
    for (int d = 0; d < D; d++) {
      C acc = dst[d];
      for (int k = 0; k < K; k++)
        acc += C(gates[slot0 + k]) * C(yp[static_cast<size_t>(row_of_slot[slot0 + k]) * D + d]);
      dst[d] = acc;
    }
  }
}

template <typename T, typename A>
void CpuBackend<T, A>::combine_backward(A* dyp, T* dgates, const A* dy, const A* yp, const T* gates,
                                        const int32_t* row_of_slot, int N, int K, int D) {
  using C = compute_t<A>;
#pragma omp parallel for num_threads(nt_) schedule(static)
  for (int t = 0; t < N; t++) {
    const A* g = dy + static_cast<size_t>(t) * D;
    for (int k = 0; k < K; k++) {
      const size_t slot = static_cast<size_t>(t) * K + k;
      const size_t row = static_cast<size_t>(row_of_slot[slot]) * D;
      const C gate = gates[slot];
      double dot = 0.0;
      for (int d = 0; d < D; d++) {
        dot += static_cast<double>(g[d]) * static_cast<double>(yp[row + d]);
        dyp[row + d] = gate * C(g[d]);
      }
      dgates[slot] = static_cast<T>(dot);
    }
  }
}

MOE_OPS_DISPATCH(MOE_CPU_INSTANTIATE)

}  // namespace moe::cpu
