#include "model/attention.h"

namespace moe {

template <typename T, typename A>
Attention<T, A>::Attention(ParamSet<T>& ps, const std::string& prefix, const ModelConfig& mc)
    : D_(mc.hidden), H_(mc.heads), hd_(mc.head_dim()), S_(mc.seq_len), theta_(mc.rope_theta) {
  wqkv_ = ps.add(prefix + ".wqkv", {3 * D_, D_}, ParamInit::Normal, true);
  wo_ = ps.add(prefix + ".wo", {D_, D_}, ParamInit::Normal, true);
}

template <typename T, typename A>
void Attention<T, A>::allocate(Activations& acts, int max_seqs) {
  const size_t n = size_t(max_seqs) * S_;
  acts.take(qkv_, n * 3 * D_, acts.full());
  acts.take(att_, n * D_, acts.full());
  acts.take(lse_, size_t(max_seqs) * H_ * S_, acts.full());
}

template <typename T, typename A>
size_t Attention<T, A>::backward_scratch_bytes(int max_seqs) const {
  const size_t n = size_t(max_seqs) * S_;
  return Scratch::bytes<A>(n * D_) + Scratch::bytes<A>(n * 3 * D_);
}

template <typename T, typename A>
void Attention<T, A>::forward(Backend<T, A>& be, const ParamSet<T>& ps, A* y, const A* x, int B) {
  PhaseScope phase(be, Phase::Attention);  // projections, RoPE and the attention kernel
  const int N = B * S_;
  be.linear_forward(qkv_, x, ps.param(wqkv_), N, D_, 3 * D_);
  be.rope_forward(qkv_, B, S_, H_, hd_, theta_);
  be.attention_forward(att_, lse_, qkv_, B, S_, H_, hd_);
  be.linear_forward(y, att_, ps.param(wo_), N, D_, D_);
}

template <typename T, typename A>
void Attention<T, A>::backward(Backend<T, A>& be, ParamSet<T>& ps, Scratch& scratch, A* dx,
                               const A* dy, const A* x, int B) {
  PhaseScope phase(be, Phase::Attention);
  const int N = B * S_;
  A* datt = scratch.take<A>(size_t(N) * D_);
  A* dqkv = scratch.take<A>(size_t(N) * 3 * D_);
  be.linear_backward(datt, ps.grad(wo_), dy, att_, ps.param(wo_), N, D_, D_, false);
  be.attention_backward(dqkv, datt, att_, lse_, qkv_, B, S_, H_, hd_);
  be.rope_backward(dqkv, B, S_, H_, hd_, theta_);
  be.linear_backward(dx, ps.grad(wqkv_), dqkv, x, ps.param(wqkv_), N, D_, 3 * D_, false);
}

template class Attention<float>;
template class Attention<double>;
template class Attention<float, bf16>;

}  // namespace moe
