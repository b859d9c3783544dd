#include "moe/moe_layer.h"

#include "core/error.h"

namespace moe {

ExpertParam expert_param(const std::string& layer_prefix, int expert, bool w13, int D, int Fe) {
  return {layer_prefix + ".experts." + std::to_string(expert) + (w13 ? ".w13" : ".w2"),
          w13 ? std::vector<int64_t>{2 * int64_t(Fe), D} : std::vector<int64_t>{D, Fe}};
}

std::vector<ExpertParam> expert_region_layout(const Config& cfg, int first, int count) {
  std::vector<ExpertParam> out;
  for (int l = cfg.model.first_dense_layers; l < cfg.model.layers; ++l)
    for (bool w13 : {true, false})
      for (int e = first; e < first + count; ++e)
        out.push_back(expert_param("layers." + std::to_string(l) + ".moe", e, w13,
                                   cfg.model.hidden, cfg.moe.expert_intermediate));
  return out;
}

template <typename T, typename A>
MoeLayer<T, A>::MoeLayer(ParamSet<T>& ps, const std::string& prefix, const Config& cfg, Comm* ep)
    : D_(cfg.model.hidden),
      E_(cfg.moe.n_routed),
      K_(cfg.moe.top_k),
      Fe_(cfg.moe.expert_intermediate),
      with_aux_(cfg.balance.method == BalanceMethod::AuxLoss ||
                (cfg.balance.method == BalanceMethod::LossFree && cfg.balance.seq_aux_alpha > 0)),
      router_(ps, prefix, cfg.model.hidden, cfg.moe, cfg.balance.bias_mode),
      dispatcher_(cfg.moe.n_routed, cfg.moe.top_k, ep) {
  if (cfg.moe.n_shared > 0)
    shared_ = std::make_unique<SwiGluMlp<T, A>>(ps, prefix + ".shared", D_,
                                             cfg.moe.n_shared * Fe_);
  // One named tensor per expert, named by its global index (checkpoints load
  // under any expert layout); the local ones registered back to back so each
  // projection is one [E/P, out, in] block.
  const int first = dispatcher_.first_expert(), last = first + dispatcher_.local_experts();
  for (bool w13 : {true, false})
    for (int e = first; e < last; ++e) {
      ExpertParam p = expert_param(prefix, e, w13, D_, Fe_);
      auto id = ps.add(p.name, std::move(p.shape), ParamInit::Normal, true, true);
      if (e == first) (w13 ? w13_first_ : w2_first_) = id;
    }
}

template <typename T, typename A>
size_t MoeLayer<T, A>::expert_rows_capacity(int max_tokens) const {
  // With P ranks per EP group, up to P times this rank's own rows.
  return size_t(max_tokens) * K_ * size_t(E_ / dispatcher_.local_experts());
}

template <typename T, typename A>
void MoeLayer<T, A>::allocate(Activations& acts, int max_tokens) {
  const size_t erows = expert_rows_capacity(max_tokens);
  policy_ = acts.policy();
  if (shared_) shared_->allocate(acts, max_tokens);
  router_.allocate(acts, max_tokens, with_aux_);
  dispatcher_.allocate(acts, max_tokens, D_);
  const bool full = acts.full();
  acts.take(xe_, erows * D_, full);
  acts.take(a13e_, erows * 2 * Fe_, full);
  acts.take(he_, erows * Fe_, acts.selective_or_full());  // elementwise from a13e: cheap to redo
  acts.take(ye_, erows * D_, full);
}

// The takes of backward(), in order.
template <typename T, typename A>
size_t MoeLayer<T, A>::backward_scratch_bytes(int max_tokens) const {
  const size_t rows = size_t(max_tokens) * K_, erows = expert_rows_capacity(max_tokens);
  size_t b = shared_ ? shared_->backward_scratch_bytes(max_tokens) : 0;
  b += Scratch::bytes<T>(rows);                                   // dgates
  b += Scratch::bytes<A>(rows * D_);                              // dy_local
  if (dispatcher_.parallel()) b += Scratch::bytes<A>(erows * D_);  // dye
  b += Scratch::bytes<A>(erows * Fe_);                            // dhe
  b += Scratch::bytes<A>(erows * 2 * Fe_);                        // da13e
  b += Scratch::bytes<A>(erows * D_);                             // dxe
  return b + router_.backward_scratch_bytes(max_tokens);
}

template <typename T, typename A>
double MoeLayer<T, A>::forward(Backend<T, A>& be, const ParamSet<T>& ps, A* y, const A* x, int N,
                               const float* bias, int64_t* counts, int64_t* fanout,
                               const AuxLossSpec* aux) {
  // Phases: the shared and routed experts' SwiGLUs are ExpertGemm; the
  // router and the dispatcher scope their own work.
  {
    PhaseScope phase(be, Phase::ExpertGemm);
    if (shared_)
      shared_->forward(be, ps, y, x, N);
    else
      be.zero(y, size_t(N) * D_ * sizeof(A));
  }

  const double aux_loss = router_.forward(be, ps, x, N, bias, aux);
  dispatcher_.plan(be, router_.expert_idx(), N, fanout);
  if (counts)
    for (int e = 0; e < E_; ++e) counts[e] += dispatcher_.counts()[e];

  const int El = dispatcher_.local_experts();
  const int64_t* off = dispatcher_.expert_offsets().data();
  dispatcher_.dispatch(be, xe_, x, N, D_);
  {
    PhaseScope phase(be, Phase::ExpertGemm);
    be.grouped_linear_forward(a13e_, xe_, ps.param(w13_first_), off, El, D_, 2 * Fe_);
    be.swiglu_forward(he_, a13e_, int(dispatcher_.expert_rows()), Fe_);
    be.grouped_linear_forward(ye_, he_, ps.param(w2_first_), off, El, Fe_, D_);
  }
  y_local_ = dispatcher_.gather_outputs(be, ye_, D_);
  dispatcher_.combine(be, y, y_local_, router_.gates(), N, D_);
  return aux_loss;
}

template <typename T, typename A>
void MoeLayer<T, A>::recompute(Backend<T, A>& be, const ParamSet<T>& ps, const A* x, int N) {
  if (policy_ == Recompute::None) return;
  const int rows = int(dispatcher_.expert_rows());
  if (policy_ == Recompute::Selective) {
    PhaseScope phase(be, Phase::ExpertGemm);
    if (shared_) shared_->recompute(be, ps, x, N);
    be.swiglu_forward(he_, a13e_, rows, Fe_);
    return;
  }
  // Full: forward() from the router on, minus top-K, the plan and the
  // combine, in the same order (the same all-to-alls on every rank).
  {
    PhaseScope phase(be, Phase::ExpertGemm);
    if (shared_) shared_->recompute(be, ps, x, N);
  }
  router_.recompute(be, ps, x, N);
  const int El = dispatcher_.local_experts();
  const int64_t* off = dispatcher_.expert_offsets().data();
  dispatcher_.dispatch(be, xe_, x, N, D_);
  {
    PhaseScope phase(be, Phase::ExpertGemm);
    be.grouped_linear_forward(a13e_, xe_, ps.param(w13_first_), off, El, D_, 2 * Fe_);
    be.swiglu_forward(he_, a13e_, rows, Fe_);
    be.grouped_linear_forward(ye_, he_, ps.param(w2_first_), off, El, Fe_, D_);
  }
  y_local_ = dispatcher_.gather_outputs(be, ye_, D_);
}

template <typename T, typename A>
void MoeLayer<T, A>::backward(Backend<T, A>& be, ParamSet<T>& ps, Scratch& scratch, A* dx,
                              const A* dy, const A* x, int N) {
  {
    PhaseScope phase(be, Phase::ExpertGemm);
    if (shared_)
      shared_->backward(be, ps, scratch, dx, dy, x, N, false);
    else
      be.zero(dx, size_t(N) * D_ * sizeof(A));
  }

  const size_t rows = size_t(N) * K_, erows = size_t(dispatcher_.expert_rows());
  T* dgates = scratch.take<T>(rows);
  A* dy_local = scratch.take<A>(rows * D_);
  A* dye_buf = dispatcher_.parallel() ? scratch.take<A>(erows * D_) : nullptr;
  A* dhe = scratch.take<A>(erows * Fe_);
  A* da13e = scratch.take<A>(erows * 2 * Fe_);
  A* dxe = scratch.take<A>(erows * D_);

  const int El = dispatcher_.local_experts();
  const int64_t* off = dispatcher_.expert_offsets().data();
  dispatcher_.combine_backward(be, dy_local, dgates, dy, y_local_, router_.gates(), N, D_);
  const A* dye = dispatcher_.scatter_gradients(be, dy_local, dye_buf, D_);
  {
    PhaseScope phase(be, Phase::ExpertGemm);
    be.grouped_linear_backward(dhe, ps.grad(w2_first_), dye, he_, ps.param(w2_first_), off, El,
                               Fe_, D_);
    be.swiglu_backward(da13e, dhe, a13e_, int(erows), Fe_);
    be.grouped_linear_backward(dxe, ps.grad(w13_first_), da13e, xe_, ps.param(w13_first_), off,
                               El, D_, 2 * Fe_);
  }
  dispatcher_.dispatch_backward(be, dx, dxe, N, D_);
  router_.backward(be, ps, scratch, dx, dgates, x, N);
}

template class MoeLayer<float>;
template class MoeLayer<double>;
template class MoeLayer<float, bf16>;

}  // namespace moe
