// The order top-K routing picks experts in, shared by the CPU backend
// (src/backend/cpu/router.cpp) and the CUDA kernel (kernels/router.cu) so
// that both pick the same experts for any scores, non-finite ones included.
//
// (key, index) pairs are totally ordered: larger key first, +inf above every
// number, NaN below every number (-inf included), and equal keys (two NaNs
// too) by ascending index. A total order means every token gets K distinct
// experts in [0, E) whatever its scores: a NaN score cannot leave a pick
// empty (an out-of-range index, an out-of-bounds row), it only sorts last.
// Plain C++ for the host compiler; host and device code under nvcc. In core/,
// below both users, so that kernels/ includes nothing of src/backend/.
#pragma once

#if defined(__CUDACC__)
#define MOE_HOST_DEVICE __host__ __device__
#else
#define MOE_HOST_DEVICE
#endif

namespace moe {

// True when (ka, ia) is picked before (kb, ib). `x != x` is the NaN test that
// works in host and device code alike (no fast-math in this build).
template <typename K>
MOE_HOST_DEVICE inline bool topk_before(K ka, int ia, K kb, int ib) {
  const bool nan_a = ka != ka, nan_b = kb != kb;
  if (nan_a || nan_b) return nan_b && (!nan_a || ia < ib);
  return ka > kb || (ka == kb && ia < ib);
}

// Group-limited routing (RouteSpec::n_group): a group's score is the sum of
// its two best keys in topk_before's order (DeepSeek-V3: the top-2 biased
// scores), its only key when the group has one expert. push() the group's
// (key, index) pairs in any order; NaN or infinite keys give what fp
// arithmetic gives (a NaN among the two best: NaN; +inf and -inf: NaN), and
// groups are then ranked by topk_before on (score, group index), so a NaN
// group score ranks below every number and equal scores go to the lower group.
template <typename K>
struct GroupTop2 {
  K k1 = K(0), k2 = K(0);
  int i1 = -1, i2 = -1;
  MOE_HOST_DEVICE void push(K k, int i) {
    if (i1 < 0 || topk_before(k, i, k1, i1)) {
      k2 = k1;
      i2 = i1;
      k1 = k;
      i1 = i;
    } else if (i2 < 0 || topk_before(k, i, k2, i2)) {
      k2 = k;
      i2 = i;
    }
  }
  MOE_HOST_DEVICE K score() const { return i2 < 0 ? k1 : k1 + k2; }
};

}  // namespace moe

#undef MOE_HOST_DEVICE
