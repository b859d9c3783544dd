// Multi-head causal self-attention with RoPE: fused qkv projection, rotary
// embedding on q and k, flash-style attention (only the per-query
// log-sum-exp is kept for backward), output projection. No biases.
#pragma once

#include <string>

#include "config/config.h"
#include "model/arena.h"
#include "model/params.h"

namespace moe {

template <typename T>
class Attention {
 public:
  Attention(ParamSet<T>& ps, const std::string& prefix, const ModelConfig& mc);
  void allocate(Arena<T>& arena, int max_seqs);

  // y[B*S, D] overwritten.
  void forward(Backend<T>& be, const ParamSet<T>& ps, T* y, const T* x, int B);
  // dx[B*S, D] overwritten; weight gradients accumulated.
  void backward(Backend<T>& be, ParamSet<T>& ps, T* dx, const T* dy, const T* x, int B);

 private:
  int D_, H_, hd_, S_;
  double theta_;
  typename ParamSet<T>::Id wqkv_, wo_;
  T *qkv_ = nullptr, *att_ = nullptr, *lse_ = nullptr;  // activations (qkv after RoPE)
  T *dqkv_ = nullptr, *datt_ = nullptr;                 // gradient scratch
};

}  // namespace moe
