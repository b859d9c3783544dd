// Our model as Hugging Face transformers' `glm4_moe` (Glm4MoeForCausalLM)
// and back (moe-export, docs/export.md). The architectures are the same:
// pre-norm RMSNorm blocks, rotate-half RoPE on the whole head, multi-head
// attention without biases, SwiGLU MLPs, the first layers dense, then
// DeepSeekMoE layers with a sigmoid router whose selection-only bias is
// `e_score_correction_bias`, top-K within the `topk_group` best of `n_group`
// groups, shared experts fused into one MLP, and an untied LM head. Tensors map one to one except our fused
// matrices, which are row blocks of theirs: wqkv = [q; k; v] and
// w13 = [gate; up] (all [out, in], no transposition).
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "config/config.h"
#include "train/safetensors.h"

namespace moe {

// Throws ConfigError naming the key when glm4_moe cannot express the model:
// the softmax gate, the multiplicative bias, no shared experts, fewer than
// two routed experts, or groups of one expert.
void check_glm4_moe_exportable(const Config& cfg);

// Group-limited routing: training never picks a dropped group's expert
// (-inf), glm4_moe sets its key to 0.0 before the final top-K, so a kept key
// s + b below 0 would lose to it. Adding one constant c to a layer's bias
// moves every key by c and every group score by 2c and leaves the gates
// (unbiased s) alone, so it changes nothing in real arithmetic; the export
// picks c so that every shifted bias is >= kGlm4MoeBiasFloor, a positive
// normal number in fp32, bf16 and fp16, and then every kept key s + b + c
// (s >= 0, even a sigmoid that underflowed to 0) is above the 0.0
// (docs/export.md, "Group-limited routing").
inline constexpr float kGlm4MoeBiasFloor = 0x1p-14f;

// True when the export shifts the bias: groups limit the routing
// (n_group > 1, topk_group < n_group); otherwise glm4_moe masks nothing.
bool glm4_moe_shifts_bias(const Config& cfg);

// The shift c of one layer's bias [n]: 0 when its smallest entry is already
// >= kGlm4MoeBiasFloor, else floor - min b rounded to float, stepped up an
// ulp at a time while float(min b + c) < floor.
float glm4_moe_bias_shift(const float* bias, int n);

// Token ids of the tokenizer, for config.json and generation_config.json
// (-1: none).
struct SpecialTokens {
  int bos = -1, eos = -1, pad = -1;
};

// config.json of the exported model.
nlohmann::ordered_json glm4_moe_config(const Config& cfg, const SpecialTokens& ids,
                                       const std::string& torch_dtype);

// The config a glm4_moe config.json describes, over `defaults` (the train,
// data, ... sections). Throws ConfigError naming the config.json key for
// what our model cannot express (GQA, biases, qk-norm, partial rotary, tied
// embeddings, another activation or RoPE type) and for n_group / topk_group
// that the config's validation would refuse. A shifted bias imports as it
// is: a constant shift changes no selection in training either.
Config config_from_glm4_moe(const nlohmann::json& hf, Config defaults);

// One tensor of the exported model: its name, shape and fp32 values (values
// of F64 checkpoints are rounded to fp32).
struct HfTensor {
  std::string name;
  std::vector<int64_t> shape;
  std::vector<float> values;
  bool keep_fp32 = false;  // e_score_correction_bias: fp32 whatever the dtype
};

// Our model.safetensors (checkpoint) as glm4_moe tensors, in layer order,
// each router bias shifted by glm4_moe_bias_shift when glm4_moe_shifts_bias
// (the shifts, one per MoE layer, in `bias_shifts` if given; empty when
// none). Throws DataError naming a tensor that is missing or has another shape.
std::vector<HfTensor> to_glm4_moe(const SafeTensorFile& ours, const Config& cfg,
                                  std::vector<float>* bias_shifts = nullptr);

// glm4_moe tensors (name -> tensor, any float dtype) as our model.safetensors
// tensors (F32), router biases included. Throws DataError naming a missing
// or misshapen tensor, or one left over.
SafeTensorFile from_glm4_moe(const std::map<std::string, SafeTensor>& hf, const Config& cfg);

}  // namespace moe
