#include "model/transformer.h"

#include "core/error.h"

namespace moe {

template <typename T>
Transformer<T>::Transformer(const Config& cfg, Backend<T>& be, int max_seqs, Comm* ep)
    : cfg_(cfg), be_(be), max_seqs_(max_seqs), arena_(be) {
  const ModelConfig& mc = cfg.model;
  const int D = mc.hidden;
  embed_ = params_.add("embed", {mc.vocab_size, D}, ParamInit::Normal, true);
  layers_.resize(mc.layers);
  for (int l = 0; l < mc.layers; ++l) {
    Layer& L = layers_[l];
    const std::string p = "layers." + std::to_string(l);
    L.ln1 = params_.add(p + ".ln1", {D}, ParamInit::Ones, false);
    L.attn = std::make_unique<Attention<T>>(params_, p + ".attn", mc);
    L.ln2 = params_.add(p + ".ln2", {D}, ParamInit::Ones, false);
    if (l < mc.first_dense_layers) {
      L.dense = std::make_unique<SwiGluMlp<T>>(params_, p + ".mlp", D, mc.dense_intermediate);
    } else {
      L.moe = std::make_unique<MoeLayer<T>>(params_, p + ".moe", cfg, ep);
      moe_index_.push_back(l);
    }
  }
  lnf_ = params_.add("final_norm", {D}, ParamInit::Ones, false);
  head_ = params_.add("lm_head", {mc.vocab_size, D}, ParamInit::Normal, true);
  params_.finalize(be);

  const size_t N = size_t(max_seqs) * mc.seq_len;
  for (Layer& L : layers_) {
    L.resid = arena_.alloc(N * D);
    L.ln1_out = arena_.alloc(N * D);
    L.rstd1 = arena_.alloc(N);
    L.mid = arena_.alloc(N * D);
    L.ln2_out = arena_.alloc(N * D);
    L.rstd2 = arena_.alloc(N);
    L.attn->allocate(arena_, max_seqs);
    if (L.dense) L.dense->allocate(arena_, int(N));
    if (L.moe) L.moe->allocate(arena_, int(N));
  }
  bias_ = arena_.template alloc<float>(size_t(moe_layers()) * cfg.moe.n_routed);
  set_router_bias(std::vector<float>(
      size_t(moe_layers()) * cfg.moe.n_routed,
      cfg.balance.bias_mode == BiasMode::Multiplicative ? 1.0f : 0.0f));
  tokens_ = arena_.template alloc<int32_t>(N);
  targets_ = arena_.template alloc<int32_t>(N);
  resid_final_ = arena_.alloc(N * D);
  lnf_out_ = arena_.alloc(N * D);
  rstdf_ = arena_.alloc(N);
  logits_ = arena_.alloc(N * mc.vocab_size);
  losses_ = arena_.alloc(N);
  tmp_ = arena_.alloc(N * D);
  dres_ = arena_.alloc(N * D);
  dnorm_ = arena_.alloc(N * D);
}

template <typename T>
Transformer<T>::~Transformer() = default;

template <typename T>
void Transformer<T>::set_router_bias(const std::vector<float>& bias) {
  MOE_CHECK(bias.size() == size_t(moe_layers()) * cfg_.moe.n_routed, "router bias size");
  if (!bias.empty()) be_.to_device(bias_, bias.data(), bias.size() * sizeof(float));
}

template <typename T>
const Router<T>& Transformer<T>::router(int m) const {
  return layers_.at(moe_index_.at(m)).moe->router();
}

template <typename T>
ForwardResult Transformer<T>::forward(const int32_t* tokens, const int32_t* targets, int B,
                                      const ForwardOptions& opt) {
  MOE_CHECK(B >= 1 && B <= max_seqs_, "forward: batch exceeds the allocated activations");
  const ModelConfig& mc = cfg_.model;
  const int S = mc.seq_len, D = mc.hidden, V = mc.vocab_size, E = cfg_.moe.n_routed;
  const int N = B * S;
  const bool training = opt.ce_grad_scale != 0.0;

  AuxLossSpec aux;
  const AuxLossSpec* aux_ptr = nullptr;
  if (training && cfg_.balance.method == BalanceMethod::AuxLoss) {
    const bool per_seq = cfg_.balance.aux_scope == AuxScope::Sequence;
    aux = {cfg_.balance.aux_alpha, per_seq ? B : 1, per_seq ? S : N, opt.aux_grad_scale};
    aux_ptr = &aux;
  }

  be_.to_device(tokens_, tokens, size_t(N) * sizeof(int32_t));
  be_.to_device(targets_, targets, size_t(N) * sizeof(int32_t));
  ForwardResult r;
  r.tokens = N;

  be_.embedding_forward(layers_[0].resid, params_.param(embed_), tokens_, N, D);
  be_.rmsnorm_forward(layers_[0].ln1_out, layers_[0].rstd1, layers_[0].resid,
                      params_.param(layers_[0].ln1), N, D, mc.norm_eps);
  // Each residual add is fused with the norm that reads its result: mid and
  // ln2_out after attention, then the next layer's resid and ln1_out (or the
  // final norm) after the FFN.
  int m = 0;
  for (size_t l = 0; l < layers_.size(); ++l) {
    Layer& L = layers_[l];
    L.attn->forward(be_, params_, tmp_, L.ln1_out, B);
    be_.residual_rmsnorm_forward(L.mid, L.ln2_out, L.rstd2, L.resid, tmp_, params_.param(L.ln2), N,
                                 D, mc.norm_eps);
    if (L.dense) {
      L.dense->forward(be_, params_, tmp_, L.ln2_out, N);
    } else {
      int64_t* counts = opt.counts ? opt.counts + size_t(m) * E : nullptr;
      r.aux_loss_sum += L.moe->forward(be_, params_, tmp_, L.ln2_out, N, bias_ + size_t(m) * E,
                                       counts, aux_ptr);
      ++m;
    }
    if (l + 1 < layers_.size()) {
      Layer& next = layers_[l + 1];
      be_.residual_rmsnorm_forward(next.resid, next.ln1_out, next.rstd1, L.mid, tmp_,
                                   params_.param(next.ln1), N, D, mc.norm_eps);
    } else {
      be_.residual_rmsnorm_forward(resid_final_, lnf_out_, rstdf_, L.mid, tmp_, params_.param(lnf_),
                                   N, D, mc.norm_eps);
    }
  }

  be_.linear_forward(logits_, lnf_out_, params_.param(head_), N, D, V);
  // Training: the loss kernel turns logits into dlogits in place (no second copy).
  be_.cross_entropy(losses_, training ? logits_ : nullptr, logits_, targets_, N, V,
                    opt.ce_grad_scale);
  r.loss_sum = be_.sum(losses_, N);
  last_B_ = B;
  grad_ready_ = training;
  return r;
}

template <typename T>
void Transformer<T>::backward() {
  MOE_CHECK(grad_ready_, "backward() needs a preceding training forward");
  grad_ready_ = false;
  const ModelConfig& mc = cfg_.model;
  const int B = last_B_, D = mc.hidden, V = mc.vocab_size, N = B * mc.seq_len;

  be_.linear_backward(dnorm_, params_.grad(head_), logits_, lnf_out_, params_.param(head_), N, D,
                      V, false);
  be_.zero(dres_, size_t(N) * D * sizeof(T));
  be_.rmsnorm_backward(dres_, params_.grad(lnf_), dnorm_, resid_final_, params_.param(lnf_),
                       rstdf_, N, D);
  // dres_ is the gradient of the residual stream; each sub-block adds its
  // input gradient to it through its norm.
  for (size_t i = layers_.size(); i-- > 0;) {
    Layer& L = layers_[i];
    if (L.dense)
      L.dense->backward(be_, params_, dnorm_, dres_, L.ln2_out, N, false);
    else
      L.moe->backward(be_, params_, dnorm_, dres_, L.ln2_out, N);
    be_.rmsnorm_backward(dres_, params_.grad(L.ln2), dnorm_, L.mid, params_.param(L.ln2), L.rstd2,
                         N, D);
    L.attn->backward(be_, params_, dnorm_, dres_, L.ln1_out, B);
    be_.rmsnorm_backward(dres_, params_.grad(L.ln1), dnorm_, L.resid, params_.param(L.ln1),
                         L.rstd1, N, D);
  }
  be_.embedding_backward(params_.grad(embed_), dres_, tokens_, N, D);
}

template <typename T>
void Transformer<T>::set_device_ep_comm(Comm* ep_device) {
  for (Layer& L : layers_)
    if (L.moe) L.moe->set_device_ep_comm(ep_device);
}

template class Transformer<float>;
template class Transformer<double>;

}  // namespace moe
