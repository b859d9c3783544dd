// SwiGLU MLP, y = W2 (silu(W1 x) * (W3 x)), no biases. Used for the dense FFN
// of the first layers and for the fused shared experts of a MoE layer.
// W1 and W3 are stored stacked as one [2F, D] matrix "w13" (one GEMM).
#pragma once

#include <string>

#include "layers/params.h"
#include "layers/recompute.h"
#include "layers/scratch.h"

namespace moe {

template <typename T, typename A = T>
class SwiGluMlp {
 public:
  SwiGluMlp(ParamSet<T>& ps, const std::string& prefix, int D, int F);
  // The activations backward reads (a13, h) of up to max_tokens rows: h is
  // redone under selective, both under full.
  void allocate(Activations& acts, int max_tokens);
  // Scratch that backward takes for max_tokens rows.
  size_t backward_scratch_bytes(int max_tokens) const;

  // y[N,D] = mlp(x) (overwritten). Keeps what backward needs.
  void forward(Backend<T, A>& be, const ParamSet<T>& ps, A* y, const A* x, int N);
  // Before backward: what the policy did not keep, from the same input x
  // (a13 = x W13^T under full, then h = swiglu(a13)); y is not redone.
  void recompute(Backend<T, A>& be, const ParamSet<T>& ps, const A* x, int N);
  // dx[N,D] overwritten (or accumulated); weight gradients accumulated.
  void backward(Backend<T, A>& be, ParamSet<T>& ps, Scratch& scratch, A* dx, const A* dy,
                const A* x, int N, bool accumulate_dx);

 private:
  int D_, F_;
  Recompute policy_ = Recompute::None;
  typename ParamSet<T>::Id w13_, w2_;
  A *a13_ = nullptr, *h_ = nullptr;  // activations
};

}  // namespace moe
