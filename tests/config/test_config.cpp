// Strict YAML config layer: defaults, round trip, one-line errors that name the
// key, --set overrides, and every shipped preset under configs/.
#include <gtest/gtest.h>
#include <yaml-cpp/yaml.h>

#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "config/config.h"
#include "core/error.h"

namespace fs = std::filesystem;
using namespace moe;

namespace {

// Runs f, which must throw ConfigError; returns the message after checking the
// format every error shares: one line starting with "config: ".
template <class F>
std::string config_error(F&& f) {
  try {
    f();
  } catch (const ConfigError& e) {
    const std::string msg = e.what();
    EXPECT_EQ(msg.rfind("config: ", 0), 0u) << msg;
    EXPECT_EQ(msg.find('\n'), std::string::npos) << msg;
    return msg;
  } catch (const std::exception& e) {
    ADD_FAILURE() << "expected ConfigError, got: " << e.what();
    return "";
  }
  ADD_FAILURE() << "expected ConfigError, nothing thrown";
  return "";
}

// parse_config(yaml, overrides, world) must fail naming every string in `parts`.
void expect_error(const std::string& yaml, const std::vector<std::string>& overrides,
                  int world, const std::vector<std::string>& parts) {
  const std::string msg =
      config_error([&] { parse_config(yaml, overrides, world); });
  for (const auto& p : parts) EXPECT_NE(msg.find(p), std::string::npos) << "missing '" << p << "' in: " << msg;
}
void expect_error(const std::string& yaml, const std::vector<std::string>& parts) {
  expect_error(yaml, {}, 1, parts);
}
// f must fail with a ConfigError naming every string in `parts`.
template <class F>
void expect_error_text(F&& f, const std::vector<std::string>& parts) {
  const std::string msg = config_error(f);
  for (const auto& p : parts) EXPECT_NE(msg.find(p), std::string::npos) << "missing '" << p << "' in: " << msg;
}
// Same, for one override on top of the defaults.
void expect_set_error(const std::string& ov, const std::vector<std::string>& parts) {
  expect_error("", {ov}, 1, parts);
}

// validate_config must reject c naming `key`.
void expect_invalid(const Config& c, const std::string& key, int world = 1) {
  const std::string msg = config_error([&] { validate_config(c, world); });
  EXPECT_NE(msg.find("config: " + key + ":"), std::string::npos) << "key " << key << " not named in: " << msg;
}

// Every key set to a value different from its default.
Config all_changed() {
  Config c;
  c.model = {1000, 96, 6, 5, 2, 300, 128, 5e5, 1e-5, 0.02};
  c.moe.n_shared = 0;
  c.moe.n_routed = 16;
  c.moe.top_k = 3;
  c.moe.expert_intermediate = 48;
  c.moe.gate = GateFn::Softmax;
  c.moe.normalize_gates = true;
  c.moe.route_scale = 2.5;
  c.moe.n_group = 4;
  c.moe.topk_group = 2;
  c.balance.method = BalanceMethod::AuxLoss;
  c.balance.update_rate = 1.0 / 3.0;  // needs all 17 digits to survive
  c.balance.update_rule = UpdateRule::Proportional;
  c.balance.bias_mode = BiasMode::Multiplicative;
  c.balance.center_bias = true;
  c.balance.aux_alpha = 3e-4;
  c.balance.aux_scope = AuxScope::Batch;
  // balance.seq_aux_alpha stays 0: non-zero is an error with aux_loss
  // (RoundTripEveryKeyChanged round-trips it under loss_free).
  c.train.steps = 1234567890123;
  c.train.global_batch = 64;
  c.train.micro_batch = 4;
  c.train.lr = 7.8e-4;
  c.train.lr_schedule = LrSchedule::Multistep;
  c.train.warmup_steps = 0;
  c.train.min_lr = 0;
  c.train.lr_milestones = {45211, 50862};
  c.train.lr_values = {2.47e-4, 7.8e-5};
  c.train.beta1 = 0.8;
  c.train.beta2 = 0.999;
  c.train.adam_eps = 1e-12;
  c.train.weight_decay = 0;
  c.train.grad_clip = 0;
  c.train.seed = 18446744073709551615ull;  // uint64 max
  c.train.backend = BackendKind::Cpu;
  c.train.precision = Precision::Float64;
  c.train.threads = 2;
  c.train.nonfinite = NonFinitePolicy::Stop;
  c.train.max_consecutive_skips = 9;
  c.train.eval_interval = 250;
  c.train.eval_max_tokens = 0;
  c.data.source = DataSource::Tokens;
  c.data.path = "data/my file: \"x\".bin";  // needs quoting
  c.data.dtype = TokenDType::U32;
  c.data.val_path = "data/val_*.bin";
  c.data.synthetic_branching = 7;
  c.parallel.ep_size = 2;
  c.parallel.transport = Transport::Mpi;
  c.parallel.timeout_seconds = 90.5;
  c.checkpoint.dir = "null";  // a string, not YAML null
  c.checkpoint.interval = 500;
  c.checkpoint.keep_last = 1;
  c.log.interval = 1;
  c.log.out_dir = "runs/x";
  c.log.expert_load_interval = 0;
  c.log.level = "debug";
  return c;
}

std::string read_text(const fs::path& p) {
  std::ifstream in(p);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

}  // namespace

// ------------------------------------------------------------------ defaults

TEST(Config, EmptyDocumentGivesDefaults) {
  EXPECT_EQ(parse_config(""), Config{});
  EXPECT_EQ(parse_config("# only a comment\n"), Config{});
  EXPECT_EQ(parse_config("model:\nmoe: {}\n"), Config{});  // empty sections are fine
  const Config c = parse_config("");
  EXPECT_EQ(c.model.hidden, 1024);
  EXPECT_EQ(c.moe.top_k, 6);
  EXPECT_EQ(c.moe.gate, GateFn::Sigmoid);
  EXPECT_EQ(c.balance.method, BalanceMethod::LossFree);
  EXPECT_DOUBLE_EQ(c.balance.update_rate, 0.001);
  EXPECT_EQ(c.train.lr_schedule, LrSchedule::Cosine);
  EXPECT_EQ(c.log.level, "info");
  EXPECT_NO_THROW(validate_config(Config{}, 1));
}

TEST(Config, EveryKeyIsOptionalAndSetsItsField) {
  const Config c = parse_config(
      "model: {hidden: 64, heads: 4}\n"
      "moe: {gate: softmax, normalize_gates: true}\n"
      "balance: {method: aux_loss, aux_alpha: 3e-4}\n"
      "train: {lr: 2e-3, seed: 7}\n"
      "data: {path: a.bin}\n");
  EXPECT_EQ(c.model.hidden, 64);
  EXPECT_EQ(c.model.heads, 4);
  EXPECT_EQ(c.model.layers, ModelConfig{}.layers);
  EXPECT_EQ(c.moe.gate, GateFn::Softmax);
  EXPECT_TRUE(c.moe.normalize_gates);
  EXPECT_EQ(c.balance.method, BalanceMethod::AuxLoss);
  EXPECT_DOUBLE_EQ(c.balance.aux_alpha, 3e-4);
  EXPECT_DOUBLE_EQ(c.train.lr, 2e-3);
  EXPECT_EQ(c.train.seed, 7u);
  EXPECT_EQ(c.data.path, "a.bin");
}

TEST(Config, EnumNames) {
  EXPECT_STREQ(to_string(GateFn::Sigmoid), "sigmoid");
  EXPECT_STREQ(to_string(GateFn::Softmax), "softmax");
  EXPECT_STREQ(to_string(BalanceMethod::LossFree), "loss_free");
  EXPECT_STREQ(to_string(BalanceMethod::AuxLoss), "aux_loss");
  EXPECT_STREQ(to_string(BalanceMethod::None), "none");
  EXPECT_STREQ(to_string(UpdateRule::Sign), "sign");
  EXPECT_STREQ(to_string(UpdateRule::Proportional), "proportional");
  EXPECT_STREQ(to_string(BiasMode::Additive), "additive");
  EXPECT_STREQ(to_string(BiasMode::Multiplicative), "multiplicative");
  EXPECT_STREQ(to_string(AuxScope::Sequence), "sequence");
  EXPECT_STREQ(to_string(AuxScope::Batch), "batch");
  EXPECT_STREQ(to_string(LrSchedule::Cosine), "cosine");
  EXPECT_STREQ(to_string(LrSchedule::Multistep), "multistep");
  EXPECT_STREQ(to_string(LrSchedule::Constant), "constant");
  EXPECT_STREQ(to_string(DataSource::Synthetic), "synthetic");
  EXPECT_STREQ(to_string(DataSource::Tokens), "tokens");
  EXPECT_STREQ(to_string(DataSource::Shards), "shards");
  EXPECT_STREQ(to_string(TokenDType::U16), "uint16");
  EXPECT_STREQ(to_string(TokenDType::U32), "uint32");
  EXPECT_STREQ(to_string(BackendKind::Auto), "auto");
  EXPECT_STREQ(to_string(BackendKind::Cpu), "cpu");
  EXPECT_STREQ(to_string(BackendKind::Cuda), "cuda");
  EXPECT_STREQ(to_string(Precision::Float32), "float32");
  EXPECT_STREQ(to_string(Precision::Float64), "float64");
  EXPECT_STREQ(to_string(Precision::BFloat16), "bfloat16");
  EXPECT_STREQ(to_string(Transport::Auto), "auto");
  EXPECT_STREQ(to_string(Transport::Mpi), "mpi");
  EXPECT_STREQ(to_string(Transport::Nccl), "nccl");
  EXPECT_STREQ(to_string(NonFinitePolicy::Skip), "skip");
  EXPECT_STREQ(to_string(NonFinitePolicy::Stop), "stop");
}

// ---------------------------------------------------------------- round trip

TEST(Config, RoundTripDefaults) {
  const std::string y = config_to_yaml(Config{});
  EXPECT_EQ(parse_config(y), Config{});
}

TEST(Config, RoundTripEveryKeyChanged) {
  const Config c = all_changed();
  ASSERT_NO_THROW(validate_config(c, 2));
  const std::string y = config_to_yaml(c);
  const Config back = parse_config(y, {}, 2);
  EXPECT_EQ(back, c) << y;
  EXPECT_EQ(config_to_yaml(back), y);  // canonical: a second dump is identical
  // The defaulted operator== must see each section (guards the test itself).
  EXPECT_FALSE(back == Config{});
  // The one key all_changed leaves at its default (it needs loss_free).
  Config lf = c;
  lf.balance.method = BalanceMethod::LossFree;
  lf.balance.seq_aux_alpha = 1.0 / 7.0;  // needs all 17 digits to survive
  ASSERT_NO_THROW(validate_config(lf, 2));
  const Config lf_back = parse_config(config_to_yaml(lf), {}, 2);
  EXPECT_EQ(lf_back, lf);
  EXPECT_FALSE(lf_back == c);
}

TEST(Config, DumpNamesEverySectionAndKey) {
  const std::string y = config_to_yaml(Config{});
  for (const char* s : {"model:", "moe:", "balance:", "train:", "data:", "parallel:",
                        "checkpoint:", "log:", "  lr_milestones: []", "  update_rule: sign"})
    EXPECT_NE(y.find(s), std::string::npos) << s;
}

// ------------------------------------------------------------- key metadata

TEST(ConfigMeta, KnownKeysSayWhetherTheyChangeTraining) {
  EXPECT_EQ(key_meta("model.hidden").training, TrainingEffect::Changes);
  EXPECT_EQ(key_meta("balance.method").training, TrainingEffect::Changes);
  EXPECT_EQ(key_meta("train.steps").training, TrainingEffect::Changes);
  EXPECT_EQ(key_meta("train.seed").training, TrainingEffect::Seed);
  for (const char* k : {"log.out_dir", "checkpoint.dir", "train.threads", "train.eval_interval",
                        "train.final_eval", "parallel.transport"})
    EXPECT_EQ(key_meta(k).training, TrainingEffect::None) << k;
  EXPECT_EQ(key_meta("model.hidden").read_when_key, nullptr);
  const KeyMeta u = key_meta("balance.update_rate"), a = key_meta("balance.aux_alpha");
  ASSERT_NE(u.read_when_key, nullptr);
  ASSERT_NE(a.read_when_key, nullptr);
  EXPECT_STREQ(u.read_when_key, "balance.method");
  EXPECT_STREQ(u.read_when_value, "loss_free");
  EXPECT_STREQ(a.read_when_value, "aux_loss");
  EXPECT_STREQ(key_meta("balance.seq_aux_alpha").read_when_value, "loss_free");
  EXPECT_THROW(key_meta("model.nope"), ConfigError);
}

TEST(ConfigMeta, DumpWithMetaHoldsEveryValueAndItsMeta) {
  const Config c = all_changed();
  const YAML::Node plain = YAML::Load(config_to_yaml(c));
  const YAML::Node meta = YAML::Load(config_to_yaml_with_meta(c));
  int keys = 0;
  for (auto sec = plain.begin(); sec != plain.end(); ++sec) {
    const std::string s = sec->first.Scalar();
    for (auto kv = sec->second.begin(); kv != sec->second.end(); ++kv) {
      const std::string k = kv->first.Scalar(), key = s + "." + k;
      const YAML::Node m = meta[s][k];
      ASSERT_TRUE(m.IsMap()) << key;
      EXPECT_EQ(YAML::Dump(m["value"]), YAML::Dump(kv->second)) << key;
      const KeyMeta want = key_meta(key);
      EXPECT_EQ(m["training"].Scalar(), to_string(want.training)) << key;
      if (want.read_when_key == nullptr) {
        EXPECT_FALSE(m["read_when"]) << key;
      } else {
        // The condition names a real key and one of its values.
        EXPECT_EQ(m["read_when"][want.read_when_key].Scalar(), want.read_when_value) << key;
        EXPECT_NO_THROW(parse_config("", {std::string(want.read_when_key) + "=" +
                                          want.read_when_value}))
            << key;
      }
      ++keys;
    }
  }
  EXPECT_EQ(keys, 69);
}

// ------------------------------------------------------------ strict parsing

TEST(ConfigErrors, UnknownSectionAndKey) {
  expect_error("modle:\n  hidden: 64\n", {"config: modle: unknown section", "model, moe"});
  expect_error("moe:\n  topk: 3\n", {"config: moe.topk: unknown key", "n_shared, n_routed", "line 2"});
  expect_error("model:\n  hidden: 64\n  hidden: 128\n", {"model.hidden: duplicate key"});
  expect_error("model: {}\nmodel: {}\n", {"config: model: duplicate section"});
}

TEST(ConfigErrors, WrongShapes) {
  expect_error("- 1\n", {"top level", "expected a map"});
  expect_error("moe: 3\n", {"config: moe: expected a map"});
  expect_error("model:\n  hidden: {a: 1}\n", {"model.hidden: expected an integer, got a map"});
  expect_error("model:\n  hidden: [64]\n", {"model.hidden: expected an integer, got a list"});
  expect_error("model:\n  hidden:\n", {"model.hidden: expected an integer, got null"});
  expect_error("data:\n  path: [a]\n", {"data.path: expected a string, got a list"});
  expect_error("train:\n  lr_milestones: 10\n", {"train.lr_milestones: expected a list"});
}

TEST(ConfigErrors, WrongScalarTypes) {
  expect_error("model:\n  hidden: abc\n", {"config: model.hidden: expected an integer, got \"abc\""});
  expect_error("model:\n  hidden: 1.5\n", {"model.hidden: expected an integer", "1.5"});
  expect_error("model:\n  hidden: 1e3\n", {"model.hidden: expected an integer"});
  expect_error("model:\n  hidden: \"64\"\n", {"model.hidden: expected an integer"});
  expect_error("model:\n  hidden: 99999999999\n", {"model.hidden: integer out of range"});
  expect_error("train:\n  steps: -5\n", {"train.steps: expected a non-negative integer"});
  expect_error("moe:\n  n_shared: -1\n", {"moe.n_shared: expected a non-negative integer"});
  expect_error("train:\n  seed: -1\n", {"train.seed: expected a non-negative integer"});
  expect_error("train:\n  lr: fast\n", {"train.lr: expected a finite number"});
  expect_error("train:\n  lr: .nan\n", {"train.lr: expected a finite number"});
  expect_error("train:\n  lr: \"1e-3\"\n", {"train.lr: expected a finite number"});
  expect_error("moe:\n  normalize_gates: yes\n", {"moe.normalize_gates: expected true or false"});
  expect_error("moe:\n  normalize_gates: 1\n", {"moe.normalize_gates: expected true or false"});
  expect_error("train:\n  lr_milestones: [10, x]\n", {"train.lr_milestones[1]: expected an integer"});
  expect_error("train:\n  lr_values: [1e-3, [1]]\n", {"train.lr_values[1]: expected a finite number"});
}

TEST(ConfigErrors, BadEnumValues) {
  const std::vector<std::pair<std::string, std::string>> keys = {
      {"moe", "gate"},          {"balance", "method"},      {"balance", "update_rule"},
      {"balance", "bias_mode"}, {"balance", "aux_scope"},   {"train", "lr_schedule"},
      {"data", "source"},       {"data", "dtype"},          {"train", "backend"},
      {"train", "precision"},   {"parallel", "transport"},  {"train", "nonfinite"}};
  for (const auto& [sec, key] : keys)
    expect_error(sec + ":\n  " + key + ": Bogus\n",
                 {"config: " + sec + "." + key + ": expected one of", "got \"Bogus\""});
  expect_error("moe:\n  gate: Sigmoid\n", {"moe.gate: expected one of sigmoid|softmax"});
  expect_error("balance:\n  method: {a: 1}\n", {"balance.method: expected one of", "a map"});
}

TEST(ConfigErrors, Files) {
  const std::string missing = "/nonexistent/dir/cfg.yaml";
  std::string msg = config_error([&] { load_config(missing); });
  EXPECT_NE(msg.find(missing), std::string::npos) << msg;

  msg = config_error([&] { load_config(MOE_SOURCE_DIR "/configs"); });
  EXPECT_NE(msg.find("is a directory"), std::string::npos) << msg;

  const fs::path bad = fs::temp_directory_path() / "moe_test_config_syntax.yaml";
  std::ofstream(bad) << "model:\n  hidden: 64\n  heads: [4\n";
  msg = config_error([&] { load_config(bad.string()); });
  EXPECT_NE(msg.find(bad.string() + ":"), std::string::npos) << msg;
  EXPECT_NE(msg.find("YAML syntax error"), std::string::npos) << msg;

  // Key errors from a file carry file:line.
  const fs::path typo = fs::temp_directory_path() / "moe_test_config_typo.yaml";
  std::ofstream(typo) << "model:\n  hidden: 64\n  head: 4\n";
  msg = config_error([&] { load_config(typo.string()); });
  EXPECT_NE(msg.find("model.head: unknown key"), std::string::npos) << msg;
  EXPECT_NE(msg.find(typo.string() + ":3"), std::string::npos) << msg;
  fs::remove(bad);
  fs::remove(typo);

  msg = config_error([&] { parse_config("model: [1,\n"); });
  EXPECT_NE(msg.find("YAML syntax error"), std::string::npos) << msg;
}

// ---------------------------------------------------------------- validation

TEST(ConfigValidation, Model) {
  Config c;
  c.model.hidden = 100;  // 100 % 8 != 0
  expect_invalid(c, "model.hidden");
  c = Config{};
  c.model.hidden = 72;  // head_dim 9: odd, RoPE needs pairs
  expect_invalid(c, "model.hidden");
  c = Config{};
  c.model.vocab_size = 0;
  expect_invalid(c, "model.vocab_size");
  c = Config{};
  c.model.heads = 0;
  expect_invalid(c, "model.heads");
  c = Config{};
  c.model.layers = 0;
  expect_invalid(c, "model.layers");
  c = Config{};
  c.model.seq_len = 0;
  expect_invalid(c, "model.seq_len");
  c = Config{};
  c.model.dense_intermediate = 0;
  expect_invalid(c, "model.dense_intermediate");
  c = Config{};
  c.model.first_dense_layers = 10;  // > layers (9)
  expect_invalid(c, "model.first_dense_layers");
  c.model.first_dense_layers = -1;
  expect_invalid(c, "model.first_dense_layers");
  c.model.first_dense_layers = 9;  // all dense is allowed
  EXPECT_NO_THROW(validate_config(c, 1));
  c = Config{};
  c.model.init_std = 0;
  expect_invalid(c, "model.init_std");
}

TEST(ConfigValidation, MoeAndBalance) {
  Config c;
  c.moe.top_k = 0;
  expect_invalid(c, "moe.top_k");
  c.moe.top_k = 65;
  expect_invalid(c, "moe.top_k");
  c = Config{};
  c.moe.n_shared = -1;
  expect_invalid(c, "moe.n_shared");
  c = Config{};
  c.moe.n_routed = 0;
  expect_invalid(c, "moe.n_routed");
  c = Config{};
  c.moe.expert_intermediate = 0;
  expect_invalid(c, "moe.expert_intermediate");
  c = Config{};
  c.moe.route_scale = 0;
  expect_invalid(c, "moe.route_scale");

  // Group-limited routing (64 experts, top-6 by default): n_group divides
  // n_routed, 1 <= topk_group <= n_group, top_k <= topk_group * group size.
  c = Config{};
  EXPECT_EQ(c.moe.n_group, 1);
  EXPECT_EQ(c.moe.topk_group, 1);
  EXPECT_NO_THROW(validate_config(c, 1));
  c.moe.n_group = 0;
  expect_invalid(c, "moe.n_group");
  c.moe.n_group = 5;  // 64 % 5
  expect_invalid(c, "moe.n_group");
  c.moe.n_group = 1;
  c.moe.topk_group = 2;  // more groups kept than exist
  expect_invalid(c, "moe.topk_group");
  c.moe.n_group = 8;
  c.moe.topk_group = 0;
  expect_invalid(c, "moe.topk_group");
  c.moe.topk_group = 9;
  expect_invalid(c, "moe.topk_group");
  c.moe.topk_group = 1;  // 8 experts in one group < top_k 9
  c.moe.top_k = 9;
  expect_invalid(c, "moe.top_k");
  c.moe.top_k = 8;
  EXPECT_NO_THROW(validate_config(c, 1));
  c.moe.topk_group = 8;  // every group kept
  EXPECT_NO_THROW(validate_config(c, 1));
  for (const auto& [ov, msg] : std::vector<std::pair<std::string, std::string>>{
           {"moe.n_group=5", "config: moe.n_group: 5 does not divide moe.n_routed = 64"},
           {"moe.topk_group=2", "config: moe.topk_group: must be in [1, 1]"},
           {"moe.n_group=0", "config: moe.n_group: must be positive, got 0"}})
    expect_set_error(ov, {msg});
  expect_error("", {"moe.n_group=32", "moe.topk_group=2"}, 1,
               {"config: moe.top_k: 6 exceeds the experts of moe.topk_group groups: 2 x "
                "moe.n_routed / moe.n_group = 2 x 2 = 4"});

  c = Config{};
  c.balance.update_rate = 0;
  expect_invalid(c, "balance.update_rate");
  c.balance.method = BalanceMethod::AuxLoss;  // u unused: fine
  EXPECT_NO_THROW(validate_config(c, 1));
  c.balance.aux_alpha = -1e-3;
  expect_invalid(c, "balance.aux_alpha");
  c.balance.aux_alpha = 0;  // the alpha = 0 ablation
  EXPECT_NO_THROW(validate_config(c, 1));

  // The sequence-wise complement of Loss-Free: >= 0, non-zero with loss_free only.
  c = Config{};
  c.balance.seq_aux_alpha = 1e-4;
  EXPECT_NO_THROW(validate_config(c, 1));
  c.balance.seq_aux_alpha = -1e-4;
  expect_invalid(c, "balance.seq_aux_alpha");
  for (BalanceMethod m : {BalanceMethod::AuxLoss, BalanceMethod::None}) {
    c.balance.method = m;
    c.balance.seq_aux_alpha = 1e-4;
    expect_invalid(c, "balance.seq_aux_alpha");
    c.balance.seq_aux_alpha = 0;
    EXPECT_NO_THROW(validate_config(c, 1));
  }
}

TEST(ConfigValidation, Batches) {
  Config c;
  c.train.global_batch = 12;
  c.train.micro_batch = 8;
  const std::string msg = config_error([&] { validate_config(c, 1); });
  EXPECT_NE(msg.find("config: train.global_batch:"), std::string::npos) << msg;
  EXPECT_NE(msg.find("micro_batch"), std::string::npos) << msg;
  c.train.global_batch = 16;
  EXPECT_NO_THROW(validate_config(c, 2));
  expect_invalid(c, "train.global_batch", 4);  // 16 % (8 * 4)
  expect_error("train: {global_batch: 16, micro_batch: 4}\n", {}, 8, {"train.global_batch", "world size"});
  c = Config{};
  c.train.micro_batch = 0;
  expect_invalid(c, "train.micro_batch");
  c = Config{};
  c.train.steps = 0;
  expect_invalid(c, "train.steps");
}

TEST(ConfigValidation, ExpertParallel) {
  Config c;
  c.parallel.ep_size = 4;
  EXPECT_NO_THROW(validate_config(c, 8));
  expect_invalid(c, "parallel.ep_size", 2);  // does not divide world size
  c.parallel.ep_size = 3;
  c.train.global_batch = 6;
  expect_invalid(c, "parallel.ep_size", 3);  // divides W = 3 but not n_routed 64
  c.parallel.ep_size = 0;
  expect_invalid(c, "parallel.ep_size");
  c = Config{};
  c.parallel.transport = Transport::Nccl;
  c.train.backend = BackendKind::Cpu;
  expect_invalid(c, "parallel.transport");
}

TEST(ConfigValidation, Schedule) {
  Config c;
  c.train.lr = 0;
  expect_invalid(c, "train.lr");
  c = Config{};
  c.train.min_lr = 2e-3;  // above lr 1e-3
  expect_invalid(c, "train.min_lr");
  c.train.min_lr = -1e-5;
  expect_invalid(c, "train.min_lr");
  c = Config{};
  c.train.warmup_steps = -1;
  expect_invalid(c, "train.warmup_steps");

  c = Config{};
  c.train.lr_schedule = LrSchedule::Multistep;
  expect_invalid(c, "train.lr_milestones");  // none given
  c.train.lr_milestones = {10, 20};
  c.train.lr_values = {1e-4};
  expect_invalid(c, "train.lr_values");
  c.train.lr_values = {1e-4, 1e-5};
  EXPECT_NO_THROW(validate_config(c, 1));
  c.train.lr_milestones = {20, 20};
  expect_invalid(c, "train.lr_milestones[1]");
  c.train.lr_milestones = {10, 20};
  c.train.lr_values = {1e-4, 0};
  expect_invalid(c, "train.lr_values[1]");
  c.train.lr_values = {1e-4, 1e-5};
  c.train.min_lr = 1.0;  // only the cosine floor: ignored by multistep
  EXPECT_NO_THROW(validate_config(c, 1));
}

TEST(ConfigValidation, Optimizer) {
  Config c;
  c.train.beta1 = 1.0;
  expect_invalid(c, "train.beta1");
  c = Config{};
  c.train.beta2 = -0.1;
  expect_invalid(c, "train.beta2");
  c = Config{};
  c.train.grad_clip = -1;
  expect_invalid(c, "train.grad_clip");
  c = Config{};
  c.train.adam_eps = 0;
  expect_invalid(c, "train.adam_eps");
  c = Config{};
  c.train.weight_decay = -0.1;
  expect_invalid(c, "train.weight_decay");
  c = Config{};
  c.train.precision = Precision::Float64;  // backend auto
  expect_invalid(c, "train.precision");
  c.train.backend = BackendKind::Cuda;
  expect_invalid(c, "train.precision");
  c.train.backend = BackendKind::Cpu;
  EXPECT_NO_THROW(validate_config(c, 1));
  c.train.precision = Precision::BFloat16;  // bf16 activations on every backend
  EXPECT_NO_THROW(validate_config(c, 1));
  c.train.backend = BackendKind::Cuda;
  EXPECT_NO_THROW(validate_config(c, 1));
  c.train.backend = BackendKind::Auto;
  EXPECT_NO_THROW(validate_config(c, 1));
}

TEST(ConfigValidation, DataCheckpointLog) {
  Config c;
  c.data.source = DataSource::Tokens;
  expect_invalid(c, "data.path");
  c.data.path = "x.bin";
  c.data.synthetic_branching = 0;  // unused with tokens
  EXPECT_NO_THROW(validate_config(c, 1));
  c = Config{};
  c.data.synthetic_branching = 0;
  expect_invalid(c, "data.synthetic_branching");
  c.data.synthetic_branching = c.model.vocab_size + 1;
  expect_invalid(c, "data.synthetic_branching");
  c.data.synthetic_branching = c.model.vocab_size;  // uniform noise: allowed
  EXPECT_NO_THROW(validate_config(c, 1));
  c = Config{};
  c.data.source = DataSource::Shards;
  expect_invalid(c, "data.path");
  c.data.path = "data/demo";
  EXPECT_NO_THROW(validate_config(c, 1));

  c = Config{};
  c.checkpoint.keep_last = 0;
  expect_invalid(c, "checkpoint.keep_last");
  c = Config{};
  c.log.interval = 0;
  expect_invalid(c, "log.interval");
  c = Config{};
  c.log.level = "verbose";
  expect_invalid(c, "log.level");
  c = Config{};
  c.log.out_dir = "";
  expect_invalid(c, "log.out_dir");
  // Parsing runs the same checks.
  expect_error("log:\n  level: loud\n", {"config: log.level:"});
}

// ----------------------------------------------------------------- overrides

TEST(ConfigOverrides, SetKeysBeforeValidation) {
  const Config c = parse_config("model:\n  hidden: 64\n  heads: 4\n",
                                {"model.hidden=128", "moe.gate=softmax", "train.lr=2e-3",
                                 "data.path=data/x.bin", "data.source=tokens",
                                 "balance.center_bias=true", "checkpoint.dir="});
  EXPECT_EQ(c.model.hidden, 128);
  EXPECT_EQ(c.model.heads, 4);
  EXPECT_EQ(c.moe.gate, GateFn::Softmax);
  EXPECT_DOUBLE_EQ(c.train.lr, 2e-3);
  EXPECT_EQ(c.data.source, DataSource::Tokens);
  EXPECT_EQ(c.data.path, "data/x.bin");
  EXPECT_TRUE(c.balance.center_bias);
  EXPECT_EQ(c.checkpoint.dir, "");
  // Later overrides win; validation sees the final values only (100 alone is
  // not divisible by 8 heads).
  EXPECT_EQ(parse_config("", {"model.hidden=100", "model.hidden=512"}).model.hidden, 512);
}

TEST(ConfigOverrides, ShardSourceAndValPath) {
  const Config c = parse_config("data:\n  source: shards\n  path: data/demo\n",
                                {"data.val_path=data/other/val_*.bin"});
  EXPECT_EQ(c.data.source, DataSource::Shards);
  EXPECT_EQ(c.data.path, "data/demo");
  EXPECT_EQ(c.data.val_path, "data/other/val_*.bin");
  EXPECT_EQ(parse_config(config_to_yaml(c)), c);
  EXPECT_EQ(Config{}.data.val_path, "");
  expect_error("data:\n  source: shards\n", {"config: data.path:", "shards"});
  expect_error("data:\n  val_path: [a]\n", {"data.val_path: expected a string, got a list"});
  expect_error("data:\n  source: shard\n", {"data.source", "shards"});
}

TEST(ConfigOverrides, ListValues) {
  const Config c = parse_config("", {"train.lr_schedule=multistep", "train.lr_milestones=[10, 20]",
                                     "train.lr_values=[1e-4,1e-5]"});
  EXPECT_EQ(c.train.lr_milestones, (std::vector<int64_t>{10, 20}));
  EXPECT_EQ(c.train.lr_values, (std::vector<double>{1e-4, 1e-5}));
  EXPECT_TRUE(parse_config("train:\n  lr_milestones: [5]\n", {"train.lr_milestones=[]"})
                  .train.lr_milestones.empty());
}

TEST(ConfigOverrides, Errors) {
  expect_set_error("model.hidden", {"override \"model.hidden\"", "expected section.key=value"});
  expect_set_error("hidden=64", {"override \"hidden=64\"", "expected section.key=value"});
  expect_set_error("model.attn.heads=4", {"model.attn.heads", "expected section.key=value"});
  expect_set_error("modle.hidden=64", {"config: modle: unknown section", "override \"modle.hidden=64\""});
  expect_set_error("moe.topk=2", {"config: moe.topk: unknown key", "top_k", "override \"moe.topk=2\""});
  expect_set_error("model.hidden=abc", {"config: model.hidden: expected an integer, got \"abc\"",
                                        "override"});
  expect_set_error("train.lr_milestones=[10,", {"train.lr_milestones", "not valid YAML"});
  expect_set_error("model.hidden=100", {"config: model.hidden:", "divisible"});  // validated after
}

// ------------------------------------------------------------------ presets

TEST(ConfigPresets, EveryShippedFileLoads) {
  const fs::path root = fs::path(MOE_SOURCE_DIR) / "configs";
  int n = 0;
  for (const auto& entry : fs::recursive_directory_iterator(root)) {
    if (!entry.is_regular_file() || entry.path().extension() != ".yaml") continue;
    SCOPED_TRACE(entry.path().string());
    EXPECT_NO_THROW({
      const Config c = load_config(entry.path().string(), {}, 1);
      EXPECT_EQ(parse_config(config_to_yaml(c)), c);
    });
    ++n;
  }
  EXPECT_GE(n, 18);  // tiny + 17 paper presets
}

TEST(ConfigPresets, Tiny) {
  const Config c = load_config(MOE_SOURCE_DIR "/configs/tiny.yaml");
  EXPECT_EQ(c.train.backend, BackendKind::Cpu);
  EXPECT_EQ(c.data.source, DataSource::Synthetic);
  EXPECT_EQ(c.model.vocab_size, 512);
  EXPECT_EQ(c.model.hidden, 64);
  EXPECT_EQ(c.model.moe_layers(), 2);
  EXPECT_EQ(c.moe.n_routed, 8);
  EXPECT_EQ(c.moe.top_k, 2);
  EXPECT_EQ(c.train.steps, 300);
  EXPECT_EQ(c.log.out_dir, "runs/tiny");
}

// The knob each paper preset varies (the paper's ablations), so a typo in one file shows.
TEST(ConfigPresets, PaperPresetsMatchThePaper) {
  const std::string dir = MOE_SOURCE_DIR "/configs/paper/";
  auto load = [&](const std::string& name) { return load_config(dir + name + ".yaml"); };

  const Config b1 = load("1b_loss_free");
  EXPECT_EQ(b1.model.hidden, 1024);
  EXPECT_EQ(b1.model.heads, 8);
  EXPECT_EQ(b1.model.layers, 9);
  EXPECT_EQ(b1.moe.n_shared, 2);
  EXPECT_EQ(b1.moe.n_routed, 64);
  EXPECT_EQ(b1.moe.top_k, 6);
  EXPECT_EQ(b1.train.global_batch, 1152);
  EXPECT_EQ(b1.train.steps, 40000);
  EXPECT_EQ(b1.train.lr_schedule, LrSchedule::Cosine);
  EXPECT_EQ(b1.balance.method, BalanceMethod::LossFree);
  EXPECT_DOUBLE_EQ(b1.balance.update_rate, 1e-3);
  EXPECT_EQ(b1.train.precision, Precision::BFloat16);  // GPU presets: bf16 matmuls

  const Config b3 = load("3b_aux_loss");
  EXPECT_EQ(b3.model.hidden, 1280);
  EXPECT_EQ(b3.train.steps, 56514);
  EXPECT_EQ(b3.train.lr_schedule, LrSchedule::Multistep);
  EXPECT_EQ(b3.train.lr_milestones, (std::vector<int64_t>{45211, 50862}));
  EXPECT_EQ(b3.balance.method, BalanceMethod::AuxLoss);
  EXPECT_EQ(load("3b_loss_free").balance.method, BalanceMethod::LossFree);

  struct Variant {
    const char* name;
    BalanceMethod method;
    GateFn gate;
    UpdateRule rule;
    BiasMode bias;
    double u_or_alpha;
  };
  using BM = BalanceMethod;
  const Variant variants[] = {
      {"1b_aux_loss", BM::AuxLoss, GateFn::Sigmoid, UpdateRule::Sign, BiasMode::Additive, 1e-3},
      {"1b_lf_u1e-4", BM::LossFree, GateFn::Sigmoid, UpdateRule::Sign, BiasMode::Additive, 1e-4},
      {"1b_lf_u1e-2", BM::LossFree, GateFn::Sigmoid, UpdateRule::Sign, BiasMode::Additive, 1e-2},
      {"1b_lf_proportional_u1e-2", BM::LossFree, GateFn::Sigmoid, UpdateRule::Proportional,
       BiasMode::Additive, 1e-2},
      {"1b_lf_proportional_u1e-3", BM::LossFree, GateFn::Sigmoid, UpdateRule::Proportional,
       BiasMode::Additive, 1e-3},
      {"1b_lf_proportional_u1e-4", BM::LossFree, GateFn::Sigmoid, UpdateRule::Proportional,
       BiasMode::Additive, 1e-4},
      {"1b_lf_multiplicative_u1e-2", BM::LossFree, GateFn::Sigmoid, UpdateRule::Sign,
       BiasMode::Multiplicative, 1e-2},
      {"1b_lf_multiplicative_u1e-3", BM::LossFree, GateFn::Sigmoid, UpdateRule::Sign,
       BiasMode::Multiplicative, 1e-3},
      {"1b_lf_multiplicative_u1e-4", BM::LossFree, GateFn::Sigmoid, UpdateRule::Sign,
       BiasMode::Multiplicative, 1e-4},
      {"1b_softmax_aux", BM::AuxLoss, GateFn::Softmax, UpdateRule::Sign, BiasMode::Additive, 3e-4},
      {"1b_softmax_lf_proportional", BM::LossFree, GateFn::Softmax, UpdateRule::Proportional,
       BiasMode::Additive, 1e-3},
      {"1b_aux_alpha1e-2", BM::AuxLoss, GateFn::Sigmoid, UpdateRule::Sign, BiasMode::Additive, 1e-2},
      {"1b_aux_alpha1e-4", BM::AuxLoss, GateFn::Sigmoid, UpdateRule::Sign, BiasMode::Additive, 1e-4},
      {"1b_aux_alpha0", BM::AuxLoss, GateFn::Sigmoid, UpdateRule::Sign, BiasMode::Additive, 0.0},
  };
  for (const auto& v : variants) {
    SCOPED_TRACE(v.name);
    const Config c = load(v.name);
    EXPECT_EQ(c.balance.method, v.method);
    EXPECT_EQ(c.moe.gate, v.gate);
    if (v.method == BM::LossFree) {
      EXPECT_EQ(c.balance.update_rule, v.rule);
      EXPECT_EQ(c.balance.bias_mode, v.bias);
      EXPECT_DOUBLE_EQ(c.balance.update_rate, v.u_or_alpha);
    } else {
      EXPECT_DOUBLE_EQ(c.balance.aux_alpha, v.u_or_alpha);
    }
    // Everything else is the 1B baseline.
    Config same = c;
    same.balance = b1.balance;
    same.moe.gate = b1.moe.gate;
    same.log = b1.log;
    same.checkpoint = b1.checkpoint;
    EXPECT_EQ(same, b1);
  }
}

// DeepSeek-V3's recipe and its small twin are deltas over the Loss-Free
// presets: the recipe's keys and nothing else differ.
TEST(ConfigPresets, DeepSeekV3RecipeIsLossFreePlusItsAdditions) {
  const std::string src = MOE_SOURCE_DIR "/configs/";
  auto expect_recipe = [](const Config& recipe, Config lf, int n_group, int topk_group, double route_scale) {
    EXPECT_EQ(recipe.balance.method, BalanceMethod::LossFree);
    EXPECT_DOUBLE_EQ(recipe.balance.update_rate, 1e-3);
    EXPECT_DOUBLE_EQ(recipe.balance.seq_aux_alpha, 1e-4);
    EXPECT_TRUE(recipe.moe.normalize_gates);
    lf.moe.normalize_gates = true;
    lf.moe.route_scale = route_scale;
    lf.moe.n_group = n_group;
    lf.moe.topk_group = topk_group;
    lf.balance.seq_aux_alpha = 1e-4;
    lf.log.out_dir = recipe.log.out_dir;  // named after each file
    lf.checkpoint.dir = recipe.checkpoint.dir;
    EXPECT_EQ(recipe, lf);
  };
  {
    SCOPED_TRACE("recipes/deepseek_v3_style");
    const Config r = load_config(src + "recipes/deepseek_v3_style.yaml");
    EXPECT_EQ(r.moe.n_routed / r.moe.n_group, 8);  // one group per rank of ep_size 8
    expect_recipe(r, load_config(src + "paper/1b_loss_free.yaml"), 8, 4, 2.5);
  }
  {
    SCOPED_TRACE("repro/small_deepseek_v3_style");
    expect_recipe(load_config(src + "repro/small_deepseek_v3_style.yaml"),
                  load_config(src + "repro/small_loss_free.yaml"), 8, 4, 1.0);
  }
  {
    SCOPED_TRACE("repro/small_lf_seq_aux");
    const Config r = load_config(src + "repro/small_lf_seq_aux.yaml");
    Config lf = load_config(src + "repro/small_loss_free.yaml");
    lf.balance.seq_aux_alpha = 1e-4;
    lf.log.out_dir = r.log.out_dir;
    lf.checkpoint.dir = r.checkpoint.dir;
    EXPECT_EQ(r, lf);
  }
}

// Every paper preset resolves (bases applied) to exactly the full config it
// held before it became a delta: tests/support/data/paper_resolved/ keeps those
// resolved configs, every key, as written by moe-train --print-config.
TEST(ConfigPresets, PaperDeltasResolveToTheFullConfigs) {
  const fs::path dir = fs::path(MOE_SOURCE_DIR) / "configs" / "paper";
  const fs::path want = fs::path(MOE_SOURCE_DIR) / "tests" / "support" / "data" / "paper_resolved";
  int n = 0;
  for (const auto& entry : fs::directory_iterator(dir)) {
    SCOPED_TRACE(entry.path().filename().string());
    const std::string resolved = config_to_yaml(load_config(entry.path().string()));
    EXPECT_EQ(resolved, read_text(want / entry.path().filename()));
    // A delta is a few lines over its base (the two bases are full files).
    const std::string text = read_text(entry.path());
    const long lines = std::count(text.begin(), text.end(), '\n');
    if (text.find("\nbase: ") != std::string::npos) {
      EXPECT_LE(lines, 15);
    }
    ++n;
  }
  EXPECT_EQ(n, 17);
}

namespace {
// The value after `flag ` in a command line ("" when absent).
std::string flag_value(const std::string& cmd, const std::string& flag) {
  const size_t at = cmd.find(" " + flag + " ");
  if (at == std::string::npos) return "";
  const size_t from = at + flag.size() + 2;
  return cmd.substr(from, cmd.find(' ', from) - from);
}
}  // namespace

// Every paper preset says which corpus it expects (data.prepare_hint) and how
// to make it, and the hint is right: its commands are those of
// docs/reproduction.md, the tokenizer they train is the one they prepare with,
// its vocabulary is the model's, and prepare writes the preset's data.path.
TEST(ConfigPresets, PaperPresetsNameTheCommandsThatMakeTheirData) {
  const fs::path root(MOE_SOURCE_DIR);
  const std::string doc = read_text(root / "docs" / "reproduction.md");
  ASSERT_NE(doc.find("\n## Paper scale\n"), std::string::npos);
  int n = 0;
  for (const auto& entry : fs::directory_iterator(root / "configs" / "paper")) {
    SCOPED_TRACE(entry.path().filename().string());
    const Config c = load_config(entry.path().string());
    const std::string& hint = c.data.prepare_hint;
    EXPECT_EQ(c.data.source, DataSource::Shards);
    const std::string where = " (docs/reproduction.md, Paper scale)";
    ASSERT_GT(hint.size(), where.size());
    ASSERT_EQ(hint.substr(hint.size() - where.size()), where) << hint;
    // "what it is: train the tokenizer && prepare (where)"
    const size_t first = hint.find("build/moe-data ");
    const size_t join = hint.find(" && ");
    ASSERT_NE(first, std::string::npos) << hint;
    ASSERT_NE(join, std::string::npos) << hint;
    const std::string train = hint.substr(first, join - first);
    const std::string prepare = hint.substr(join + 4, hint.size() - where.size() - join - 4);
    EXPECT_EQ(train.rfind("build/moe-data tokenizer-train ", 0), 0u) << train;
    EXPECT_EQ(prepare.rfind("build/moe-data prepare ", 0), 0u) << prepare;
    EXPECT_EQ(flag_value(train + " ", "--vocab-size"), std::to_string(c.model.vocab_size));
    EXPECT_EQ(flag_value(prepare, "--tokenizer"), flag_value(train, "--output") + ".model");
    EXPECT_EQ(flag_value(prepare + " ", "--output"), c.data.path);
    EXPECT_EQ(flag_value(train, "--input"), flag_value(prepare, "--input"));
    EXPECT_NE(doc.find("\n" + train + "\n"), std::string::npos) << train;
    EXPECT_NE(doc.find("\n" + prepare + "\n"), std::string::npos) << prepare;
    ++n;
  }
  EXPECT_EQ(n, 17);
  // The demo corpus presets name scripts/demo_corpus.sh, which writes data/demo.
  const std::string script = read_text(root / "scripts" / "demo_corpus.sh");
  EXPECT_NE(script.find("out=\"${1:-$repo/data/demo}\""), std::string::npos);
  for (const char* preset : {"configs/demo.yaml", "configs/repro/small_loss_free.yaml"}) {
    SCOPED_TRACE(preset);
    const Config c = load_config((root / preset).string());
    EXPECT_EQ(c.data.path, "data/demo");
    EXPECT_NE(c.data.prepare_hint.find("scripts/demo_corpus.sh"), std::string::npos);
  }
}

// base: composition. A scratch directory of configs for the cases below.
class ConfigBase : public ::testing::Test {
 protected:
  fs::path dir = fs::temp_directory_path() / ("moe_config_base_" + std::to_string(::getpid()));
  void SetUp() override { fs::create_directories(dir / "sub"); }
  void TearDown() override { fs::remove_all(dir); }
  std::string put(const std::string& name, const std::string& text) {
    std::ofstream(dir / name) << text;
    return (dir / name).string();
  }
};

TEST_F(ConfigBase, FileKeysThenOverridesReplaceTheBase) {
  put("root.yaml", "model: {hidden: 48, heads: 4}\ntrain: {lr: 0.5, steps: 7}\n");
  put("sub/mid.yaml", "base: ../root.yaml\ntrain: {lr: 0.25}\n");  // relative to mid.yaml
  const std::string leaf = put("leaf.yaml", "base: sub/mid.yaml\nmodel: {heads: 2}\n");
  const Config c = load_config(leaf, {"train.steps=9"});
  EXPECT_EQ(c.model.hidden, 48);        // from the root
  EXPECT_EQ(c.model.heads, 2);          // the leaf over the root
  EXPECT_DOUBLE_EQ(c.train.lr, 0.25);   // the middle over the root
  EXPECT_EQ(c.train.steps, 9);          // --set over all
  EXPECT_EQ(c.train.warmup_steps, Config{}.train.warmup_steps);  // untouched: the default
  // The resolved config has no base: it holds every key.
  EXPECT_EQ(config_to_yaml(c).find("base"), std::string::npos);
}

// A file's run directories come from its own name, not its base's: two
// presets over one base never share a directory.
TEST_F(ConfigBase, RunDirectoriesDefaultToTheFileStem) {
  put("root.yaml", "train: {steps: 7}\n");
  const std::string a = put("exp_a.yaml", "base: root.yaml\n");
  const std::string b = put("exp_b.yaml", "base: root.yaml\n");
  EXPECT_EQ(load_config(a).log.out_dir, "runs/exp_a");
  EXPECT_EQ(load_config(a).checkpoint.dir, "runs/exp_a/checkpoints");
  EXPECT_EQ(load_config(b).log.out_dir, "runs/exp_b");
  // Checkpoints follow an out_dir set by a file, a base or an override ...
  EXPECT_EQ(load_config(a, {"log.out_dir=/tmp/x"}).checkpoint.dir, "/tmp/x/checkpoints");
  put("root_dir.yaml", "log: {out_dir: out/here}\n");
  const std::string c = put("exp_c.yaml", "base: root_dir.yaml\n");
  EXPECT_EQ(load_config(c).log.out_dir, "out/here");
  EXPECT_EQ(load_config(c).checkpoint.dir, "out/here/checkpoints");
  // ... unless checkpoint.dir is set, empty meaning no checkpoints.
  EXPECT_EQ(load_config(a, {"checkpoint.dir="}).checkpoint.dir, "");
  const std::string d = put("exp_d.yaml", "checkpoint: {dir: elsewhere}\n");
  EXPECT_EQ(load_config(d).checkpoint.dir, "elsewhere");
  EXPECT_EQ(load_config(d).log.out_dir, "runs/exp_d");
  // Text has no file name: the plain defaults.
  EXPECT_EQ(parse_config("train: {steps: 7}\n").log.out_dir, "runs/default");
  EXPECT_EQ(parse_config("train: {steps: 7}\n").checkpoint.dir, "");
}

TEST_F(ConfigBase, CycleMissingAndMalformedBasesAreOneLineErrors) {
  put("a.yaml", "base: b.yaml\n");
  put("b.yaml", "base: c.yaml\n");
  put("c.yaml", "base: a.yaml\n");
  expect_error_text([&] { load_config((dir / "a.yaml").string()); },
                    {"config: base: a cycle:", "a.yaml -> ", "b.yaml -> ", "c.yaml -> "});
  put("self.yaml", "base: self.yaml\n");
  expect_error_text([&] { load_config((dir / "self.yaml").string()); }, {"a cycle", "self.yaml"});
  put("lost.yaml", "base: nowhere.yaml\n");
  expect_error_text([&] { load_config((dir / "lost.yaml").string()); },
                    {"lost.yaml: base:", "nowhere.yaml: no such file"});
  put("list.yaml", "base: [a.yaml]\n");
  expect_error_text([&] { load_config((dir / "list.yaml").string()); },
                    {"config: base:", "path of a config file"});
  expect_error_text([&] { parse_config("base: a.yaml\n"); }, {"config: base:", "config file"});
}

// docs/config.md documents every key as `section.key`.
TEST(ConfigDocs, EveryKeyDocumented) {
  const std::string doc = read_text(fs::path(MOE_SOURCE_DIR) / "docs" / "config.md");
  ASSERT_FALSE(doc.empty());
  std::istringstream y(config_to_yaml(Config{}));
  std::string line, section;
  int keys = 0;
  while (std::getline(y, line)) {
    const auto colon = line.find(':');
    if (line.rfind("  ", 0) != 0) {
      section = line.substr(0, colon);
      continue;
    }
    const std::string key = section + "." + line.substr(2, colon - 2);
    EXPECT_NE(doc.find("`" + key + "`"), std::string::npos) << key << " missing from docs/config.md";
    ++keys;
  }
  EXPECT_EQ(keys, 69);
}
