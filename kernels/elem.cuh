// The shared device helpers of kernels/*.cu, written once: activation loads
// and stores, grid sizing for grid-stride loops, and warp and block
// reductions. (Here and not in kernels.h: kernels.h is the launchers' header,
// included by the host-compiled backend glue, so it holds no device code;
// this header is included by the .cu files alone.)
//
// Activations: kernels templated on the activation type A (float, or
// __nv_bfloat16 in bf16 training) compute in fp32, read A through to_f32 and
// write through store, which rounds to nearest even for bf16 and is the
// identity for float (so the fp32 kernels keep their bits).
#pragma once

#include <cuda_bf16.h>

#include <algorithm>
#include <cstddef>

namespace moe::kernels {

__device__ __forceinline__ float to_f32(float v) { return v; }
__device__ __forceinline__ float to_f32(__nv_bfloat16 v) { return __bfloat162float(v); }

__device__ __forceinline__ void store(float* p, float v) { *p = v; }
__device__ __forceinline__ void store(__nv_bfloat16* p, float v) { *p = __float2bfloat16_rn(v); }

// ---- grid sizing ----

// The most blocks a grid-stride launch takes: 2^16 blocks (2^24 threads at
// 256 a block). A choice, not a limit: gridDim.x may be up to 2^31 - 1 (the
// 65535 limit is gridDim.y and z's); past this the kernels loop. Every kernel
// launched with grid_for is grid-stride with each element computed on its
// own, so the cap never changes a result.
constexpr size_t kMaxGridBlocks = 65536;

// Blocks for a grid-stride loop over n elements at `threads` per block:
// ceil(n / threads), at least 1 and at most kMaxGridBlocks. (Every launcher
// returns before launching when n == 0.)
inline unsigned grid_for(size_t n, int threads) {
  const size_t t = static_cast<size_t>(threads);
  return static_cast<unsigned>(std::max<size_t>(1, std::min(kMaxGridBlocks, (n + t - 1) / t)));
}

// ---- warp and block reductions ----
//
// Each is one fixed order, so equal inputs give equal bits on every run and
// every GPU. The warp ones are an xor butterfly (offsets 16, 8, 4, 2, 1) over
// a full warp: every lane ends with the same bits (fp addition is
// commutative, and every lane adds the same pairs in the same tree). The
// callers of the block ones declare the shared scratch of one value per warp
// themselves: the emulated device's rewriter (emu/rewrite.py) turns the
// __shared__ declarations of .cu files into the block's storage, not those of
// headers.

// The ops of warp_reduce and block_reduce.
struct SumOp {
  template <typename V>
  __device__ V operator()(V a, V b) const { return a + b; }
};
struct MaxOp {  // not fmaxf: b when either is NaN
  __device__ float operator()(float a, float b) const { return a > b ? a : b; }
};

// v reduced over the warp with op (op(a, b) with a this lane's value).
template <typename V, typename Op>
__device__ __forceinline__ V warp_reduce(V v, Op op) {
  for (int o = 16; o > 0; o >>= 1) v = op(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

// Sum of v over the warp (float or double).
template <typename V>
__device__ __forceinline__ V warp_sum(V v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

// Max of v over the warp, by fmaxf (a NaN loses to a number).
__device__ __forceinline__ float warp_max(float v) {
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

// v reduced over a block of kWarps full warps with op, returned to every
// thread: each warp's butterfly, then every warp runs the butterfly again on
// the kWarps partials (lanes past kWarps padded with `identity`). warp_vals:
// __shared__ V[kWarps], free again when this returns.
template <int kWarps, typename V, typename Op>
__device__ V block_reduce(V v, Op op, V identity, V* warp_vals) {
  static_assert(kWarps >= 1 && kWarps <= 32, "a block of 1 to 32 warps");
  v = warp_reduce(v, op);
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  if (lane == 0) warp_vals[warp] = v;
  __syncthreads();
  v = lane < kWarps ? warp_vals[lane] : identity;  // every warp reduces the same values
  v = warp_reduce(v, op);
  __syncthreads();  // warp_vals may be reused by a later call
  return v;
}

// Sum of v over a block of kWarps full warps, as a tree (block_reduce's
// order), returned to every thread. warp_sums: __shared__ float[kWarps].
template <int kWarps>
__device__ float block_sum(float v, float* warp_sums) {
  return block_reduce<kWarps>(v, SumOp{}, 0.f, warp_sums);
}

// Sum of v over a block of kWarps full warps in another order: each warp's
// butterfly, then thread 0 adds the kWarps partials in warp order from 0.f.
// The result is thread 0's alone (the other threads get their own warp's
// partial). warp_sums: __shared__ float[kWarps], not read again after this
// unless the caller syncs.
template <int kWarps>
__device__ float block_sum_serial(float v, float* warp_sums) {
  v = warp_sum(v);
  if (threadIdx.x % 32 == 0) warp_sums[threadIdx.x / 32] = v;
  __syncthreads();
  if (threadIdx.x == 0) {
    float s = 0.f;
    for (int w = 0; w < kWarps; ++w) s += warp_sums[w];
    return s;
  }
  return v;
}

}  // namespace moe::kernels

// Explicit instantiation of a launcher template for both activation types:
// MOE_FOR_ACTIVATIONS(MACRO) expands MACRO(float) and MACRO(__nv_bfloat16).
#define MOE_FOR_ACTIVATIONS(M) \
  M(float)                     \
  M(__nv_bfloat16)
