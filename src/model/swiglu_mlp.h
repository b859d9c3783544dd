// SwiGLU MLP, y = W2 (silu(W1 x) * (W3 x)), no biases. Used for the dense FFN
// of the first layers and for the fused shared experts of a MoE layer.
// W1 and W3 are stored stacked as one [2F, D] matrix "w13" (one GEMM).
#pragma once

#include <string>

#include "model/arena.h"
#include "model/params.h"
#include "model/scratch.h"

namespace moe {

template <typename T, typename A = T>
class SwiGluMlp {
 public:
  SwiGluMlp(ParamSet<T>& ps, const std::string& prefix, int D, int F);
  // The activations kept for backward (a13, h) of up to max_tokens rows.
  void allocate(Arena& arena, int max_tokens);
  // Scratch that backward takes for max_tokens rows.
  size_t backward_scratch_bytes(int max_tokens) const;

  // y[N,D] = mlp(x) (overwritten). Keeps what backward needs.
  void forward(Backend<T, A>& be, const ParamSet<T>& ps, A* y, const A* x, int N);
  // dx[N,D] overwritten (or accumulated); weight gradients accumulated.
  void backward(Backend<T, A>& be, ParamSet<T>& ps, Scratch& scratch, A* dx, const A* dy,
                const A* x, int N, bool accumulate_dx);

 private:
  int D_, F_;
  typename ParamSet<T>::Id w13_, w2_;
  A *a13_ = nullptr, *h_ = nullptr;  // activations
};

}  // namespace moe
