#include "model/flops.h"

namespace moe {

namespace {

// Parameters of the model with `routed_per_layer` routed experts in every MoE
// layer, the embedding table left out.
int64_t parameters_without_embedding(const ModelConfig& m, const MoeConfig& moe,
                                     int64_t routed_per_layer) {
  const int64_t D = m.hidden;
  const int64_t attention = 4 * D * D;  // wqkv [3D, D] + wo [D, D]
  const int64_t norms = 2 * D;          // ln1, ln2
  const int64_t dense_ffn = 3 * D * m.dense_intermediate;                // w13 [2F, D] + w2 [D, F]
  const int64_t expert = 3 * D * moe.expert_intermediate;                // one SwiGLU expert
  const int64_t moe_ffn = int64_t(moe.n_routed) * D                     // router [E, D]
                          + int64_t(moe.n_shared) * expert              // fused shared experts
                          + routed_per_layer * expert;
  const int64_t layers = int64_t(m.first_dense_layers) * (attention + norms + dense_ffn) +
                         int64_t(m.moe_layers()) * (attention + norms + moe_ffn);
  const int64_t head = D + int64_t(m.vocab_size) * D;  // final norm + LM head (untied)
  return layers + head;
}

}  // namespace

int64_t total_parameters(const ModelConfig& model, const MoeConfig& moe) {
  return int64_t(model.vocab_size) * model.hidden +
         parameters_without_embedding(model, moe, moe.n_routed);
}

int64_t active_parameters(const ModelConfig& model, const MoeConfig& moe) {
  return parameters_without_embedding(model, moe, moe.top_k);
}

int64_t train_flops_per_token(const ModelConfig& model, const MoeConfig& moe) {
  return 6 * active_parameters(model, moe) +
         12 * int64_t(model.layers) * model.hidden * model.seq_len;
}

}  // namespace moe
