#include "layers/swiglu_mlp.h"

namespace moe {

template <typename T, typename A>
SwiGluMlp<T, A>::SwiGluMlp(ParamSet<T>& ps, const std::string& prefix, int D, int F)
    : D_(D), F_(F) {
  w13_ = ps.add(prefix + ".w13", {2 * F, D}, ParamInit::Normal, true);
  w2_ = ps.add(prefix + ".w2", {D, F}, ParamInit::Normal, true);
}

template <typename T, typename A>
void SwiGluMlp<T, A>::allocate(Activations& acts, int max_tokens) {
  const size_t n = size_t(max_tokens);
  policy_ = acts.policy();
  acts.take(a13_, n * 2 * F_, acts.full());
  acts.take(h_, n * F_, acts.selective_or_full());  // elementwise from a13: cheap to redo
}

template <typename T, typename A>
size_t SwiGluMlp<T, A>::backward_scratch_bytes(int max_tokens) const {
  const size_t n = size_t(max_tokens);
  return Scratch::bytes<A>(n * F_) + Scratch::bytes<A>(n * 2 * F_);
}

template <typename T, typename A>
void SwiGluMlp<T, A>::forward(Backend<T, A>& be, const ParamSet<T>& ps, A* y, const A* x, int N) {
  be.linear_forward(a13_, x, ps.param(w13_), N, D_, 2 * F_);
  be.swiglu_forward(h_, a13_, N, F_);
  be.linear_forward(y, h_, ps.param(w2_), N, F_, D_);
}

template <typename T, typename A>
void SwiGluMlp<T, A>::recompute(Backend<T, A>& be, const ParamSet<T>& ps, const A* x, int N) {
  if (policy_ == Recompute::None) return;
  if (policy_ == Recompute::Full) be.linear_forward(a13_, x, ps.param(w13_), N, D_, 2 * F_);
  be.swiglu_forward(h_, a13_, N, F_);
}

template <typename T, typename A>
void SwiGluMlp<T, A>::backward(Backend<T, A>& be, ParamSet<T>& ps, Scratch& scratch, A* dx,
                               const A* dy, const A* x, int N, bool accumulate_dx) {
  A* dh = scratch.take<A>(size_t(N) * F_);
  A* da13 = scratch.take<A>(size_t(N) * 2 * F_);
  be.linear_backward(dh, ps.grad(w2_), dy, h_, ps.param(w2_), N, F_, D_, false);
  be.swiglu_backward(da13, dh, a13_, N, F_);
  be.linear_backward(dx, ps.grad(w13_), da13, x, ps.param(w13_), N, D_, 2 * F_, accumulate_dx);
}

template class SwiGluMlp<float>;
template class SwiGluMlp<double>;
template class SwiGluMlp<float, bf16>;

}  // namespace moe
