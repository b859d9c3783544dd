// The MoE router: logits = x W_r^T, scores s = sigmoid or softmax (fp32 on
// every backend that trains in reduced precision), top-K selection on s + b
// (or s * b) where the bias b only selects, gates = unbiased s. When the
// auxiliary-loss baseline is on, the router also owns that loss's gradient.
#pragma once

#include <string>

#include "config/config.h"
#include "layers/params.h"
#include "layers/recompute.h"
#include "layers/scratch.h"

namespace moe {

// The balance loss of one micro-batch: `groups` groups of `group_len` tokens
// (a sequence each, or one group for the whole micro-batch); grad_scale is
// d(objective)/d(sum of group losses). The paper's aux loss (Eq. 2), or with
// normalize_affinities DeepSeek-V3's complementary sequence-wise loss
// (balance.seq_aux_alpha beside Loss-Free): core/op_args.h AuxLossArgs.
struct AuxLossSpec {
  double alpha = 0.0;
  int groups = 0;
  int group_len = 0;
  double grad_scale = 0.0;
  bool normalize_affinities = false;
};

// Input and input gradient are activations (A); everything the router
// computes is T.
template <typename T, typename A = T>
class Router {
 public:
  Router(ParamSet<T>& ps, const std::string& prefix, int D, const MoeConfig& mc, BiasMode mode);
  // Logits are dead after forward (redone under selective and full); scores
  // and the aux gradient are redone under full; the selection and gates are
  // always kept.
  void allocate(Activations& acts, int max_tokens, bool with_aux_loss);
  size_t backward_scratch_bytes(int max_tokens) const;

  // Routes N tokens. bias: fp32 [E] backend memory. aux: null or the aux-loss
  // spec. Returns the summed aux loss of the groups (0 without aux).
  double forward(Backend<T, A>& be, const ParamSet<T>& ps, const A* x, int N, const float* bias,
                 const AuxLossSpec* aux);
  // Before backward, under full: logits, scores and the aux loss's score
  // gradient from the same input x and the kept selection. The routing is
  // not redecided (no top-K) and no aux loss value comes out: what the
  // training forward counted and returned stays its own.
  void recompute(Backend<T, A>& be, const ParamSet<T>& ps, const A* x, int N);
  // dx += router input gradient; dW_r accumulated. dgates [N,K] from combine.
  void backward(Backend<T, A>& be, ParamSet<T>& ps, Scratch& scratch, A* dx, const T* dgates,
                const A* x, int N);

  const int32_t* expert_idx() const { return idx_; }
  const T* gates() const { return gates_; }
  // Under recompute full, scores are those of the layer computed last.
  const T* scores() const { return scores_; }
  const RouteSpec& spec() const { return spec_; }

 private:
  int D_;
  GateFn fn_;
  RouteSpec spec_;
  typename ParamSet<T>::Id w_;
  Recompute policy_ = Recompute::None;
  bool aux_active_ = false;  // the last forward stored an aux-loss gradient
  AuxLossSpec aux_;          // its spec (recompute redoes the gradient)
  T *logits_ = nullptr, *scores_ = nullptr, *gates_ = nullptr;
  int32_t* idx_ = nullptr;
  T* dscores_aux_ = nullptr;  // the aux loss's score gradient, from forward to backward

  AuxLossArgs aux_args() const {
    return {aux_.groups, aux_.group_len, spec_.E, spec_.K, aux_.alpha, aux_.grad_scale,
            aux_.normalize_affinities};
  }
};

}  // namespace moe
