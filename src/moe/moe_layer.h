// DeepSeekMoE layer: y = Shared(x) + sum_{i in TopK} g_i * Expert_i(x).
// The n_shared shared experts are fused into one SwiGLU of width
// n_shared * expert_intermediate; the routed experts are SwiGLUs of width
// expert_intermediate, run as one grouped GEMM per projection over the tokens
// the dispatcher groups by expert. Dropless. With expert parallelism (ep: the
// EP group) this rank holds only experts [first, first + E/P) and exchanges
// token rows with the other ranks of its group.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "config/config.h"
#include "layers/swiglu_mlp.h"
#include "moe/dispatcher.h"
#include "moe/router.h"

namespace moe {

// One routed expert's projection as a named parameter: "<layer>.experts.<e>.w13"
// [2 Fe, D] (W1 and W3 stacked) or ".w2" [D, Fe], e the global expert index.
// The one definition the layer registers and the checkpoint gathers by.
struct ExpertParam {
  std::string name;
  std::vector<int64_t> shape;
};
ExpertParam expert_param(const std::string& layer_prefix, int expert, bool w13, int D, int Fe);
// The expert region of the parameter set of a rank holding experts
// [first, first + count): per MoE layer ("layers.<l>.moe"), the w13 of each
// of them, then their w2, in registration order.
std::vector<ExpertParam> expert_region_layout(const Config& cfg, int first, int count);

template <typename T, typename A = T>
class MoeLayer {
 public:
  MoeLayer(ParamSet<T>& ps, const std::string& prefix, const Config& cfg, Comm* ep = nullptr);
  // The activations backward reads, for up to max_tokens tokens: the expert
  // intermediate rows he are redone under selective; under full everything
  // but the routing decision (expert ids, gates) and the dispatch plan.
  void allocate(Activations& acts, int max_tokens);
  // Scratch that backward takes (its own, the shared experts' and the router's).
  size_t backward_scratch_bytes(int max_tokens) const;

  // y[N,D] overwritten. bias: fp32 [E] selection bias. counts: if non-null,
  // += this micro-batch's tokens per expert (int64 [E]). fanout: if non-null,
  // += its tokens' fan-out histograms with expert parallelism (see
  // Dispatcher::plan). Returns the summed aux loss of the micro-batch's
  // groups (0 without aux).
  double forward(Backend<T, A>& be, const ParamSet<T>& ps, A* y, const A* x, int N,
                 const float* bias, int64_t* counts, int64_t* fanout, const AuxLossSpec* aux);
  // Before backward: what the policy did not keep, from the same input x
  // (the caller restores it first). The routing decision and the plan of the
  // training forward are reused: nothing is routed, planned or counted again,
  // hence no bias, counts or aux parameter. Under full this reruns the
  // shared experts, the router's scores, the dispatch (with expert
  // parallelism, its all-to-alls: every rank of the EP group recomputes the
  // same layer at the same point of its backward), the expert GEMMs and the
  // gathering of their outputs; not the combine.
  void recompute(Backend<T, A>& be, const ParamSet<T>& ps, const A* x, int N);
  // dx[N,D] overwritten.
  void backward(Backend<T, A>& be, ParamSet<T>& ps, Scratch& scratch, A* dx, const A* dy,
                const A* x, int N);

  const Router<T, A>& router() const { return router_; }
  // See Dispatcher::set_device_comm.
  void set_device_ep_comm(Comm* ep_device) { dispatcher_.set_device_comm(ep_device); }
  // See Dispatcher::set_node_layout.
  void set_node_layout(const std::vector<int>& node_of_rank) {
    dispatcher_.set_node_layout(node_of_rank);
  }

 private:
  int D_, E_, K_, Fe_;
  bool with_aux_;
  Recompute policy_ = Recompute::None;
  // Rows of the local experts, expert-major, for up to this many tokens.
  size_t expert_rows_capacity(int max_tokens) const;

  std::unique_ptr<SwiGluMlp<T, A>> shared_;  // null when n_shared == 0
  Router<T, A> router_;
  Dispatcher<T, A> dispatcher_;
  typename ParamSet<T>::Id w13_first_, w2_first_;  // local experts follow contiguously
  // Activations: expert-major rows of the local experts (e), and the expert
  // outputs back in this rank's token order (y_local_).
  A *xe_ = nullptr, *a13e_ = nullptr, *he_ = nullptr, *ye_ = nullptr;
  const A* y_local_ = nullptr;
};

}  // namespace moe
