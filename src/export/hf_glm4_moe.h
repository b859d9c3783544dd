// Our model as Hugging Face transformers' `glm4_moe` (Glm4MoeForCausalLM)
// and back (moe-export, docs/export.md). The architectures are the same:
// pre-norm RMSNorm blocks, rotate-half RoPE on the whole head, multi-head
// attention without biases, SwiGLU MLPs, the first layers dense, then
// DeepSeekMoE layers with a sigmoid router whose selection-only bias is
// `e_score_correction_bias`, ungrouped top-K, shared experts fused into one
// MLP, and an untied LM head. Tensors map one to one except our fused
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
// two routed experts.
void check_glm4_moe_exportable(const Config& cfg);

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
// what our model cannot express (grouped routing, GQA, biases, qk-norm,
// partial rotary, tied embeddings, another activation or RoPE type).
Config config_from_glm4_moe(const nlohmann::json& hf, Config defaults);

// One tensor of the exported model: its name, shape and fp32 values (values
// of F64 checkpoints are rounded to fp32).
struct HfTensor {
  std::string name;
  std::vector<int64_t> shape;
  std::vector<float> values;
  bool keep_fp32 = false;  // e_score_correction_bias: fp32 whatever the dtype
};

// Our model.safetensors (checkpoint) as glm4_moe tensors, in layer order.
// Throws DataError naming a tensor that is missing or has another shape.
std::vector<HfTensor> to_glm4_moe(const SafeTensorFile& ours, const Config& cfg);

// glm4_moe tensors (name -> tensor, any float dtype) as our model.safetensors
// tensors (F32), router biases included. Throws DataError naming a missing
// or misshapen tensor, or one left over.
SafeTensorFile from_glm4_moe(const std::map<std::string, SafeTensor>& hf, const Config& cfg);

}  // namespace moe
