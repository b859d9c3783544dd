#include "model/moe_layer.h"

#include "core/error.h"

namespace moe {

template <typename T>
MoeLayer<T>::MoeLayer(ParamSet<T>& ps, const std::string& prefix, const Config& cfg)
    : D_(cfg.model.hidden),
      E_(cfg.moe.n_routed),
      K_(cfg.moe.top_k),
      Fe_(cfg.moe.expert_intermediate),
      with_aux_(cfg.balance.method == BalanceMethod::AuxLoss),
      router_(ps, prefix, cfg.model.hidden, cfg.moe, cfg.balance.bias_mode),
      dispatcher_(cfg.moe.n_routed, cfg.moe.top_k) {
  if (cfg.moe.n_shared > 0)
    shared_ = std::make_unique<SwiGluMlp<T>>(ps, prefix + ".shared", D_,
                                             cfg.moe.n_shared * Fe_);
  // One named tensor per expert (checkpoints load under any expert layout);
  // registered back to back so each projection is one [E, out, in] block.
  for (int e = 0; e < E_; ++e) {
    auto id = ps.add(prefix + ".experts." + std::to_string(e) + ".w13", {2 * Fe_, D_},
                     ParamInit::Normal, true);
    if (e == 0) w13_first_ = id;
  }
  for (int e = 0; e < E_; ++e) {
    auto id = ps.add(prefix + ".experts." + std::to_string(e) + ".w2", {D_, Fe_},
                     ParamInit::Normal, true);
    if (e == 0) w2_first_ = id;
  }
}

template <typename T>
void MoeLayer<T>::allocate(Arena<T>& arena, int max_tokens) {
  const size_t rows = size_t(max_tokens) * K_;
  if (shared_) shared_->allocate(arena, max_tokens);
  router_.allocate(arena, max_tokens, with_aux_);
  dispatcher_.allocate(arena, max_tokens);
  xp_ = arena.alloc(rows * D_);
  a13p_ = arena.alloc(rows * 2 * Fe_);
  hp_ = arena.alloc(rows * Fe_);
  yp_ = arena.alloc(rows * D_);
  dyp_ = arena.alloc(rows * D_);
  dhp_ = arena.alloc(rows * Fe_);
  da13p_ = arena.alloc(rows * 2 * Fe_);
  dxp_ = arena.alloc(rows * D_);
  dgates_ = arena.alloc(size_t(max_tokens) * K_);
}

template <typename T>
double MoeLayer<T>::forward(Backend<T>& be, const ParamSet<T>& ps, T* y, const T* x, int N,
                            const float* bias, int64_t* counts, const AuxLossSpec* aux) {
  if (shared_)
    shared_->forward(be, ps, y, x, N);
  else
    be.zero(y, size_t(N) * D_ * sizeof(T));

  const double aux_loss = router_.forward(be, ps, x, N, bias, aux);
  dispatcher_.plan(be, router_.expert_idx(), N);
  if (counts)
    for (int e = 0; e < E_; ++e) counts[e] += dispatcher_.counts()[e];

  const int64_t* off = dispatcher_.offsets().data();
  dispatcher_.dispatch(be, xp_, x, N, D_);
  be.grouped_linear_forward(a13p_, xp_, ps.param(w13_first_), off, E_, D_, 2 * Fe_);
  be.swiglu_forward(hp_, a13p_, int(dispatcher_.rows()), Fe_);
  be.grouped_linear_forward(yp_, hp_, ps.param(w2_first_), off, E_, Fe_, D_);
  dispatcher_.combine(be, y, yp_, router_.gates(), N, D_);
  return aux_loss;
}

template <typename T>
void MoeLayer<T>::backward(Backend<T>& be, ParamSet<T>& ps, T* dx, const T* dy, const T* x,
                           int N) {
  if (shared_)
    shared_->backward(be, ps, dx, dy, x, N, false);
  else
    be.zero(dx, size_t(N) * D_ * sizeof(T));

  const int64_t* off = dispatcher_.offsets().data();
  dispatcher_.combine_backward(be, dyp_, dgates_, dy, yp_, router_.gates(), N, D_);
  be.grouped_linear_backward(dhp_, ps.grad(w2_first_), dyp_, hp_, ps.param(w2_first_), off, E_,
                             Fe_, D_);
  be.swiglu_backward(da13p_, dhp_, a13p_, int(dispatcher_.rows()), Fe_);
  be.grouped_linear_backward(dxp_, ps.grad(w13_first_), da13p_, xp_, ps.param(w13_first_), off,
                             E_, D_, 2 * Fe_);
  dispatcher_.dispatch_backward(be, dx, dxp_, N, D_);
  router_.backward(be, ps, dx, dgates_, x, N);
}

template class MoeLayer<float>;
template class MoeLayer<double>;

}  // namespace moe
