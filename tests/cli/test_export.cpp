// The glm4_moe mapping of moe-export (src/export/hf_glm4_moe.h): every tensor
// of a model lands on its Hub name with the right shape and rows (a
// hand-checked case), the way back is the identity, config.json says what
// the Config says and reads back to it, what glm4_moe cannot express is
// refused naming the key, and with group-limited routing the shifted bias
// makes glm4_moe's published selection (0.0 mask) pick what training picks. The whole program against an independent numpy
// forward is tests/scripts/export_test.sh.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>

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
  // Group-limited routing: n_group / topk_group written and read back.
  Config g = small_config();
  g.moe.n_group = 2;
  g.moe.topk_group = 1;
  const nlohmann::ordered_json jg = glm4_moe_config(g, {}, "float32");
  EXPECT_EQ(jg["n_group"], 2);
  EXPECT_EQ(jg["topk_group"], 1);
  EXPECT_EQ(config_from_glm4_moe(nlohmann::json::parse(jg.dump()), Config{}).moe, g.moe);
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
  // Groups of one expert: glm4_moe's group score takes each group's top 2.
  for (int tg : {1, 4}) {
    c = small_config();
    c.moe.n_group = 4;
    c.moe.topk_group = tg;
    c.moe.top_k = 1;
    expect_refused([&] { check_glm4_moe_exportable(c); }, "config: moe.n_group: 4 groups of 1");
    expect_refused([&] { glm4_moe_config(c, {}, "float32"); }, "moe.n_group");
  }

  const nlohmann::json good = nlohmann::json::parse(glm4_moe_config(small_config(), {}, "float32").dump());
  for (const auto& [key, value] :
       std::vector<std::pair<std::string, nlohmann::json>>{{"num_key_value_heads", 1},
                                                           {"attention_bias", true},
                                                           {"use_qk_norm", true},
                                                           {"tie_word_embeddings", true},
                                                           {"hidden_act", "gelu"},
                                                           {"n_group", 3},
                                                           {"topk_group", 2},
                                                           {"model_type", "llama"},
                                                           {"num_nextn_predict_layers", 1}}) {
    nlohmann::json bad = good;
    bad[key] = value;
    expect_refused([&] { config_from_glm4_moe(bad, Config{}); }, key);
  }
  // Groups as the config validates them (small_config: 4 experts, top-2).
  nlohmann::json groups = good;
  groups["n_group"] = 4;
  groups["topk_group"] = 1;
  expect_refused([&] { config_from_glm4_moe(groups, Config{}); }, "num_experts_per_tok");
  groups["topk_group"] = 0;
  expect_refused([&] { config_from_glm4_moe(groups, Config{}); }, "topk_group");
  groups["n_group"] = 0;
  expect_refused([&] { config_from_glm4_moe(groups, Config{}); }, "n_group");
  nlohmann::json partial = good;
  partial["rope_parameters"]["partial_rotary_factor"] = 0.5;
  expect_refused([&] { config_from_glm4_moe(partial, Config{}); }, "partial_rotary_factor");
  nlohmann::json missing = good;
  missing.erase("n_routed_experts");
  expect_refused([&] { config_from_glm4_moe(missing, Config{}); }, "n_routed_experts");
}

// The shift of one layer's bias, hand-computed: min b up to the floor 2^-14,
// or nothing when min b is there already.
TEST(Glm4MoeExport, BiasShiftLiftsTheSmallestBiasToTheFloor) {
  const float floor = kGlm4MoeBiasFloor;
  EXPECT_EQ(floor, std::ldexp(1.0f, -14));
  const std::vector<float> b = {-0.75f, 0.25f, 0.5f, -0.25f};
  EXPECT_EQ(glm4_moe_bias_shift(b.data(), 4), 0.75f + floor);  // exact: 14 bits
  const std::vector<float> above = {0.5f, floor, 2.0f};
  EXPECT_EQ(glm4_moe_bias_shift(above.data(), 3), 0.0f);
  const std::vector<float> zero = {0.0f, 0.0f};  // aux_loss / none runs
  EXPECT_EQ(glm4_moe_bias_shift(zero.data(), 2), floor);
  // |min b| = 3000: ulp 2^-12 > 2 floor, so 3000 + floor rounds to 3000 and
  // min b + c would be 0; the shift steps up one ulp to 3000 + 2^-12.
  const std::vector<float> big = {-3000.0f, 1.0f};
  const float c = glm4_moe_bias_shift(big.data(), 2);
  EXPECT_EQ(c, 3000.0f + std::ldexp(1.0f, -12));
  EXPECT_EQ(big[0] + c, std::ldexp(1.0f, -12));
}

// The export writes the shifted bias only when groups limit the routing;
// bias_shifts says by how much per MoE layer. our_file's layer-l bias is
// 0.125 e - l, so c = l + 2^-14 and the shifted bias 0.125 e + 2^-14.
TEST(Glm4MoeExport, GroupLimitedExportShiftsTheBias) {
  Config c = small_config();
  c.moe.n_group = 2;
  c.moe.topk_group = 1;
  const SafeTensorFile ours = our_file(c);
  std::vector<float> shifts;
  const std::vector<HfTensor> hf = to_glm4_moe(ours, c, &shifts);
  const float floor = kGlm4MoeBiasFloor;
  EXPECT_EQ(shifts, (std::vector<float>{1.0f + floor, 2.0f + floor}));
  for (int l : {1, 2}) {
    const HfTensor& t = find(hf, "model.layers." + std::to_string(l) + ".mlp.gate.e_score_correction_bias");
    EXPECT_EQ(t.values, (std::vector<float>{floor, 0.125f + floor, 0.25f + floor, 0.375f + floor}));
  }
  // Only the biases move.
  const std::vector<HfTensor> plain = to_glm4_moe(ours, small_config(), &shifts);
  EXPECT_TRUE(shifts.empty());
  ASSERT_EQ(plain.size(), hf.size());
  for (size_t i = 0; i < hf.size(); ++i) {
    if (hf[i].name.find("e_score_correction_bias") == std::string::npos) {
      EXPECT_EQ(plain[i].values, hf[i].values) << hf[i].name;
    }
  }
  // Every group kept (topk_group == n_group): nothing masked, nothing shifted.
  c.moe.topk_group = 2;
  EXPECT_EQ(find(to_glm4_moe(ours, c, &shifts), "model.layers.2.mlp.gate.e_score_correction_bias").values,
            values(ours.tensors.at("layers.2.moe.router_bias")));
  EXPECT_TRUE(shifts.empty());
}

// transformers' Glm4MoeMoE.route_tokens_to_experts as published
// (modeling_glm4_moe.py), on one token's fp32 scores: group score = sum of
// the group's top 2 of s + b, the topk_group best groups kept, the others'
// keys set to 0.0 (masked_fill), then the top-K of the keys. Ties, which
// torch.topk leaves unspecified, go to the lower index here, as in training:
// the test's keys are exact, and a shift keeps equal keys equal.
std::vector<int> glm4_moe_select(const std::vector<float>& s, const std::vector<float>& b, int G,
                                 int TG, int K) {
  const int E = int(s.size()), m = E / G;
  std::vector<float> key(E), gscore(G);
  for (int e = 0; e < E; ++e) key[e] = s[e] + b[e];
  for (int g = 0; g < G; ++g) {
    std::vector<float> v(key.begin() + g * m, key.begin() + (g + 1) * m);
    std::partial_sort(v.begin(), v.begin() + 2, v.end(), std::greater<float>());
    gscore[g] = v[0] + v[1];
  }
  std::vector<int> gorder(G), order(E);
  std::iota(gorder.begin(), gorder.end(), 0);
  std::stable_sort(gorder.begin(), gorder.end(), [&](int x, int y) { return gscore[x] > gscore[y]; });
  std::vector<char> kept(G, 0);
  for (int r = 0; r < TG; ++r) kept[gorder[r]] = 1;
  for (int e = 0; e < E; ++e)
    if (!kept[e / m]) key[e] = 0.0f;
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](int x, int y) { return key[x] > key[y]; });
  std::vector<int> pick(order.begin(), order.begin() + K);
  std::sort(pick.begin(), pick.end());
  return pick;
}

// Training's group-limited routing (CpuBackend::topk_route, dropped groups
// never picked) against glm4_moe's 0.0 mask on Loss-Free-like biases with
// negative entries: with the raw bias the two differ on many tokens (a kept
// key s + b < 0 loses to a dropped 0.0), with the exported (shifted) bias
// they agree on every token, sigmoids that underflowed to 0 included. Scores
// and biases are multiples of 2^-10 in [-2, 2] (and c a multiple of 2^-14),
// so every key and group score is exact in fp32 and no near-tie rounds.
TEST(Glm4MoeExport, ShiftedBiasMakesTheZeroMaskSelectWhatTrainingSelects) {
  const int E = 16, G = 4, TG = 2, K = 4, N = 2000;
  std::mt19937 rng(7);
  std::uniform_int_distribution<int> grid(0, 1024), bgrid(-1536, 512);
  auto be = make_cpu_backend<float>(1);
  RouteSpec spec;
  spec.E = E;
  spec.K = K;
  spec.n_group = G;
  spec.topk_group = TG;
  int raw_differs = 0, zero_scores = 0;
  for (int trial = 0; trial < 4; ++trial) {
    std::vector<float> bias(E), s(size_t(N) * E);
    for (float& v : bias) v = float(bgrid(rng)) / 1024.0f;
    for (size_t i = 0; i < s.size(); ++i) {
      s[i] = float(grid(rng)) / 1024.0f;  // 0 included: an underflowed sigmoid
      zero_scores += s[i] == 0.0f;
    }
    std::vector<int32_t> idx(size_t(N) * K);
    std::vector<float> gates(size_t(N) * K);
    be->topk_route(idx.data(), gates.data(), s.data(), bias.data(), N, spec);
    const float c = glm4_moe_bias_shift(bias.data(), E);
    std::vector<float> shifted(bias);
    for (float& v : shifted) v += c;
    for (int n = 0; n < N; ++n) {
      const std::vector<float> sn(s.begin() + size_t(n) * E, s.begin() + size_t(n + 1) * E);
      std::vector<int> trained(idx.begin() + size_t(n) * K, idx.begin() + size_t(n + 1) * K);
      std::sort(trained.begin(), trained.end());
      ASSERT_EQ(glm4_moe_select(sn, shifted, G, TG, K), trained) << "trial " << trial << " token " << n;
      raw_differs += glm4_moe_select(sn, bias, G, TG, K) != trained;
    }
  }
  EXPECT_GT(zero_scores, 0);
  EXPECT_GT(raw_differs, 100);  // the case matters: without the shift glm4_moe routes otherwise

  // By hand, the underflowed sigmoid: 2 groups of 2, keep 1, top-2. Keys
  // s + b = {0.1, 0.1, 0.9, -0.5}, group scores 0.2 and 0.4: training picks
  // {2, 3}. The raw bias: expert 3's -0.5 loses to the masked 0.0 of expert 0.
  // A shift by -min b alone (0.5) leaves expert 3's key at s = 0, tied with
  // the 0.0 of the dropped experts 0 and 1 (torch.topk may pick either); the
  // floor lifts it to 2^-14.
  const std::vector<float> s1 = {0.1f, 0.1f, 0.9f, 0.0f}, b1 = {0.0f, 0.0f, 0.0f, -0.5f};
  spec.E = 4;
  spec.K = 2;
  spec.n_group = 2;
  spec.topk_group = 1;
  std::vector<int32_t> idx1(2);
  std::vector<float> gates1(2);
  be->topk_route(idx1.data(), gates1.data(), s1.data(), b1.data(), 1, spec);
  std::sort(idx1.begin(), idx1.end());
  EXPECT_EQ(std::vector<int>(idx1.begin(), idx1.end()), (std::vector<int>{2, 3}));
  EXPECT_EQ(glm4_moe_select(s1, b1, 2, 1, 2), (std::vector<int>{0, 2}));
  const float c1 = glm4_moe_bias_shift(b1.data(), 4);
  EXPECT_EQ(c1, 0.5f + kGlm4MoeBiasFloor);
  std::vector<float> shifted1(b1), half(b1);
  for (float& v : shifted1) v += c1;
  for (float& v : half) v += 0.5f;
  EXPECT_EQ(glm4_moe_select(s1, shifted1, 2, 1, 2), (std::vector<int>{2, 3}));
  EXPECT_EQ(glm4_moe_select(s1, half, 2, 1, 2), (std::vector<int>{0, 2}));  // the tie, lost
}

}  // namespace
}  // namespace moe
