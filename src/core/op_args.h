// The argument structs of Backend ops that their kernel launchers take too
// (src/backend/backend.h, kernels/*.h), and the two config enums they carry.
// Here, below both, so that kernels/ never includes src/backend/.
#pragma once

#include <cstddef>
#include <cstdint>

namespace moe {

// Router gate: sigmoid of each logit, or softmax over the experts (moe.gate).
enum class GateFn { Sigmoid, Softmax };
// How the Loss-Free bias enters the selection key: s + b or s * b (balance.bias_mode).
enum class BiasMode { Additive, Multiplicative };

struct AdamWParams {
  double lr = 1e-3;
  double beta1 = 0.9;
  double beta2 = 0.95;
  double eps = 1e-8;
  double weight_decay = 0.0;
  // Weight decay applies to elements [0, decay_count) only, so one call (one
  // launch) updates the decayed matrices and the undecayed rest together.
  size_t decay_count = SIZE_MAX;
  int64_t step = 1;          // 1-based, for bias correction
  double grad_scale = 1.0;   // multiplies the gradient first (global-norm clipping)
};

// Which experts a token picked and with what gate; the router's output.
struct RouteSpec {
  int E = 0;                                 // routed experts
  int K = 0;                                 // experts per token
  BiasMode bias_mode = BiasMode::Additive;   // s + b or s * b decides selection
  bool normalize = false;                    // gates /= sum of selected scores
  double route_scale = 1.0;                  // gates *= route_scale
  // Group-limited routing (DeepSeek-V3's n_group / topk_group): the E experts
  // form n_group consecutive groups of E / n_group; a token keeps the
  // topk_group groups with the largest sum of their two best keys and picks
  // its K experts among those groups only. topk_group == n_group (1 and 1 by
  // default) keeps every group: plain top-K, the group stage skipped.
  int n_group = 1;
  int topk_group = 1;
};

// Groups limit the routing only when some group is dropped: only then does
// topk_route's group stage do anything, and only then does moe-export shift
// the router bias (export/hf_glm4_moe.h).
constexpr bool groups_limit_routing(int n_group, int topk_group) {
  return n_group > 1 && topk_group < n_group;
}

// A balance loss over `groups` consecutive groups of `group_len` tokens
// (aux_loss_forward_backward): per group L_g = alpha sum_i f_i P_i with
// f_i = E/(K group_len) * #(tokens of g selecting i) (no gradient) and
// P_i = mean_t p_ti. p = s (the paper's Eq. 2, balance.method aux_loss), or,
// with normalize_affinities, p_ti = s_ti / sum_j s_tj (DeepSeek-V3's
// complementary sequence-wise loss, balance.seq_aux_alpha).
struct AuxLossArgs {
  int groups = 0;
  int group_len = 0;
  int E = 0;                          // routed experts
  int K = 0;                          // experts per token
  double alpha = 0.0;
  double grad_scale = 0.0;            // dscores += grad_scale * d(sum_g L_g)/d(scores)
  bool normalize_affinities = false;  // p = s / sum_j s_j per token
};

}  // namespace moe
