// SwiGLU MLP, y = W2 (silu(W1 x) * (W3 x)), no biases. Used for the dense FFN
// of the first layers and for the fused shared experts of a MoE layer.
// W1 and W3 are stored stacked as one [2F, D] matrix "w13" (one GEMM).
#pragma once

#include <string>

#include "model/arena.h"
#include "model/params.h"

namespace moe {

template <typename T>
class SwiGluMlp {
 public:
  SwiGluMlp(ParamSet<T>& ps, const std::string& prefix, int D, int F);
  void allocate(Arena<T>& arena, int max_tokens);

  // y[N,D] = mlp(x) (overwritten). Keeps what backward needs.
  void forward(Backend<T>& be, const ParamSet<T>& ps, T* y, const T* x, int N);
  // dx[N,D] overwritten (or accumulated); weight gradients accumulated.
  void backward(Backend<T>& be, ParamSet<T>& ps, T* dx, const T* dy, const T* x, int N,
                bool accumulate_dx);

 private:
  int D_, F_;
  typename ParamSet<T>::Id w13_, w2_;
  T *a13_ = nullptr, *h_ = nullptr;    // activations
  T *da13_ = nullptr, *dh_ = nullptr;  // gradient scratch
};

}  // namespace moe
