// Decoder-only MoE transformer (docs/design.md section 2), forward and backward
// written once against the Backend interface. Pre-norm:
//   x = Embed[token]; per layer x += Attn(RMSNorm(x)); x += FFN(RMSNorm(x));
//   logits = Head(RMSNorm(x)), untied; loss = token cross-entropy.
// FFN is a dense SwiGLU for the first `first_dense_layers` layers and a
// DeepSeekMoE layer after. All activations are allocated once, for up to
// `max_seqs` sequences per forward.
//
// Memory: each layer keeps the activations its backward needs, except those
// train.recompute redoes before the layer's backward (layers/recompute.h:
// they share one region across layers); gradient
// scratch is one Scratch shared by all layers (one layer runs backward at a
// time), which also holds the logits of one loss chunk: the LM head and the
// cross-entropy run over chunks of train.loss_chunk_tokens tokens, so the
// logits are never whole in memory. In a training forward each chunk's
// logit gradient goes straight through the head's backward (dW in T, and
// the gradient of the final norm's output), so backward() starts there.
//
// Types: the residual stream, its gradient and every statistic are T; norm
// outputs, sub-block outputs and their gradients are activations (A).
#pragma once

#include <memory>
#include <vector>

#include "config/config.h"
#include "layers/swiglu_mlp.h"
#include "model/attention.h"
#include "moe/moe_layer.h"

namespace moe {

struct ForwardOptions {
  // A training forward: keeps what backward() needs and writes the loss
  // gradient with the scales below. False: forward only (evaluation).
  bool training = false;
  // d(objective)/d(sum of token losses); training only.
  double ce_grad_scale = 0.0;
  // d(objective)/d(sum of aux group losses); training with balance.method
  // aux_loss, or loss_free with balance.seq_aux_alpha > 0, only.
  double aux_grad_scale = 0.0;
  // If non-null: += tokens per expert, int64 [moe_layers * n_routed]. Only
  // this forward counts: the recomputation in backward() cannot (it reuses
  // the routing and takes no counts).
  int64_t* counts = nullptr;
  // If non-null (with expert parallelism): += the tokens' communication
  // fan-out histograms, summed over MoE layers, int64 [2][top_k + 1]:
  // tokens by the number of distinct EP ranks, then of distinct nodes, their
  // routed experts live on (moe/fanout.h; nodes only after set_node_layout).
  int64_t* fanout = nullptr;
};

struct ForwardResult {
  double loss_sum = 0.0;      // sum of the token cross-entropies
  double aux_loss_sum = 0.0;  // sum over MoE layers and groups of alpha * sum_i f_i P_i
  int64_t tokens = 0;
};

template <typename T, typename A = T>
class Transformer {
 public:
  // ep: the expert-parallel group of this rank (null: every expert is local).
  Transformer(const Config& cfg, Backend<T, A>& be, int max_seqs, Comm* ep = nullptr);
  ~Transformer();

  ParamSet<T>& params() { return params_; }
  const ParamSet<T>& params() const { return params_; }
  void init_params(uint64_t seed) { params_.init(seed, cfg_.model.init_std); }
  int moe_layers() const { return int(moe_index_.size()); }
  const Config& config() const { return cfg_; }

  // The selection bias the routers read: fp32 backend memory [moe_layers *
  // n_routed], borrowed from its owner (Balancer::device_bias); it must
  // outlive the model's forwards. Null (the default): select on the scores
  // alone, which is the bias's start value.
  void use_router_bias(const float* bias) { bias_ = bias; }

  // B sequences of seq_len tokens (host int32 [B*S]) and their next-token
  // targets. A training forward (opt.training) keeps what backward() needs.
  ForwardResult forward(const int32_t* tokens, const int32_t* targets, int B,
                        const ForwardOptions& opt);
  // Accumulates parameter gradients of the last forward's objective (the LM
  // head's were accumulated by the training forward itself).
  void backward();
  // Rows of the LM head + cross-entropy chunks.
  int loss_chunk_rows() const { return loss_chunk_; }
  // Bytes of the shared scratch (one layer's backward, one loss chunk).
  size_t scratch_bytes() const { return scratch_.capacity(); }

  // Every MoE layer exchanges its rows over `ep_device` (an EP communicator
  // on backend memory, e.g. NcclComm) instead of through host memory.
  void set_device_ep_comm(Comm* ep_device);
  // The node of each rank of this rank's EP group: fan-out is then also
  // counted in nodes (ForwardOptions::fanout).
  void set_node_layout(const std::vector<int>& node_of_rank);

  // Router state of MoE layer m after the last forward (tests, diagnostics;
  // under recompute full the scores are those of the last layer computed).
  const Router<T, A>& router(int m) const;

 private:
  struct Layer {
    typename ParamSet<T>::Id ln1, ln2;
    std::unique_ptr<Attention<T, A>> attn;
    std::unique_ptr<SwiGluMlp<T, A>> dense;
    std::unique_ptr<MoeLayer<T, A>> moe;
    T* resid = nullptr;  // the layer's input: always kept
    // Kept per layer, or (those the policy redoes) the shared set norms_.
    T *rstd1 = nullptr, *mid = nullptr, *rstd2 = nullptr;
    A *ln1_out = nullptr, *ln2_out = nullptr;
  };
  struct Norms {
    A *ln1_out = nullptr, *ln2_out = nullptr;
    T *rstd1 = nullptr, *rstd2 = nullptr, *mid = nullptr;
  };
  // Before a layer's backward: what the policy did not keep (B sequences).
  void recompute(Layer& L, int B);

  Config cfg_;
  Backend<T, A>& be_;
  int max_seqs_;
  int loss_chunk_ = 0;
  ParamSet<T> params_;
  Arena arena_;
  Scratch scratch_;
  typename ParamSet<T>::Id embed_, lnf_, head_;
  std::vector<Layer> layers_;
  Norms norms_;  // the redone norm outputs (full: and mid), one set for all layers
  std::vector<int> moe_index_;  // layer index of each MoE layer
  const float* bias_ = nullptr;  // [moe_layers * E] fp32, borrowed (use_router_bias)
  int32_t *tokens_ = nullptr, *targets_ = nullptr;
  T *resid_final_ = nullptr, *rstdf_ = nullptr, *losses_ = nullptr;
  A* lnf_out_ = nullptr;
  A* tmp_ = nullptr;    // a sub-block's output, added to the residual stream
  T* dres_ = nullptr;   // gradient of the residual stream
  A* dnorm_ = nullptr;  // gradient of a norm's output (after a training forward: the final norm's)
  int last_B_ = 0;
  bool grad_ready_ = false;
};

}  // namespace moe
