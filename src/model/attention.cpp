#include "model/attention.h"

namespace moe {

template <typename T>
Attention<T>::Attention(ParamSet<T>& ps, const std::string& prefix, const ModelConfig& mc)
    : D_(mc.hidden), H_(mc.heads), hd_(mc.head_dim()), S_(mc.seq_len), theta_(mc.rope_theta) {
  wqkv_ = ps.add(prefix + ".wqkv", {3 * D_, D_}, ParamInit::Normal, true);
  wo_ = ps.add(prefix + ".wo", {D_, D_}, ParamInit::Normal, true);
}

template <typename T>
void Attention<T>::allocate(Arena<T>& arena, int max_seqs) {
  const size_t n = size_t(max_seqs) * S_;
  qkv_ = arena.alloc(n * 3 * D_);
  att_ = arena.alloc(n * D_);
  lse_ = arena.alloc(size_t(max_seqs) * H_ * S_);
  dqkv_ = arena.alloc(n * 3 * D_);
  datt_ = arena.alloc(n * D_);
}

template <typename T>
void Attention<T>::forward(Backend<T>& be, const ParamSet<T>& ps, T* y, const T* x, int B) {
  PhaseScope phase(be, Phase::Attention);  // projections, RoPE and the attention kernel
  const int N = B * S_;
  be.linear_forward(qkv_, x, ps.param(wqkv_), N, D_, 3 * D_);
  be.rope_forward(qkv_, B, S_, H_, hd_, theta_);
  be.attention_forward(att_, lse_, qkv_, B, S_, H_, hd_);
  be.linear_forward(y, att_, ps.param(wo_), N, D_, D_);
}

template <typename T>
void Attention<T>::backward(Backend<T>& be, ParamSet<T>& ps, T* dx, const T* dy, const T* x,
                            int B) {
  PhaseScope phase(be, Phase::Attention);
  const int N = B * S_;
  be.linear_backward(datt_, ps.grad(wo_), dy, att_, ps.param(wo_), N, D_, D_, false);
  be.attention_backward(dqkv_, datt_, att_, lse_, qkv_, B, S_, H_, hd_);
  be.rope_backward(dqkv_, B, S_, H_, hd_, theta_);
  be.linear_backward(dx, ps.grad(wqkv_), dqkv_, x, ps.param(wqkv_), N, D_, 3 * D_, false);
}

template class Attention<float>;
template class Attention<double>;

}  // namespace moe
