// Decoder-only MoE transformer (DESIGN.md section 2), forward and backward
// written once against the Backend interface. Pre-norm:
//   x = Embed[token]; per layer x += Attn(RMSNorm(x)); x += FFN(RMSNorm(x));
//   logits = Head(RMSNorm(x)), untied; loss = token cross-entropy.
// FFN is a dense SwiGLU for the first `first_dense_layers` layers and a
// DeepSeekMoE layer after. All activations are allocated once, for up to
// `max_seqs` sequences per forward.
#pragma once

#include <memory>
#include <vector>

#include "config/config.h"
#include "model/attention.h"
#include "model/moe_layer.h"
#include "model/swiglu_mlp.h"

namespace moe {

struct ForwardOptions {
  // d(objective)/d(sum of token losses). 0: forward only (no backward after).
  double ce_grad_scale = 0.0;
  // d(objective)/d(sum of aux group losses); used when balance.method is
  // aux_loss and ce_grad_scale != 0.
  double aux_grad_scale = 0.0;
  // If non-null: += tokens per expert, int64 [moe_layers * n_routed].
  int64_t* counts = nullptr;
};

struct ForwardResult {
  double loss_sum = 0.0;      // sum of the token cross-entropies
  double aux_loss_sum = 0.0;  // sum over MoE layers and groups of alpha * sum_i f_i P_i
  int64_t tokens = 0;
};

template <typename T>
class Transformer {
 public:
  // ep: the expert-parallel group of this rank (null: every expert is local).
  Transformer(const Config& cfg, Backend<T>& be, int max_seqs, Comm* ep = nullptr);
  ~Transformer();

  ParamSet<T>& params() { return params_; }
  const ParamSet<T>& params() const { return params_; }
  void init_params(uint64_t seed) { params_.init(seed, cfg_.model.init_std); }
  int moe_layers() const { return int(moe_index_.size()); }
  const Config& config() const { return cfg_; }

  // Selection bias of every MoE layer, host fp32 [moe_layers * n_routed].
  void set_router_bias(const std::vector<float>& bias);

  // B sequences of seq_len tokens (host int32 [B*S]) and their next-token
  // targets. With ce_grad_scale != 0, keeps what backward() needs.
  ForwardResult forward(const int32_t* tokens, const int32_t* targets, int B,
                        const ForwardOptions& opt);
  // Accumulates parameter gradients of the last forward's objective.
  void backward();

  // Every MoE layer exchanges its rows over `ep_device` (an EP communicator
  // on backend memory, e.g. NcclComm) instead of through host memory.
  void set_device_ep_comm(Comm* ep_device);

  // Router state of MoE layer m after the last forward (tests, diagnostics).
  const Router<T>& router(int m) const;

 private:
  struct Layer {
    typename ParamSet<T>::Id ln1, ln2;
    std::unique_ptr<Attention<T>> attn;
    std::unique_ptr<SwiGluMlp<T>> dense;
    std::unique_ptr<MoeLayer<T>> moe;
    T *resid = nullptr, *ln1_out = nullptr, *rstd1 = nullptr;  // activations
    T *mid = nullptr, *ln2_out = nullptr, *rstd2 = nullptr;
  };

  Config cfg_;
  Backend<T>& be_;
  int max_seqs_;
  ParamSet<T> params_;
  Arena<T> arena_;
  typename ParamSet<T>::Id embed_, lnf_, head_;
  std::vector<Layer> layers_;
  std::vector<int> moe_index_;  // layer index of each MoE layer
  float* bias_ = nullptr;       // [moe_layers * E] fp32
  int32_t *tokens_ = nullptr, *targets_ = nullptr;
  T *resid_final_ = nullptr, *lnf_out_ = nullptr, *rstdf_ = nullptr;
  T *logits_ = nullptr, *losses_ = nullptr;  // logits hold dlogits after a training forward
  T *tmp_ = nullptr, *dres_ = nullptr, *dnorm_ = nullptr;
  int last_B_ = 0;
  bool grad_ready_ = false;
};

}  // namespace moe
