#include "model/transformer.h"

#include <algorithm>
#include <string>

#include "core/error.h"

namespace moe {

namespace {
// Rows per LM-head chunk: train.loss_chunk_tokens, or (0) as many as keep
// one chunk's logits near 256 MiB; never more than the largest forward.
int chunk_rows_for(const Config& cfg, size_t max_rows, size_t logit_bytes) {
  const int64_t set = cfg.train.loss_chunk_tokens;
  const size_t rows = set > 0 ? size_t(set)
                              : std::max<size_t>(1, (size_t(256) << 20) /
                                                        (size_t(cfg.model.vocab_size) * logit_bytes));
  return int(std::min(rows, max_rows));
}
}  // namespace

template <typename T, typename A>
Transformer<T, A>::Transformer(const Config& cfg, Backend<T, A>& be, int max_seqs, Comm* ep)
    : cfg_(cfg), be_(be), max_seqs_(max_seqs), arena_(be) {
  const ModelConfig& mc = cfg.model;
  const int D = mc.hidden;
  embed_ = params_.add("embed", {mc.vocab_size, D}, ParamInit::Normal, true);
  layers_.resize(mc.layers);
  for (int l = 0; l < mc.layers; ++l) {
    Layer& L = layers_[l];
    const std::string p = "layers." + std::to_string(l);
    L.ln1 = params_.add(p + ".ln1", {D}, ParamInit::Ones, false);
    L.attn = std::make_unique<Attention<T, A>>(params_, p + ".attn", mc);
    L.ln2 = params_.add(p + ".ln2", {D}, ParamInit::Ones, false);
    if (l < mc.first_dense_layers) {
      L.dense = std::make_unique<SwiGluMlp<T, A>>(params_, p + ".mlp", D, mc.dense_intermediate);
    } else {
      L.moe = std::make_unique<MoeLayer<T, A>>(params_, p + ".moe", cfg, ep);
      moe_index_.push_back(l);
    }
  }
  lnf_ = params_.add("final_norm", {D}, ParamInit::Ones, false);
  head_ = params_.add("lm_head", {mc.vocab_size, D}, ParamInit::Normal, true);
  params_.finalize(be);

  const size_t N = size_t(max_seqs) * mc.seq_len;
  size_t scratch_bytes = 0;
  // The norm outputs (elementwise from the kept stream) are redone under
  // selective and full, mid under full: one set for every layer, taken
  // first (layers/recompute.h). Every layer keeps its input resid.
  Activations acts(arena_, cfg.train.recompute);
  const bool redo_norms = acts.selective_or_full(), full = acts.full();
  if (redo_norms) {
    acts.redo(norms_.ln1_out, N * D);
    acts.redo(norms_.rstd1, N);
    acts.redo(norms_.ln2_out, N * D);
    acts.redo(norms_.rstd2, N);
    if (full) acts.redo(norms_.mid, N * D);
  }
  for (Layer& L : layers_) {
    acts.begin_layer();
    acts.keep(L.resid, N * D);
    if (!redo_norms) {
      acts.keep(L.ln1_out, N * D);
      acts.keep(L.rstd1, N);
    }
    if (!full) acts.keep(L.mid, N * D);
    if (!redo_norms) {
      acts.keep(L.ln2_out, N * D);
      acts.keep(L.rstd2, N);
    }
    L.attn->allocate(acts, max_seqs);
    scratch_bytes = std::max(scratch_bytes, L.attn->backward_scratch_bytes(max_seqs));
    if (L.dense) {
      L.dense->allocate(acts, int(N));
      scratch_bytes = std::max(scratch_bytes, L.dense->backward_scratch_bytes(int(N)));
    }
    if (L.moe) {
      L.moe->allocate(acts, int(N));
      scratch_bytes = std::max(scratch_bytes, L.moe->backward_scratch_bytes(int(N)));
    }
  }
  acts.commit();
  for (Layer& L : layers_) {
    if (redo_norms) {
      L.ln1_out = norms_.ln1_out, L.rstd1 = norms_.rstd1;
      L.ln2_out = norms_.ln2_out, L.rstd2 = norms_.rstd2;
    }
    if (full) L.mid = norms_.mid;
  }
  loss_chunk_ = chunk_rows_for(cfg, N, sizeof(A));
  scratch_bytes = std::max(scratch_bytes, Scratch::bytes<A>(size_t(loss_chunk_) * mc.vocab_size));
  scratch_.allocate(arena_, scratch_bytes);
  tokens_ = arena_.alloc<int32_t>(N);
  targets_ = arena_.alloc<int32_t>(N);
  resid_final_ = arena_.alloc<T>(N * D);
  lnf_out_ = arena_.alloc<A>(N * D);
  rstdf_ = arena_.alloc<T>(N);
  losses_ = arena_.alloc<T>(N);
  tmp_ = arena_.alloc<A>(N * D);
  dres_ = arena_.alloc<T>(N * D);
  dnorm_ = arena_.alloc<A>(N * D);
}

template <typename T, typename A>
Transformer<T, A>::~Transformer() = default;

template <typename T, typename A>
const Router<T, A>& Transformer<T, A>::router(int m) const {
  return layers_.at(moe_index_.at(m)).moe->router();
}

template <typename T, typename A>
ForwardResult Transformer<T, A>::forward(const int32_t* tokens, const int32_t* targets, int B,
                                         const ForwardOptions& opt) {
  MOE_CHECK(B >= 1 && B <= max_seqs_, "forward: batch exceeds the allocated activations");
  const ModelConfig& mc = cfg_.model;
  const int S = mc.seq_len, D = mc.hidden, V = mc.vocab_size, E = cfg_.moe.n_routed;
  const int N = B * S;
  const bool training = opt.training;
  MOE_CHECK(training || (opt.ce_grad_scale == 0.0 && opt.aux_grad_scale == 0.0),
            "forward: gradient scales given to a forward-only pass (set ForwardOptions::training)");

  AuxLossSpec aux;
  const AuxLossSpec* aux_ptr = nullptr;
  if (training && cfg_.balance.method == BalanceMethod::AuxLoss) {
    const bool per_seq = cfg_.balance.aux_scope == AuxScope::Sequence;
    aux = {cfg_.balance.aux_alpha, per_seq ? B : 1, per_seq ? S : N, opt.aux_grad_scale, false};
    aux_ptr = &aux;
  } else if (training && cfg_.balance.method == BalanceMethod::LossFree &&
             cfg_.balance.seq_aux_alpha > 0) {
    // DeepSeek-V3's complementary loss: per sequence, normalised affinities,
    // selections made with the biased scores (the routing's own).
    aux = {cfg_.balance.seq_aux_alpha, B, S, opt.aux_grad_scale, true};
    aux_ptr = &aux;
  }

  // The embedding ops index the table with these ids unchecked (a kernel
  // cannot throw) and the loss reads the targets' logits: an id outside the
  // vocabulary is refused here, once for every backend, before any op.
  for (int n = 0; n < N; ++n)
    for (const auto& [ids, what] : {std::pair{tokens, "token"}, std::pair{targets, "target"}})
      if (ids[n] < 0 || ids[n] >= V)
        throw DataError("forward: " + std::string(what) + " id " + std::to_string(ids[n]) +
                        " at position " + std::to_string(n) + " is outside the vocabulary [0, " +
                        std::to_string(V) + ")");
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
      const float* bias = bias_ ? bias_ + size_t(m) * E : nullptr;
      r.aux_loss_sum += L.moe->forward(be_, params_, tmp_, L.ln2_out, N, bias,
                                       counts, opt.fanout, aux_ptr);
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

  // LM head and loss, chunk by chunk: the loss kernel turns a chunk's logits
  // into their gradient in place, which in training goes straight through the
  // head's backward (dW accumulated in T, dnorm_ rows of the chunk written).
  const T* W = params_.param(head_);
  for (int c0 = 0; c0 < N; c0 += loss_chunk_) {
    const int n = std::min(loss_chunk_, N - c0);
    const size_t row = size_t(c0) * D;
    scratch_.reset();
    A* logits = scratch_.take<A>(size_t(n) * V);
    be_.linear_forward(logits, lnf_out_ + row, W, n, D, V);
    be_.cross_entropy(losses_ + c0, training ? logits : nullptr, logits, targets_ + c0, n, V,
                      opt.ce_grad_scale);
    if (training)
      be_.linear_backward(dnorm_ + row, params_.grad(head_), logits, lnf_out_ + row, W, n, D, V,
                          false);
  }
  r.loss_sum = be_.sum(losses_, N);
  last_B_ = B;
  grad_ready_ = training;
  return r;
}

template <typename T, typename A>
void Transformer<T, A>::backward() {
  MOE_CHECK(grad_ready_, "backward() needs a preceding training forward");
  grad_ready_ = false;
  const ModelConfig& mc = cfg_.model;
  const int B = last_B_, D = mc.hidden, N = B * mc.seq_len;

  // dres_ (T) is the gradient of the residual stream; each sub-block adds
  // its input gradient to it through its norm, whose backward also leaves
  // dres_ as an activation gradient in tmp_: the output gradient of the
  // sub-block below. dnorm_ starts as the final norm's output gradient (from
  // forward). Every sub-block's backward has the whole scratch to itself.
  be_.zero(dres_, size_t(N) * D * sizeof(T));
  be_.rmsnorm_backward(dres_, tmp_, params_.grad(lnf_), dnorm_, resid_final_, params_.param(lnf_),
                       rstdf_, N, D);
  for (size_t i = layers_.size(); i-- > 0;) {
    Layer& L = layers_[i];
    recompute(L, B);
    scratch_.reset();
    if (L.dense)
      L.dense->backward(be_, params_, scratch_, dnorm_, tmp_, L.ln2_out, N, false);
    else
      L.moe->backward(be_, params_, scratch_, dnorm_, tmp_, L.ln2_out, N);
    be_.rmsnorm_backward(dres_, tmp_, params_.grad(L.ln2), dnorm_, L.mid, params_.param(L.ln2),
                         L.rstd2, N, D);
    scratch_.reset();
    L.attn->backward(be_, params_, scratch_, dnorm_, tmp_, L.ln1_out, B);
    be_.rmsnorm_backward(dres_, i > 0 ? tmp_ : nullptr, params_.grad(L.ln1), dnorm_, L.resid,
                         params_.param(L.ln1), L.rstd1, N, D);
  }
  be_.embedding_backward(params_.grad(embed_), dres_, tokens_, N, D);
}

// Each redone value comes from the op and inputs that made it in forward, so
// its bits are the same: the norm outputs from rmsnorm_forward on the kept
// stream, which computes each row as residual_rmsnorm_forward does from the
// sum it stored; under full, mid from the same fused add on the attention
// output rerun from resid. The attention output goes to dnorm_ (free here:
// tmp_ holds the gradient from above).
template <typename T, typename A>
void Transformer<T, A>::recompute(Layer& L, int B) {
  const Recompute policy = cfg_.train.recompute;
  if (policy == Recompute::None) return;
  const ModelConfig& mc = cfg_.model;
  const int D = mc.hidden, N = B * mc.seq_len;
  be_.rmsnorm_forward(L.ln1_out, L.rstd1, L.resid, params_.param(L.ln1), N, D, mc.norm_eps);
  if (policy == Recompute::Full) {
    L.attn->forward(be_, params_, dnorm_, L.ln1_out, B);
    be_.residual_rmsnorm_forward(L.mid, L.ln2_out, L.rstd2, L.resid, dnorm_,
                                 params_.param(L.ln2), N, D, mc.norm_eps);
  } else {
    be_.rmsnorm_forward(L.ln2_out, L.rstd2, L.mid, params_.param(L.ln2), N, D, mc.norm_eps);
  }
  if (L.dense)
    L.dense->recompute(be_, params_, L.ln2_out, N);
  else
    L.moe->recompute(be_, params_, L.ln2_out, N);
}

template <typename T, typename A>
void Transformer<T, A>::set_device_ep_comm(Comm* ep_device) {
  for (Layer& L : layers_)
    if (L.moe) L.moe->set_device_ep_comm(ep_device);
}

template <typename T, typename A>
void Transformer<T, A>::set_node_layout(const std::vector<int>& node_of_rank) {
  for (Layer& L : layers_)
    if (L.moe) L.moe->set_node_layout(node_of_rank);
}

template class Transformer<float>;
template class Transformer<double>;
template class Transformer<float, bf16>;

}  // namespace moe
