// Parameter counts and the training FLOPs per token that MFU is measured
// against (moe-bench, docs/bench.md). Counted from the config by the same
// shapes the model registers (transformer.cpp and the layers it builds).
#pragma once

#include <cstdint>

#include "config/config.h"

namespace moe {

// Every parameter of the model (all experts, embedding and LM head).
int64_t total_parameters(const ModelConfig& model, const MoeConfig& moe);

// The parameters one token passes through: every parameter except the input
// embedding table (a lookup, no matmul), with only top_k of the n_routed
// experts of each MoE layer. Shared experts, router, attention, norms, dense
// FFN and LM head all count.
int64_t active_parameters(const ModelConfig& model, const MoeConfig& moe);

// Training FLOPs per token: 6 x active parameters (forward 2, backward 4 per
// multiply-add) + 12 x layers x hidden x seq_len (attention scores and
// weighted values, forward and backward, the PaLM appendix-B convention that
// does not halve for causal masking).
int64_t train_flops_per_token(const ModelConfig& model, const MoeConfig& moe);

}  // namespace moe
