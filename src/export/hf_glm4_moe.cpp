#include "export/hf_glm4_moe.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "core/error.h"
#include "core/op_args.h"

namespace moe {

namespace {

// One of our tensors and the glm4_moe tensors it is made of: consecutive
// row blocks (the whole tensor when there is one part).
struct Block {
  std::string ours;
  std::vector<int64_t> shape;                             // ours: [rows, cols] or [n]
  std::vector<std::pair<std::string, int64_t>> parts;     // glm4_moe name, rows
  bool router_bias = false;  // e_score_correction_bias: fp32, shifted for groups
};

std::vector<Block> blocks(const Config& c) {
  const ModelConfig& m = c.model;
  const int64_t D = m.hidden, V = m.vocab_size, F = m.dense_intermediate, E = c.moe.n_routed;
  const int64_t Fe = c.moe.expert_intermediate, Fs = int64_t(c.moe.n_shared) * Fe;
  std::vector<Block> out;
  auto add = [&](std::string ours, std::vector<int64_t> shape,
                 std::vector<std::pair<std::string, int64_t>> parts, bool router_bias = false) {
    out.push_back({std::move(ours), std::move(shape), std::move(parts), router_bias});
  };
  auto swiglu = [&](const std::string& ours, const std::string& hf, int64_t width) {
    add(ours + ".w13", {2 * width, D}, {{hf + ".gate_proj.weight", width}, {hf + ".up_proj.weight", width}});
    add(ours + ".w2", {D, width}, {{hf + ".down_proj.weight", D}});
  };
  add("embed", {V, D}, {{"model.embed_tokens.weight", V}});
  for (int l = 0; l < m.layers; ++l) {
    const std::string p = "layers." + std::to_string(l), h = "model.layers." + std::to_string(l);
    add(p + ".ln1", {D}, {{h + ".input_layernorm.weight", D}});
    add(p + ".attn.wqkv", {3 * D, D},
        {{h + ".self_attn.q_proj.weight", D}, {h + ".self_attn.k_proj.weight", D},
         {h + ".self_attn.v_proj.weight", D}});
    add(p + ".attn.wo", {D, D}, {{h + ".self_attn.o_proj.weight", D}});
    add(p + ".ln2", {D}, {{h + ".post_attention_layernorm.weight", D}});
    if (l < m.first_dense_layers) {
      swiglu(p + ".mlp", h + ".mlp", F);
      continue;
    }
    add(p + ".moe.router", {E, D}, {{h + ".mlp.gate.weight", E}});
    add(p + ".moe.router_bias", {E}, {{h + ".mlp.gate.e_score_correction_bias", E}}, true);
    swiglu(p + ".moe.shared", h + ".mlp.shared_experts", Fs);
    for (int64_t e = 0; e < E; ++e)
      swiglu(p + ".moe.experts." + std::to_string(e), h + ".mlp.experts." + std::to_string(e), Fe);
  }
  add("final_norm", {D}, {{"model.norm.weight", D}});
  add("lm_head", {V, D}, {{"lm_head.weight", V}});
  return out;
}

size_t numel(const std::vector<int64_t>& shape) {
  size_t n = 1;
  for (int64_t d : shape) n *= size_t(d);
  return n;
}

std::string shape_text(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

[[noreturn]] void refuse(const std::string& key, const std::string& why) {
  throw ConfigError("config: " + key + ": " + why + " (glm4_moe cannot express it; docs/export.md)");
}

}  // namespace

void check_glm4_moe_exportable(const Config& c) {
  if (c.moe.gate != GateFn::Sigmoid)
    refuse("moe.gate", std::string(to_string(c.moe.gate)) +
                           ": glm4_moe's router scores are sigmoid");
  if (c.balance.bias_mode != BiasMode::Additive)
    refuse("balance.bias_mode", std::string(to_string(c.balance.bias_mode)) +
                                    ": glm4_moe adds e_score_correction_bias to the scores");
  if (c.model.moe_layers() > 0 && c.moe.n_shared < 1)
    refuse("moe.n_shared", "0: every glm4_moe MoE layer has shared experts");
  if (c.model.moe_layers() > 0 && c.moe.n_routed < 2)
    refuse("moe.n_routed", std::to_string(c.moe.n_routed) +
                               ": glm4_moe's routing ranks groups by their two best experts");
  if (c.model.moe_layers() > 0 && c.moe.n_group > 1 && c.moe.n_routed / c.moe.n_group < 2)
    refuse("moe.n_group", std::to_string(c.moe.n_group) + " groups of " +
                              std::to_string(c.moe.n_routed / c.moe.n_group) +
                              " expert: glm4_moe ranks groups by their two best experts");
}

bool glm4_moe_shifts_bias(const Config& c) {
  return groups_limit_routing(c.moe.n_group, c.moe.topk_group);
}

float glm4_moe_bias_shift(const float* bias, int n) {
  float lo = bias[0];
  for (int e = 1; e < n; ++e) lo = std::min(lo, bias[e]);
  if (lo >= kGlm4MoeBiasFloor) return 0.0f;
  // floor - lo rounded to float may fall short by half an ulp: step it up
  // until the smallest shifted bias, rounded as transformers adds it, clears
  // the floor (float addition is monotone, so every other one does too).
  float c = float(double(kGlm4MoeBiasFloor) - double(lo));
  while (lo + c < kGlm4MoeBiasFloor) c = std::nextafter(c, INFINITY);
  return c;
}

nlohmann::ordered_json glm4_moe_config(const Config& c, const SpecialTokens& ids,
                                       const std::string& torch_dtype) {
  check_glm4_moe_exportable(c);
  const ModelConfig& m = c.model;
  nlohmann::ordered_json j;
  j["architectures"] = {"Glm4MoeForCausalLM"};
  j["model_type"] = "glm4_moe";
  j["vocab_size"] = m.vocab_size;
  j["hidden_size"] = m.hidden;
  j["intermediate_size"] = m.dense_intermediate;
  j["num_hidden_layers"] = m.layers;
  j["num_attention_heads"] = m.heads;
  j["num_key_value_heads"] = m.heads;
  j["head_dim"] = m.head_dim();
  j["hidden_act"] = "silu";
  j["max_position_embeddings"] = m.seq_len;
  j["initializer_range"] = m.init_std;
  j["rms_norm_eps"] = m.norm_eps;
  j["rope_theta"] = m.rope_theta;
  j["partial_rotary_factor"] = 1.0;
  j["rope_parameters"] = {{"rope_type", "default"}, {"rope_theta", m.rope_theta},
                          {"partial_rotary_factor", 1.0}};
  j["attention_bias"] = false;
  j["attention_dropout"] = 0.0;
  j["use_qk_norm"] = false;
  j["first_k_dense_replace"] = m.first_dense_layers;
  j["moe_intermediate_size"] = c.moe.expert_intermediate;
  j["n_shared_experts"] = c.moe.n_shared;
  j["n_routed_experts"] = c.moe.n_routed;
  j["num_experts_per_tok"] = c.moe.top_k;
  j["n_group"] = c.moe.n_group;
  j["topk_group"] = c.moe.topk_group;
  j["norm_topk_prob"] = c.moe.normalize_gates;
  j["routed_scaling_factor"] = c.moe.route_scale;
  j["num_nextn_predict_layers"] = 0;
  j["tie_word_embeddings"] = false;
  j["use_cache"] = true;
  j["torch_dtype"] = torch_dtype;
  j["dtype"] = torch_dtype;
  if (ids.bos >= 0) j["bos_token_id"] = ids.bos;
  if (ids.eos >= 0) j["eos_token_id"] = ids.eos;
  if (ids.pad >= 0) j["pad_token_id"] = ids.pad;
  return j;
}

Config config_from_glm4_moe(const nlohmann::json& hf, Config c) {
  auto get = [&](const char* key) -> const nlohmann::json& {
    if (!hf.contains(key)) throw ConfigError("config.json: missing key " + std::string(key));
    return hf.at(key);
  };
  auto refuse_hf = [](const std::string& key, const std::string& why) {
    throw ConfigError("config.json: " + key + ": " + why + " (our model cannot express it)");
  };
  try {
    if (hf.value("model_type", std::string()) != "glm4_moe")
      refuse_hf("model_type", "\"" + hf.value("model_type", std::string("?")) +
                                  "\", expected \"glm4_moe\"");
    ModelConfig& m = c.model;
    m.vocab_size = get("vocab_size").get<int>();
    m.hidden = get("hidden_size").get<int>();
    m.dense_intermediate = get("intermediate_size").get<int>();
    m.layers = get("num_hidden_layers").get<int>();
    m.heads = get("num_attention_heads").get<int>();
    m.first_dense_layers = get("first_k_dense_replace").get<int>();
    m.seq_len = get("max_position_embeddings").get<int>();
    m.norm_eps = get("rms_norm_eps").get<double>();
    m.init_std = hf.value("initializer_range", m.init_std);
    const nlohmann::json rope = hf.value("rope_parameters", nlohmann::json::object());
    m.rope_theta = rope.contains("rope_theta") ? rope.at("rope_theta").get<double>()
                                               : get("rope_theta").get<double>();
    c.moe.expert_intermediate = get("moe_intermediate_size").get<int>();
    c.moe.n_shared = get("n_shared_experts").get<int>();
    c.moe.n_routed = get("n_routed_experts").get<int>();
    c.moe.top_k = get("num_experts_per_tok").get<int>();
    c.moe.gate = GateFn::Sigmoid;
    c.moe.normalize_gates = hf.value("norm_topk_prob", false);
    c.moe.route_scale = hf.value("routed_scaling_factor", 1.0);
    c.balance.bias_mode = BiasMode::Additive;

    if (hf.value("num_key_value_heads", m.heads) != m.heads)
      refuse_hf("num_key_value_heads", "grouped-query attention");
    if (m.heads <= 0 || m.hidden % m.heads != 0 ||
        hf.value("head_dim", m.hidden / std::max(m.heads, 1)) != m.hidden / std::max(m.heads, 1))
      refuse_hf("head_dim", "must be hidden_size / num_attention_heads");
    if (hf.value("attention_bias", false)) refuse_hf("attention_bias", "true");
    if (hf.value("use_qk_norm", false)) refuse_hf("use_qk_norm", "true");
    if (hf.value("tie_word_embeddings", false)) refuse_hf("tie_word_embeddings", "true");
    if (hf.value("hidden_act", std::string("silu")) != "silu")
      refuse_hf("hidden_act", hf.value("hidden_act", std::string()));
    const double partial = rope.value("partial_rotary_factor", hf.value("partial_rotary_factor", 1.0));
    if (partial != 1.0) refuse_hf("partial_rotary_factor", std::to_string(partial));
    if (rope.value("rope_type", std::string("default")) != "default")
      refuse_hf("rope_parameters.rope_type", rope.value("rope_type", std::string()));
    // Group-limited routing, validated as config.cpp validates moe.n_group /
    // moe.topk_group, but naming the config.json keys.
    auto bad_hf = [](const std::string& key, const std::string& why) {
      throw ConfigError("config.json: " + key + ": " + why);
    };
    const int E = c.moe.n_routed;
    c.moe.n_group = hf.value("n_group", 1);
    c.moe.topk_group = hf.value("topk_group", 1);
    if (c.moe.n_group < 1 || E % c.moe.n_group != 0)
      bad_hf("n_group", std::to_string(c.moe.n_group) + " does not divide n_routed_experts = " +
                            std::to_string(E));
    if (c.moe.topk_group < 1 || c.moe.topk_group > c.moe.n_group)
      bad_hf("topk_group", std::to_string(c.moe.topk_group) + " is not in 1 .. n_group = " +
                               std::to_string(c.moe.n_group));
    if (int64_t(c.moe.top_k) > int64_t(c.moe.topk_group) * (E / c.moe.n_group))
      bad_hf("num_experts_per_tok",
             std::to_string(c.moe.top_k) + " exceeds the experts of topk_group groups: " +
                 std::to_string(c.moe.topk_group) + " x " + std::to_string(E / c.moe.n_group));
    if (hf.value("num_nextn_predict_layers", 0) != 0)
      refuse_hf("num_nextn_predict_layers", "multi-token prediction layers");
  } catch (const nlohmann::json::exception& e) {
    throw ConfigError(std::string("config.json: ") + e.what());
  }
  return c;
}

std::vector<HfTensor> to_glm4_moe(const SafeTensorFile& ours, const Config& c,
                                  std::vector<float>* bias_shifts) {
  std::vector<HfTensor> out;
  if (bias_shifts) bias_shifts->clear();
  for (const Block& b : blocks(c)) {
    const auto it = ours.tensors.find(b.ours);
    if (it == ours.tensors.end()) throw DataError("checkpoint: missing tensor " + b.ours);
    if (it->second.shape != b.shape)
      throw DataError("checkpoint: tensor " + b.ours + " is " + shape_text(it->second.shape) +
                      ", the config says " + shape_text(b.shape));
    std::vector<float> all(numel(b.shape));
    copy_float_tensor(it->second, all.data(), all.size(), "checkpoint: " + b.ours);
    if (b.router_bias && glm4_moe_shifts_bias(c)) {
      const float shift = glm4_moe_bias_shift(all.data(), int(all.size()));
      for (float& v : all) v += shift;
      if (bias_shifts) bias_shifts->push_back(shift);
    }
    const int64_t cols = b.shape.size() == 2 ? b.shape[1] : 1;
    size_t at = 0;
    for (const auto& [name, rows] : b.parts) {
      HfTensor t;
      t.name = name;
      t.shape = b.shape.size() == 2 ? std::vector<int64_t>{rows, cols} : std::vector<int64_t>{rows};
      t.values.assign(all.begin() + at, all.begin() + at + size_t(rows * cols));
      t.keep_fp32 = b.router_bias;
      at += size_t(rows * cols);
      out.push_back(std::move(t));
    }
  }
  return out;
}

SafeTensorFile from_glm4_moe(const std::map<std::string, SafeTensor>& hf, const Config& c) {
  SafeTensorFile out;
  out.metadata["format"] = "moe-lfb";
  size_t used = 0;
  for (const Block& b : blocks(c)) {
    std::vector<float> all(numel(b.shape));
    const int64_t cols = b.shape.size() == 2 ? b.shape[1] : 1;
    size_t at = 0;
    for (const auto& [name, rows] : b.parts) {
      const auto it = hf.find(name);
      if (it == hf.end()) throw DataError("glm4_moe weights: missing tensor " + name);
      const std::vector<int64_t> want =
          b.shape.size() == 2 ? std::vector<int64_t>{rows, cols} : std::vector<int64_t>{rows};
      if (it->second.shape != want)
        throw DataError("glm4_moe weights: tensor " + name + " is " + shape_text(it->second.shape) +
                        ", config.json says " + shape_text(want));
      copy_float_tensor(it->second, all.data() + at, size_t(rows * cols), "glm4_moe weights: " + name);
      at += size_t(rows * cols);
      ++used;
    }
    out.tensors[b.ours] = make_f32(all.data(), b.shape);
  }
  if (used != hf.size())
    for (const auto& [name, t] : hf) {
      bool known = false;
      for (const Block& b : blocks(c))
        for (const auto& part : b.parts) known = known || part.first == name;
      if (!known) throw DataError("glm4_moe weights: unexpected tensor " + name);
    }
  return out;
}

}  // namespace moe
