// Token dispatch for a dropless MoE layer: every (token, slot) pair is sent
// to its expert. Rows are grouped by expert with a stable counting sort, so
// the order (and every result computed from it) is deterministic.
// Multi-rank expert parallelism (all-to-all of these rows) extends this class.
#pragma once

#include <cstdint>
#include <vector>

#include "model/arena.h"

namespace moe {

template <typename T>
class Dispatcher {
 public:
  Dispatcher(int E, int K) : E_(E), K_(K), counts_(E), offsets_(E + 1) {}
  void allocate(Arena<T>& arena, int max_tokens);

  // Plans the rows of this micro-batch's routing (expert_idx [N,K]).
  void plan(Backend<T>& be, const int32_t* expert_idx, int N);
  const std::vector<int64_t>& counts() const { return counts_; }   // per expert
  const std::vector<int64_t>& offsets() const { return offsets_; } // E+1 row offsets
  int64_t rows() const { return offsets_[E_]; }

  // xp[rows, D] = x's rows in expert order.
  void dispatch(Backend<T>& be, T* xp, const T* x, int N, int D) const;
  // dx[N, D] += gradient of dispatch.
  void dispatch_backward(Backend<T>& be, T* dx, const T* dxp, int N, int D) const;
  // y[N, D] += sum_k gate * expert output row.
  void combine(Backend<T>& be, T* y, const T* yp, const T* gates, int N, int D) const;
  // dyp overwritten, dgates [N, K] overwritten.
  void combine_backward(Backend<T>& be, T* dyp, T* dgates, const T* dy, const T* yp,
                        const T* gates, int N, int D) const;

 private:
  int E_, K_;
  std::vector<int64_t> counts_, offsets_;
  int32_t* row_of_slot_ = nullptr;  // backend [N*K]
};

}  // namespace moe
