#include "moe/router.h"

namespace moe {

template <typename T, typename A>
Router<T, A>::Router(ParamSet<T>& ps, const std::string& prefix, int D, const MoeConfig& mc,
                  BiasMode mode)
    : D_(D), fn_(mc.gate) {
  spec_.E = mc.n_routed;
  spec_.K = mc.top_k;
  spec_.bias_mode = mode;
  spec_.normalize = mc.normalize_gates;
  spec_.route_scale = mc.route_scale;
  spec_.n_group = mc.n_group;
  spec_.topk_group = mc.topk_group;
  w_ = ps.add(prefix + ".router", {spec_.E, D}, ParamInit::Normal, true);
}

template <typename T, typename A>
void Router<T, A>::allocate(Activations& acts, int max_tokens, bool with_aux_loss) {
  const size_t n = size_t(max_tokens), E = spec_.E, K = spec_.K;
  policy_ = acts.policy();
  acts.take(logits_, n * E, acts.selective_or_full());  // backward never reads them
  acts.take(scores_, n * E, acts.full());
  acts.keep(gates_, n * K);
  acts.keep(idx_, n * K);
  if (with_aux_loss) acts.take(dscores_aux_, n * E, acts.full());
}

template <typename T, typename A>
size_t Router<T, A>::backward_scratch_bytes(int max_tokens) const {
  return 2 * Scratch::bytes<T>(size_t(max_tokens) * spec_.E);
}

template <typename T, typename A>
double Router<T, A>::forward(Backend<T, A>& be, const ParamSet<T>& ps, const A* x, int N,
                             const float* bias, const AuxLossSpec* aux) {
  PhaseScope phase(be, Phase::Router);  // router GEMM, scores, top-K and the aux loss
  be.router_linear_forward(logits_, x, ps.param(w_), N, D_, spec_.E);
  be.router_scores_forward(scores_, logits_, N, spec_.E, fn_);
  be.topk_route(idx_, gates_, scores_, bias, N, spec_);
  aux_active_ = aux != nullptr && dscores_aux_ != nullptr;
  if (!aux_active_) return 0.0;
  aux_ = *aux;
  // The aux gradient depends only on this forward's selection and scores, so
  // it is computed here, once, and added in backward.
  be.zero(dscores_aux_, size_t(N) * spec_.E * sizeof(T));
  return be.aux_loss_forward_backward(dscores_aux_, scores_, idx_, aux_args());
}

template <typename T, typename A>
void Router<T, A>::recompute(Backend<T, A>& be, const ParamSet<T>& ps, const A* x, int N) {
  if (policy_ != Recompute::Full) return;
  PhaseScope phase(be, Phase::Router);
  be.router_linear_forward(logits_, x, ps.param(w_), N, D_, spec_.E);
  be.router_scores_forward(scores_, logits_, N, spec_.E, fn_);
  if (!aux_active_) return;
  // The same call on the same scores and selection as in forward; its
  // value (the loss) was the training forward's and is dropped here.
  be.zero(dscores_aux_, size_t(N) * spec_.E * sizeof(T));
  be.aux_loss_forward_backward(dscores_aux_, scores_, idx_, aux_args());
}

template <typename T, typename A>
void Router<T, A>::backward(Backend<T, A>& be, ParamSet<T>& ps, Scratch& scratch, A* dx,
                            const T* dgates, const A* x, int N) {
  PhaseScope phase(be, Phase::Router);
  const size_t n = size_t(N) * spec_.E;
  T* dscores = scratch.take<T>(n);
  T* dlogits = scratch.take<T>(n);
  if (aux_active_)
    be.copy(dscores, dscores_aux_, n * sizeof(T));
  else
    be.zero(dscores, n * sizeof(T));
  be.topk_route_backward(dscores, dgates, scores_, idx_, N, spec_);
  be.router_scores_backward(dlogits, dscores, scores_, N, spec_.E, fn_);
  be.router_linear_backward(dx, ps.grad(w_), dlogits, x, ps.param(w_), N, D_, spec_.E, true);
}

template class Router<float>;
template class Router<double>;
template class Router<float, bf16>;

}  // namespace moe
