// Dropless token dispatch: a stable counting sort of the (token, slot) pairs by
// expert, and the row permutations / weighted combine that use it.
//
// dispatch_plan, deterministic by construction (the result is the unique
// stable order, whatever the scheduling):
//   1. hist:    one block per chunk of kChunk consecutive pairs; hist[c][e] =
//               pairs of chunk c on expert e (shared-memory int atomics: exact).
//   2. scan:    one block; per expert, exclusive scan of hist over chunks (in
//               place: base[c][e] = pairs of expert e in chunks < c), counts[e]
//               = total; then one thread scans counts into offsets[e].
//   3. scatter: one block per chunk, walking its pairs in order, 256 at a time;
//               within a warp the rank among equal experts comes from
//               __match_any_sync, and the warps of a round take their turn
//               (in warp order) on a shared running counter per expert. So
//               rows of expert e follow the (token, slot) order exactly.
//
// The row kernels are gathers or one-writer scatters: permute_rows writes each
// row of xp once (row_of_slot is a permutation), permute_rows_backward and
// combine_forward sum the K slots of one token in k order, combine_backward
// gives each (t, k) slot one block with a fixed-tree dot product. Rows are
// activations of type A (float or bf16, kernels/elem.cuh), gates fp32; sums
// run in fp32 and a bf16 row is rounded once when stored. A slot of row -1
// (an expert index outside [0, E), which topk_route never produces) is
// skipped by all of them rather than read or written out of bounds.
#include <string>

#include "core/error.h"
#include "cuda_check.h"
#include "dispatch.h"
#include "elem.cuh"

namespace moe::kernels {
namespace {

constexpr int kChunk = 4096;        // pairs per chunk (hist and scatter)
constexpr int kThreads = 256;       // per block, hist/scatter/scan
constexpr int kWarps = kThreads / 32;
constexpr int kMaxExperts = 8192;   // shared per-expert arrays: 32 KiB
constexpr int kRowThreads = 128;    // row kernels

int num_chunks(int64_t pairs) { return static_cast<int>((pairs + kChunk - 1) / kChunk); }

__global__ void __launch_bounds__(kThreads)
    dispatch_hist_kernel(int32_t* __restrict__ hist, const int32_t* __restrict__ expert_idx,
                         int64_t pairs, int E) {
  extern __shared__ int32_t s_hist[];
  for (int e = threadIdx.x; e < E; e += kThreads) s_hist[e] = 0;
  __syncthreads();
  const int64_t p0 = static_cast<int64_t>(blockIdx.x) * kChunk;
  const int64_t p1 = min(pairs, p0 + kChunk);
  for (int64_t p = p0 + threadIdx.x; p < p1; p += kThreads) {
    const int32_t e = expert_idx[p];
    if (e >= 0 && e < E) atomicAdd(&s_hist[e], 1);
  }
  __syncthreads();
  int32_t* out = hist + static_cast<size_t>(blockIdx.x) * E;
  for (int e = threadIdx.x; e < E; e += kThreads) out[e] = s_hist[e];
}

__global__ void __launch_bounds__(kThreads)
    dispatch_scan_kernel(int32_t* __restrict__ hist, int32_t* __restrict__ offsets,
                         int64_t* __restrict__ counts, int chunks, int E) {
  for (int e = threadIdx.x; e < E; e += kThreads) {
    int32_t run = 0;
    for (int c = 0; c < chunks; ++c) {
      const size_t i = static_cast<size_t>(c) * E + e;
      const int32_t h = hist[i];
      hist[i] = run;
      run += h;
    }
    counts[e] = run;
  }
  __syncthreads();
  if (threadIdx.x == 0) {
    int64_t off = 0;
    for (int e = 0; e < E; ++e) {
      offsets[e] = static_cast<int32_t>(off);
      off += counts[e];
    }
  }
}

__global__ void __launch_bounds__(kThreads)
    dispatch_scatter_kernel(int32_t* __restrict__ row_of_slot,
                            const int32_t* __restrict__ expert_idx,
                            const int32_t* __restrict__ base, const int32_t* __restrict__ offsets,
                            int64_t pairs, int E) {
  extern __shared__ int32_t s_next[];  // next free row of each expert
  const int32_t* my_base = base + static_cast<size_t>(blockIdx.x) * E;
  for (int e = threadIdx.x; e < E; e += kThreads) s_next[e] = offsets[e] + my_base[e];
  __syncthreads();
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  const unsigned lt_mask = (1u << lane) - 1u;
  const int64_t p0 = static_cast<int64_t>(blockIdx.x) * kChunk;
  const int64_t p1 = min(pairs, p0 + kChunk);
  for (int64_t r0 = p0; r0 < p1; r0 += kThreads) {
    const int64_t p = r0 + threadIdx.x;
    int32_t e = p < p1 ? expert_idx[p] : -1;
    if (e >= E) e = -1;
    const bool valid = e >= 0;
    const unsigned same = __match_any_sync(0xffffffffu, e);
    const int rank = __popc(same & lt_mask);
    const bool last = (same >> lane) == 1u;  // highest lane of its group
    int32_t row = -1;
    for (int w = 0; w < kWarps; ++w) {  // warps take turns, in order: stable
      if (warp == w && valid) {
        row = s_next[e] + rank;
        __syncwarp(same);
        if (last) s_next[e] += __popc(same);
      }
      __syncthreads();
    }
    if (p < p1) row_of_slot[p] = row;
  }
}

template <typename A>
__global__ void __launch_bounds__(kRowThreads)
    permute_rows_kernel(A* __restrict__ xp, const A* __restrict__ x,
                        const int32_t* __restrict__ row_of_slot, int K, int D) {
  const int64_t slot = blockIdx.x;
  const int32_t row = row_of_slot[slot];
  if (row < 0) return;  // whole block: row is per block
  const A* src = x + static_cast<size_t>(slot / K) * D;
  A* dst = xp + static_cast<size_t>(row) * D;
  for (int d = threadIdx.x; d < D; d += kRowThreads) dst[d] = src[d];
}

template <typename A>
__global__ void __launch_bounds__(kRowThreads)
    permute_rows_backward_kernel(A* __restrict__ dx, const A* __restrict__ dxp,
                                 const int32_t* __restrict__ row_of_slot, int K, int D) {
  const size_t t = blockIdx.x;
  const int32_t* rows = row_of_slot + t * K;
  A* dst = dx + t * D;
  for (int d = threadIdx.x; d < D; d += kRowThreads) {
    float acc = to_f32(dst[d]);
    for (int k = 0; k < K; ++k)
      if (rows[k] >= 0) acc += to_f32(dxp[static_cast<size_t>(rows[k]) * D + d]);
    store(&dst[d], acc);
  }
}

template <typename A>
__global__ void __launch_bounds__(kRowThreads)
    combine_forward_kernel(A* __restrict__ y, const A* __restrict__ yp,
                           const float* __restrict__ gates,
                           const int32_t* __restrict__ row_of_slot, int K, int D) {
  const size_t t = blockIdx.x;
  const int32_t* rows = row_of_slot + t * K;
  const float* g = gates + t * K;
  A* dst = y + t * D;
  for (int d = threadIdx.x; d < D; d += kRowThreads) {
    float acc = to_f32(dst[d]);
    for (int k = 0; k < K; ++k)
      if (rows[k] >= 0) acc += g[k] * to_f32(yp[static_cast<size_t>(rows[k]) * D + d]);
    store(&dst[d], acc);
  }
}

// One block per (t, k) slot.
template <typename A>
__global__ void __launch_bounds__(kRowThreads)
    combine_backward_kernel(A* __restrict__ dyp, float* __restrict__ dgates,
                            const A* __restrict__ dy, const A* __restrict__ yp,
                            const float* __restrict__ gates,
                            const int32_t* __restrict__ row_of_slot, int K, int D) {
  __shared__ float warp_sums[kRowThreads / 32];
  const size_t slot = blockIdx.x;
  if (row_of_slot[slot] < 0) {  // whole block, before any __syncthreads
    if (threadIdx.x == 0) dgates[slot] = 0.f;
    return;
  }
  const size_t row = static_cast<size_t>(row_of_slot[slot]) * D;
  const A* g = dy + (slot / K) * D;
  const float gate = gates[slot];
  float dot = 0.f;
  for (int d = threadIdx.x; d < D; d += kRowThreads) {
    const float gd = to_f32(g[d]);
    dot += gd * to_f32(yp[row + d]);
    store(&dyp[row + d], gate * gd);
  }
  // The warps' partials added in warp order by thread 0 (not block_sum's tree).
  dot = block_sum_serial<kRowThreads / 32>(dot, warp_sums);
  if (threadIdx.x == 0) dgates[slot] = dot;
}

template <typename A>
__global__ void __launch_bounds__(kRowThreads)
    gather_rows_kernel(A* __restrict__ dst, const A* __restrict__ src,
                       const int32_t* __restrict__ index, int D) {
  const size_t i = blockIdx.x;
  const A* s = src + static_cast<size_t>(index[i]) * D;
  A* o = dst + i * D;
  for (int d = threadIdx.x; d < D; d += kRowThreads) o[d] = s[d];
}

void check_rows(const char* op, int64_t rows, int D) {
  MOE_CHECK(rows >= 0 && D > 0, std::string(op) + ": bad shape rows=" + std::to_string(rows) +
                                    " D=" + std::to_string(D));
  MOE_CHECK(rows < (int64_t{1} << 31), std::string(op) + ": too many rows");
}

}  // namespace

size_t dispatch_plan_workspace_bytes(int N, int E, int K) {
  if (N <= 0 || E <= 0 || K <= 0) return 0;
  const int64_t pairs = static_cast<int64_t>(N) * K;
  return (static_cast<size_t>(num_chunks(pairs)) * E + static_cast<size_t>(E)) * sizeof(int32_t);
}

void dispatch_plan(int32_t* row_of_slot, int64_t* counts, const int32_t* expert_idx, int N, int E,
                   int K, void* workspace, size_t workspace_bytes, cudaStream_t stream) {
  MOE_CHECK(N >= 0 && K > 0 && E > 0 && E <= kMaxExperts,
            "dispatch_plan: bad shape N=" + std::to_string(N) + " E=" + std::to_string(E) +
                " K=" + std::to_string(K));
  const int64_t pairs = static_cast<int64_t>(N) * K;
  MOE_CHECK(pairs < (int64_t{1} << 31), "dispatch_plan: N*K does not fit int32 rows");
  MOE_CHECK(counts, "dispatch_plan: null counts");
  if (N == 0) {
    MOE_CUDA_CHECK(cudaMemsetAsync(counts, 0, sizeof(int64_t) * E, stream));
    return;
  }
  MOE_CHECK(row_of_slot && expert_idx, "dispatch_plan: null pointer");
  const size_t need = dispatch_plan_workspace_bytes(N, E, K);
  MOE_CHECK(workspace && workspace_bytes >= need,
            "dispatch_plan: workspace of " + std::to_string(workspace_bytes) + " bytes, needs " +
                std::to_string(need));
  const int chunks = num_chunks(pairs);
  auto* hist = static_cast<int32_t*>(workspace);
  int32_t* offsets = hist + static_cast<size_t>(chunks) * E;
  const size_t smem = sizeof(int32_t) * E;
  dispatch_hist_kernel<<<chunks, kThreads, smem, stream>>>(hist, expert_idx, pairs, E);
  MOE_CUDA_CHECK(cudaGetLastError());
  dispatch_scan_kernel<<<1, kThreads, 0, stream>>>(hist, offsets, counts, chunks, E);
  MOE_CUDA_CHECK(cudaGetLastError());
  dispatch_scatter_kernel<<<chunks, kThreads, smem, stream>>>(row_of_slot, expert_idx, hist,
                                                               offsets, pairs, E);
  MOE_CUDA_CHECK(cudaGetLastError());
}

template <typename A>
void permute_rows(A* xp, const A* x, const int32_t* row_of_slot, int N, int K, int D,
                  cudaStream_t stream) {
  MOE_CHECK(K > 0, "permute_rows: bad K");
  check_rows("permute_rows", static_cast<int64_t>(N) * K, D);
  if (N == 0) return;
  MOE_CHECK(xp && x && row_of_slot, "permute_rows: null pointer");
  permute_rows_kernel<<<static_cast<unsigned>(static_cast<int64_t>(N) * K), kRowThreads, 0,
                        stream>>>(xp, x, row_of_slot, K, D);
  MOE_CUDA_CHECK(cudaGetLastError());
}

template <typename A>
void permute_rows_backward(A* dx, const A* dxp, const int32_t* row_of_slot, int N, int K, int D,
                           cudaStream_t stream) {
  MOE_CHECK(K > 0, "permute_rows_backward: bad K");
  check_rows("permute_rows_backward", static_cast<int64_t>(N) * K, D);
  if (N == 0) return;
  MOE_CHECK(dx && dxp && row_of_slot, "permute_rows_backward: null pointer");
  permute_rows_backward_kernel<<<N, kRowThreads, 0, stream>>>(dx, dxp, row_of_slot, K, D);
  MOE_CUDA_CHECK(cudaGetLastError());
}

template <typename A>
void combine_forward(A* y, const A* yp, const float* gates, const int32_t* row_of_slot, int N,
                     int K, int D, cudaStream_t stream) {
  MOE_CHECK(K > 0, "combine_forward: bad K");
  check_rows("combine_forward", static_cast<int64_t>(N) * K, D);
  if (N == 0) return;
  MOE_CHECK(y && yp && gates && row_of_slot, "combine_forward: null pointer");
  combine_forward_kernel<<<N, kRowThreads, 0, stream>>>(y, yp, gates, row_of_slot, K, D);
  MOE_CUDA_CHECK(cudaGetLastError());
}

template <typename A>
void combine_backward(A* dyp, float* dgates, const A* dy, const A* yp, const float* gates,
                      const int32_t* row_of_slot, int N, int K, int D, cudaStream_t stream) {
  MOE_CHECK(K > 0, "combine_backward: bad K");
  check_rows("combine_backward", static_cast<int64_t>(N) * K, D);
  if (N == 0) return;
  MOE_CHECK(dyp && dgates && dy && yp && gates && row_of_slot, "combine_backward: null pointer");
  combine_backward_kernel<<<static_cast<unsigned>(static_cast<int64_t>(N) * K), kRowThreads, 0,
                            stream>>>(dyp, dgates, dy, yp, gates, row_of_slot, K, D);
  MOE_CUDA_CHECK(cudaGetLastError());
}

template <typename A>
void gather_rows(A* dst, const A* src, const int32_t* index, int64_t rows, int D,
                 cudaStream_t stream) {
  check_rows("gather_rows", rows, D);
  if (rows == 0) return;
  MOE_CHECK(dst && src && index, "gather_rows: null pointer");
  gather_rows_kernel<<<static_cast<unsigned>(rows), kRowThreads, 0, stream>>>(dst, src, index, D);
  MOE_CUDA_CHECK(cudaGetLastError());
}

#define INSTANTIATE(A)                                                                          \
  template void permute_rows<A>(A*, const A*, const int32_t*, int, int, int, cudaStream_t);     \
  template void permute_rows_backward<A>(A*, const A*, const int32_t*, int, int, int,           \
                                         cudaStream_t);                                         \
  template void combine_forward<A>(A*, const A*, const float*, const int32_t*, int, int, int,   \
                                   cudaStream_t);                                               \
  template void combine_backward<A>(A*, float*, const A*, const A*, const float*,               \
                                    const int32_t*, int, int, int, cudaStream_t);               \
  template void gather_rows<A>(A*, const A*, const int32_t*, int64_t, int, cudaStream_t);
MOE_FOR_ACTIVATIONS(INSTANTIATE)
#undef INSTANTIATE

}  // namespace moe::kernels
