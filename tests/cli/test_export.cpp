// The glm4_moe mapping of moe-export (src/export/hf_glm4_moe.h): every tensor
// of a model lands on its Hub name with the right shape and rows (a
// hand-checked case), the way back is the identity, config.json says what
// the Config says and reads back to it, and what glm4_moe cannot express is
// refused naming the key. The whole program against an independent numpy
// forward is tests/scripts/export_test.sh.
#include <gtest/gtest.h>

#include <numeric>

#include "export/hf_glm4_moe.h"
#include "core/error.h"
#include "model/transformer.h"
#include "train/checkpoint.h"

namespace moe {
namespace {

Config small_config() {
  Config c;
  c.model = {.vocab_size = 20, .hidden = 8, .heads = 2, .layers = 3, .first_dense_layers = 1,
             .dense_intermediate = 12, .seq_len = 16, .rope_theta = 5000, .norm_eps = 1e-5,
             .init_std = 0.02};
  c.moe.n_shared = 2;
  c.moe.n_routed = 4;
  c.moe.top_k = 2;
  c.moe.expert_intermediate = 6;
  c.moe.normalize_gates = true;
  c.moe.route_scale = 2.5;
  return c;
}

// Our model.safetensors for the config: every value its own index (fp32
// exact), and a distinct bias per MoE layer.
SafeTensorFile our_file(const Config& c) {
  auto be = make_cpu_backend<float>(1);
  Transformer<float> model(c, *be, 1);
  const ParamSet<float>& ps = model.params();
  std::vector<float> p(ps.size()), zeros(ps.size(), 0.0f);
  std::iota(p.begin(), p.end(), 0.0f);
  SafeTensorFile f;
  for (const ParamInfo& info : ps.all())
    f.tensors[info.name] = make_f32(p.data() + info.offset, info.shape);
  for (int l = c.model.first_dense_layers; l < c.model.layers; ++l) {
    std::vector<float> b(size_t(c.moe.n_routed));
    for (size_t e = 0; e < b.size(); ++e) b[e] = 0.125f * float(e) - float(l);
    f.tensors[router_bias_name(l)] = make_f32(b.data(), {int64_t(b.size())});
  }
  return f;
}

std::vector<float> values(const SafeTensor& t) {
  std::vector<float> v(t.data.size() / 4);
  copy_float_tensor(t, v.data(), v.size(), "test");
  return v;
}

const HfTensor& find(const std::vector<HfTensor>& ts, const std::string& name) {
  for (const HfTensor& t : ts)
    if (t.name == name) return t;
  throw std::runtime_error("no tensor " + name);
}

TEST(Glm4MoeExport, TensorsLandOnTheirHubNames) {
  const Config c = small_config();
  const SafeTensorFile ours = our_file(c);
  const std::vector<HfTensor> hf = to_glm4_moe(ours, c);
  // embed, lm_head, final norm; per layer 2 norms + q,k,v,o; dense layer 3
  // MLP tensors; MoE layers gate + bias + 3 shared + 4 experts x 3.
  EXPECT_EQ(hf.size(), 3u + 3 * 6 + 3 + 2 * (2 + 3 + 4 * 3));
  // wqkv [24, 8] = [q; k; v]: k_proj is rows 8..15 of it.
  const std::vector<float> wqkv = values(ours.tensors.at("layers.2.attn.wqkv"));
  const HfTensor& k = find(hf, "model.layers.2.self_attn.k_proj.weight");
  EXPECT_EQ(k.shape, (std::vector<int64_t>{8, 8}));
  EXPECT_EQ(k.values, std::vector<float>(wqkv.begin() + 64, wqkv.begin() + 128));
  // w13 [2F, D] = [gate; up]: an expert's up_proj is its second half.
  const std::vector<float> w13 = values(ours.tensors.at("layers.1.moe.experts.3.w13"));
  const HfTensor& up = find(hf, "model.layers.1.mlp.experts.3.up_proj.weight");
  EXPECT_EQ(up.shape, (std::vector<int64_t>{6, 8}));
  EXPECT_EQ(up.values, std::vector<float>(w13.begin() + 48, w13.end()));
  // The shared experts are one MLP of width n_shared x moe_intermediate.
  EXPECT_EQ(find(hf, "model.layers.2.mlp.shared_experts.down_proj.weight").shape,
            (std::vector<int64_t>{8, 12}));
  EXPECT_EQ(find(hf, "model.layers.0.mlp.gate_proj.weight").shape, (std::vector<int64_t>{12, 8}));
  // The bias is the selection bias, kept in fp32.
  const HfTensor& bias = find(hf, "model.layers.2.mlp.gate.e_score_correction_bias");
  EXPECT_TRUE(bias.keep_fp32);
  EXPECT_EQ(bias.values, values(ours.tensors.at("layers.2.moe.router_bias")));
  EXPECT_FALSE(find(hf, "model.layers.2.mlp.gate.weight").keep_fp32);
  EXPECT_EQ(find(hf, "lm_head.weight").values, values(ours.tensors.at("lm_head")));
  EXPECT_EQ(find(hf, "model.norm.weight").values, values(ours.tensors.at("final_norm")));
}

TEST(Glm4MoeExport, BackIsTheIdentity) {
  const Config c = small_config();
  const SafeTensorFile ours = our_file(c);
  std::map<std::string, SafeTensor> hf;
  for (const HfTensor& t : to_glm4_moe(ours, c)) hf[t.name] = make_f32(t.values.data(), t.shape);
  const SafeTensorFile back = from_glm4_moe(hf, c);
  ASSERT_EQ(back.tensors.size(), ours.tensors.size());
  for (const auto& [name, t] : ours.tensors) {
    ASSERT_TRUE(back.tensors.count(name)) << name;
    EXPECT_EQ(back.tensors.at(name).shape, t.shape) << name;
    EXPECT_EQ(back.tensors.at(name).data, t.data) << name;
  }
  // A missing and an unexpected tensor are refused by name.
  std::map<std::string, SafeTensor> missing = hf, extra = hf;
  missing.erase("model.layers.1.mlp.experts.0.down_proj.weight");
  extra["model.layers.1.mlp.experts.9.down_proj.weight"] = hf.begin()->second;
  try {
    from_glm4_moe(missing, c);
    ADD_FAILURE() << "missing tensor accepted";
  } catch (const DataError& e) {
    EXPECT_NE(std::string(e.what()).find("experts.0.down_proj"), std::string::npos) << e.what();
  }
  try {
    from_glm4_moe(extra, c);
    ADD_FAILURE() << "unexpected tensor accepted";
  } catch (const DataError& e) {
    EXPECT_NE(std::string(e.what()).find("experts.9.down_proj"), std::string::npos) << e.what();
  }
}

TEST(Glm4MoeExport, ConfigJsonReadsBackToTheModel) {
  const Config c = small_config();
  const nlohmann::ordered_json j = glm4_moe_config(c, {1, 2, 3}, "bfloat16");
  EXPECT_EQ(j["model_type"], "glm4_moe");
  EXPECT_EQ(j["architectures"][0], "Glm4MoeForCausalLM");
  EXPECT_EQ(j["num_key_value_heads"], 2);
  EXPECT_EQ(j["first_k_dense_replace"], 1);
  EXPECT_EQ(j["n_group"], 1);
  EXPECT_EQ(j["topk_group"], 1);
  EXPECT_EQ(j["norm_topk_prob"], true);
  EXPECT_EQ(j["routed_scaling_factor"], 2.5);
  EXPECT_EQ(j["partial_rotary_factor"], 1.0);
  EXPECT_EQ(j["rope_parameters"]["partial_rotary_factor"], 1.0);
  EXPECT_EQ(j["tie_word_embeddings"], false);
  EXPECT_EQ(j["num_nextn_predict_layers"], 0);
  EXPECT_EQ(j["eos_token_id"], 2);
  // Exact: the doubles (rope_theta, norm_eps, init_std, route_scale) are
  // copied, and JSON dump/parse round-trips a double bit for bit.
  const Config back = config_from_glm4_moe(nlohmann::json::parse(j.dump()), Config{});
  EXPECT_EQ(back.model, c.model);
  EXPECT_EQ(back.moe, c.moe);
}

void expect_refused(const std::function<void()>& f, const std::string& key) {
  try {
    f();
    ADD_FAILURE() << key << " accepted";
  } catch (const ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find(key), std::string::npos) << e.what();
  }
}

TEST(Glm4MoeExport, RefusesWhatGlm4MoeCannotExpress) {
  Config c = small_config();
  c.moe.gate = GateFn::Softmax;
  expect_refused([&] { check_glm4_moe_exportable(c); }, "moe.gate");
  c = small_config();
  c.balance.bias_mode = BiasMode::Multiplicative;
  expect_refused([&] { glm4_moe_config(c, {}, "float32"); }, "balance.bias_mode");
  c = small_config();
  c.moe.n_shared = 0;
  expect_refused([&] { check_glm4_moe_exportable(c); }, "moe.n_shared");
  // Group-limited routing: glm4_moe's 0.0 mask is not training's -inf (docs/export.md).
  for (int tg : {1, 2}) {
    c = small_config();
    c.moe.n_group = 2;
    c.moe.topk_group = tg;
    expect_refused([&] { check_glm4_moe_exportable(c); }, "config: moe.n_group: 2 (topk_group");
    expect_refused([&] { glm4_moe_config(c, {}, "float32"); }, "moe.n_group");
  }

  const nlohmann::json good = nlohmann::json::parse(glm4_moe_config(small_config(), {}, "float32").dump());
  for (const auto& [key, value] :
       std::vector<std::pair<std::string, nlohmann::json>>{{"num_key_value_heads", 1},
                                                           {"attention_bias", true},
                                                           {"use_qk_norm", true},
                                                           {"tie_word_embeddings", true},
                                                           {"hidden_act", "gelu"},
                                                           {"n_group", 2},
                                                           {"model_type", "llama"},
                                                           {"num_nextn_predict_layers", 1}}) {
    nlohmann::json bad = good;
    bad[key] = value;
    expect_refused([&] { config_from_glm4_moe(bad, Config{}); }, key);
  }
  nlohmann::json partial = good;
  partial["rope_parameters"]["partial_rotary_factor"] = 0.5;
  expect_refused([&] { config_from_glm4_moe(partial, Config{}); }, "partial_rotary_factor");
  nlohmann::json missing = good;
  missing.erase("n_routed_experts");
  expect_refused([&] { config_from_glm4_moe(missing, Config{}); }, "n_routed_experts");
}

}  // namespace
}  // namespace moe
