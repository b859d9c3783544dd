// Multi-head causal self-attention with RoPE: fused qkv projection, rotary
// embedding on q and k, flash-style attention (only the per-query
// log-sum-exp is kept for backward), output projection. No biases.
#pragma once

#include <string>

#include "config/config.h"
#include "layers/params.h"
#include "layers/recompute.h"
#include "layers/scratch.h"

namespace moe {

template <typename T, typename A = T>
class Attention {
 public:
  Attention(ParamSet<T>& ps, const std::string& prefix, const ModelConfig& mc);
  // The activations backward reads (qkv after RoPE, attention output, lse):
  // kept, except under full, where forward() itself redoes them before
  // backward (recomputing the output is a whole attention forward, too dear
  // for selective).
  void allocate(Activations& acts, int max_seqs);
  size_t backward_scratch_bytes(int max_seqs) const;

  // y[B*S, D] overwritten.
  void forward(Backend<T, A>& be, const ParamSet<T>& ps, A* y, const A* x, int B);
  // dx[B*S, D] overwritten; weight gradients accumulated.
  void backward(Backend<T, A>& be, ParamSet<T>& ps, Scratch& scratch, A* dx, const A* dy,
                const A* x, int B);

 private:
  int D_, H_, hd_, S_;
  double theta_;
  typename ParamSet<T>::Id wqkv_, wo_;
  A *qkv_ = nullptr, *att_ = nullptr;
  T* lse_ = nullptr;
};

}  // namespace moe
