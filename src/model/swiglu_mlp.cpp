#include "model/swiglu_mlp.h"

namespace moe {

template <typename T>
SwiGluMlp<T>::SwiGluMlp(ParamSet<T>& ps, const std::string& prefix, int D, int F) : D_(D), F_(F) {
  w13_ = ps.add(prefix + ".w13", {2 * F, D}, ParamInit::Normal, true);
  w2_ = ps.add(prefix + ".w2", {D, F}, ParamInit::Normal, true);
}

template <typename T>
void SwiGluMlp<T>::allocate(Arena<T>& arena, int max_tokens) {
  const size_t n = size_t(max_tokens);
  a13_ = arena.alloc(n * 2 * F_);
  h_ = arena.alloc(n * F_);
  da13_ = arena.alloc(n * 2 * F_);
  dh_ = arena.alloc(n * F_);
}

template <typename T>
void SwiGluMlp<T>::forward(Backend<T>& be, const ParamSet<T>& ps, T* y, const T* x, int N) {
  be.linear_forward(a13_, x, ps.param(w13_), N, D_, 2 * F_);
  be.swiglu_forward(h_, a13_, N, F_);
  be.linear_forward(y, h_, ps.param(w2_), N, F_, D_);
}

template <typename T>
void SwiGluMlp<T>::backward(Backend<T>& be, ParamSet<T>& ps, T* dx, const T* dy, const T* x, int N,
                            bool accumulate_dx) {
  be.linear_backward(dh_, ps.grad(w2_), dy, h_, ps.param(w2_), N, F_, D_, false);
  be.swiglu_backward(da13_, dh_, a13_, N, F_);
  be.linear_backward(dx, ps.grad(w13_), da13_, x, ps.param(w13_), N, D_, 2 * F_, accumulate_dx);
}

template class SwiGluMlp<float>;
template class SwiGluMlp<double>;

}  // namespace moe
