// Strict YAML <-> Config. One table (for_each_field) lists every key once; the
// parser, the override path, the "known keys" hints and the emitter all walk it,
// so they cannot drift apart. Every error is one line: "config: <key>: <what>".
#include "config/config.h"

#include <yaml-cpp/yaml.h>

#include <array>
#include <cerrno>
#include <charconv>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <optional>
#include <set>
#include <sstream>
#include <type_traits>

#include "core/error.h"

namespace moe {
namespace {

// ---------------------------------------------------------------- enum names

template <class E>
struct EnumNames;
#define MOE_ENUM_NAMES(E, ...)                                                    \
  template <>                                                                     \
  struct EnumNames<E> {                                                           \
    static constexpr std::pair<E, const char*> items[] = {__VA_ARGS__};           \
  };
MOE_ENUM_NAMES(GateFn, {GateFn::Sigmoid, "sigmoid"}, {GateFn::Softmax, "softmax"})
MOE_ENUM_NAMES(BalanceMethod, {BalanceMethod::LossFree, "loss_free"},
               {BalanceMethod::AuxLoss, "aux_loss"}, {BalanceMethod::None, "none"})
MOE_ENUM_NAMES(UpdateRule, {UpdateRule::Sign, "sign"}, {UpdateRule::Proportional, "proportional"})
MOE_ENUM_NAMES(BiasMode, {BiasMode::Additive, "additive"},
               {BiasMode::Multiplicative, "multiplicative"})
MOE_ENUM_NAMES(AuxScope, {AuxScope::Sequence, "sequence"}, {AuxScope::Batch, "batch"})
MOE_ENUM_NAMES(LrSchedule, {LrSchedule::Cosine, "cosine"}, {LrSchedule::Multistep, "multistep"},
               {LrSchedule::Constant, "constant"})
MOE_ENUM_NAMES(DataSource, {DataSource::Synthetic, "synthetic"}, {DataSource::Tokens, "tokens"},
               {DataSource::Shards, "shards"})
MOE_ENUM_NAMES(TokenDType, {TokenDType::U16, "uint16"}, {TokenDType::U32, "uint32"})
MOE_ENUM_NAMES(BackendKind, {BackendKind::Auto, "auto"}, {BackendKind::Cpu, "cpu"},
               {BackendKind::Cuda, "cuda"})
MOE_ENUM_NAMES(Precision, {Precision::Float32, "float32"}, {Precision::Float64, "float64"},
               {Precision::BFloat16, "bfloat16"})
MOE_ENUM_NAMES(Transport, {Transport::Auto, "auto"}, {Transport::Mpi, "mpi"},
               {Transport::Nccl, "nccl"})
MOE_ENUM_NAMES(NonFinitePolicy, {NonFinitePolicy::Skip, "skip"}, {NonFinitePolicy::Stop, "stop"})
MOE_ENUM_NAMES(Recompute, {Recompute::None, "none"}, {Recompute::Selective, "selective"},
               {Recompute::Full, "full"})
#undef MOE_ENUM_NAMES

template <class E>
const char* enum_name(E v) {
  for (const auto& [e, name] : EnumNames<E>::items)
    if (e == v) return name;
  return "?";  // unreachable for valid enum values
}

template <class E>
std::string enum_choices() {
  std::string s;
  for (const auto& [e, name] : EnumNames<E>::items) {
    if (!s.empty()) s += '|';
    s += name;
  }
  return s;
}

// ------------------------------------------------------------- field table

// What each key does to training (KeyMeta, config.h). kNoEffect: changes no
// trained weight. In-training evaluation leaves training bit-identical;
// loss_chunk_tokens changes only the float summation order of one gradient;
// nonfinite and max_consecutive_skips act only on a step that is already lost.
constexpr KeyMeta kChanges{};
constexpr KeyMeta kSeed{TrainingEffect::Seed};
constexpr KeyMeta kNoEffect{TrainingEffect::None};
constexpr KeyMeta kLossFreeOnly{TrainingEffect::Changes, "balance.method", "loss_free"};
constexpr KeyMeta kAuxLossOnly{TrainingEffect::Changes, "balance.method", "aux_loss"};

// Calls v(section, key, field, meta) for every key, sections contiguous and in
// canonical order. C is Config or const Config.
template <class C, class V>
void for_each_field(C& c, V&& v) {
  v("model", "vocab_size", c.model.vocab_size, kChanges);
  v("model", "hidden", c.model.hidden, kChanges);
  v("model", "heads", c.model.heads, kChanges);
  v("model", "layers", c.model.layers, kChanges);
  v("model", "first_dense_layers", c.model.first_dense_layers, kChanges);
  v("model", "dense_intermediate", c.model.dense_intermediate, kChanges);
  v("model", "seq_len", c.model.seq_len, kChanges);
  v("model", "rope_theta", c.model.rope_theta, kChanges);
  v("model", "norm_eps", c.model.norm_eps, kChanges);
  v("model", "init_std", c.model.init_std, kChanges);

  v("moe", "n_shared", c.moe.n_shared, kChanges);
  v("moe", "n_routed", c.moe.n_routed, kChanges);
  v("moe", "top_k", c.moe.top_k, kChanges);
  v("moe", "expert_intermediate", c.moe.expert_intermediate, kChanges);
  v("moe", "gate", c.moe.gate, kChanges);
  v("moe", "normalize_gates", c.moe.normalize_gates, kChanges);
  v("moe", "route_scale", c.moe.route_scale, kChanges);
  v("moe", "n_group", c.moe.n_group, kChanges);
  v("moe", "topk_group", c.moe.topk_group, kChanges);

  v("balance", "method", c.balance.method, kChanges);
  v("balance", "update_rate", c.balance.update_rate, kLossFreeOnly);
  v("balance", "update_rule", c.balance.update_rule, kLossFreeOnly);
  v("balance", "bias_mode", c.balance.bias_mode, kLossFreeOnly);
  v("balance", "center_bias", c.balance.center_bias, kLossFreeOnly);
  v("balance", "aux_alpha", c.balance.aux_alpha, kAuxLossOnly);
  v("balance", "aux_scope", c.balance.aux_scope, kAuxLossOnly);
  v("balance", "seq_aux_alpha", c.balance.seq_aux_alpha, kLossFreeOnly);

  v("train", "steps", c.train.steps, kChanges);
  v("train", "global_batch", c.train.global_batch, kChanges);
  v("train", "micro_batch", c.train.micro_batch, kChanges);
  v("train", "lr", c.train.lr, kChanges);
  v("train", "lr_schedule", c.train.lr_schedule, kChanges);
  v("train", "warmup_steps", c.train.warmup_steps, kChanges);
  v("train", "min_lr", c.train.min_lr, kChanges);
  v("train", "lr_milestones", c.train.lr_milestones, kChanges);
  v("train", "lr_values", c.train.lr_values, kChanges);
  v("train", "beta1", c.train.beta1, kChanges);
  v("train", "beta2", c.train.beta2, kChanges);
  v("train", "adam_eps", c.train.adam_eps, kChanges);
  v("train", "weight_decay", c.train.weight_decay, kChanges);
  v("train", "grad_clip", c.train.grad_clip, kChanges);
  v("train", "seed", c.train.seed, kSeed);
  v("train", "backend", c.train.backend, kChanges);
  v("train", "precision", c.train.precision, kChanges);
  v("train", "threads", c.train.threads, kNoEffect);
  v("train", "nonfinite", c.train.nonfinite, kNoEffect);
  v("train", "max_consecutive_skips", c.train.max_consecutive_skips, kNoEffect);
  v("train", "eval_interval", c.train.eval_interval, kNoEffect);
  v("train", "eval_max_tokens", c.train.eval_max_tokens, kNoEffect);
  v("train", "final_eval", c.train.final_eval, kNoEffect);
  v("train", "loss_chunk_tokens", c.train.loss_chunk_tokens, kNoEffect);
  v("train", "zero", c.train.zero, kChanges);
  v("train", "recompute", c.train.recompute, kChanges);

  v("data", "source", c.data.source, kChanges);
  v("data", "path", c.data.path, kChanges);
  v("data", "dtype", c.data.dtype, kChanges);
  v("data", "val_path", c.data.val_path, kChanges);
  v("data", "synthetic_branching", c.data.synthetic_branching, kChanges);
  v("data", "prepare_hint", c.data.prepare_hint, kChanges);

  v("parallel", "ep_size", c.parallel.ep_size, kChanges);
  v("parallel", "transport", c.parallel.transport, kNoEffect);
  v("parallel", "timeout_seconds", c.parallel.timeout_seconds, kNoEffect);

  v("checkpoint", "dir", c.checkpoint.dir, kNoEffect);
  v("checkpoint", "interval", c.checkpoint.interval, kNoEffect);
  v("checkpoint", "keep_last", c.checkpoint.keep_last, kNoEffect);

  v("log", "interval", c.log.interval, kNoEffect);
  v("log", "out_dir", c.log.out_dir, kNoEffect);
  v("log", "expert_load_interval", c.log.expert_load_interval, kNoEffect);
  v("log", "level", c.log.level, kNoEffect);
}

std::vector<std::string> section_names() {
  std::vector<std::string> out;
  const Config c;
  for_each_field(c, [&](const char* s, const char*, const auto&, const KeyMeta&) {
    if (out.empty() || out.back() != s) out.push_back(s);
  });
  return out;
}

bool is_section(const std::string& sec) {
  for (const auto& s : section_names())
    if (s == sec) return true;
  return false;
}

std::string join(const std::vector<std::string>& v) {
  std::string s;
  for (const auto& x : v) {
    if (!s.empty()) s += ", ";
    s += x;
  }
  return s;
}

std::string known_keys(const std::string& sec) {
  std::vector<std::string> keys;
  const Config c;
  for_each_field(c, [&](const char* s, const char* k, const auto&, const KeyMeta&) {
    if (sec == s) keys.push_back(k);
  });
  return join(keys);
}

// ------------------------------------------------------------------ errors

// Where a value came from, appended to messages: "tiny.yaml:12", "line 3",
// "override \"a.b=c\"". Empty for cross-key checks.
struct Ctx {
  std::string key;    // full key, e.g. "model.hidden" or "train.lr_values[1]"
  std::string where;
};

[[noreturn]] void fail(const std::string& key, const std::string& what,
                       const std::string& where = "") {
  throw ConfigError("config: " + key + ": " + what + (where.empty() ? "" : " (" + where + ")"));
}
[[noreturn]] void fail(const Ctx& k, const std::string& what) { fail(k.key, what, k.where); }

// Quoted and kept to one short line, whatever the user wrote.
std::string quote(const std::string& s) {
  std::string q = "\"";
  for (char ch : s.substr(0, 60)) {
    if (ch == '\n') q += "\\n";
    else if (ch == '"' || ch == '\\') q += std::string("\\") + ch;
    else q += ch;
  }
  return q + (s.size() > 60 ? "...\"" : "\"");
}

std::string describe(const YAML::Node& n) {
  switch (n.Type()) {
    case YAML::NodeType::Null: return "null";
    case YAML::NodeType::Sequence: return "a list";
    case YAML::NodeType::Map: return "a map";
    case YAML::NodeType::Scalar: return quote(n.Scalar());
    default: return "nothing";
  }
}

std::string where_of(const YAML::Node& n, const std::string& origin) {
  const YAML::Mark m = n.Mark();
  if (m.is_null()) return origin;
  const std::string line = std::to_string(m.line + 1);
  return origin.empty() ? "line " + line : origin + ":" + line;
}

// Shortest text that parses back to exactly the same double.
std::string fmt_double(double v) {
  std::array<char, 64> buf{};
  auto res = std::to_chars(buf.data(), buf.data() + buf.size(), v);
  return std::string(buf.data(), res.ptr);
}

// ------------------------------------------------------------------ readers

// A scalar written without quotes: numbers and booleans must be plain, so that
// `hidden: "64"` is rejected as a string rather than silently converted.
const std::string& plain_scalar(const YAML::Node& n, const Ctx& k, const std::string& expected) {
  if (!n.IsScalar() || n.Tag() == "!") fail(k, "expected " + expected + ", got " + describe(n));
  return n.Scalar();
}

// Every integer key is a count, size, step or seed: negatives are never valid.
template <class I>
I read_integer(const YAML::Node& n, const Ctx& k) {
  std::string s = plain_scalar(n, k, "an integer");
  if (!s.empty() && s[0] == '+') s.erase(0, 1);
  const char* end = s.data() + s.size();
  long long as_signed = 0;
  if (!s.empty() && s[0] == '-') {
    auto r = std::from_chars(s.data(), end, as_signed);
    if (r.ec == std::errc() && r.ptr == end && as_signed != 0)
      fail(k, "expected a non-negative integer, got " + quote(n.Scalar()));
  }
  I v{};
  auto r = std::from_chars(s.data(), end, v);
  if (r.ec == std::errc::result_out_of_range)
    fail(k, "integer out of range, got " + quote(n.Scalar()));
  if (r.ec != std::errc() || r.ptr != end || s.empty())
    fail(k, "expected an integer, got " + quote(n.Scalar()));
  return v;
}

double read_double(const YAML::Node& n, const Ctx& k) {
  std::string s = plain_scalar(n, k, "a finite number");
  if (!s.empty() && s[0] == '+') s.erase(0, 1);
  const char* end = s.data() + s.size();
  double v = 0;
  auto r = std::from_chars(s.data(), end, v);
  if (r.ec != std::errc() || r.ptr != end || s.empty() || !std::isfinite(v))
    fail(k, "expected a finite number, got " + quote(n.Scalar()));
  return v;
}

bool read_bool(const YAML::Node& n, const Ctx& k) {
  // YAML 1.2 core schema only: no yes/no/on/off surprises.
  const std::string& s = plain_scalar(n, k, "true or false");
  if (s == "true" || s == "True" || s == "TRUE") return true;
  if (s == "false" || s == "False" || s == "FALSE") return false;
  fail(k, "expected true or false, got " + quote(s));
}

template <class T>
void read_value(const YAML::Node& n, const Ctx& k, T& out) {
  if constexpr (std::is_same_v<T, bool>) {
    out = read_bool(n, k);
  } else if constexpr (std::is_integral_v<T>) {
    out = read_integer<T>(n, k);
  } else if constexpr (std::is_same_v<T, double>) {
    out = read_double(n, k);
  } else if constexpr (std::is_same_v<T, std::string>) {
    if (n.IsNull()) {  // `dir:` with nothing after it means empty
      out.clear();
      return;
    }
    if (!n.IsScalar()) fail(k, "expected a string, got " + describe(n));
    out = n.Scalar();
  } else if constexpr (std::is_enum_v<T>) {
    const std::string choices = enum_choices<T>();
    if (!n.IsScalar()) fail(k, "expected one of " + choices + ", got " + describe(n));
    for (const auto& [e, name] : EnumNames<T>::items)
      if (n.Scalar() == name) {
        out = e;
        return;
      }
    fail(k, "expected one of " + choices + ", got " + quote(n.Scalar()));
  } else {  // std::vector<...>
    if (n.IsNull()) {
      out.clear();
      return;
    }
    if (!n.IsSequence()) fail(k, "expected a list, got " + describe(n));
    T v(n.size());
    for (std::size_t i = 0; i < n.size(); ++i)
      read_value(n[i], Ctx{k.key + "[" + std::to_string(i) + "]", k.where}, v[i]);
    out = std::move(v);
  }
}

// Sets sec.key from n; false when there is no such key.
bool set_field(Config& c, const std::string& sec, const std::string& key, const YAML::Node& n,
               const std::string& where) {
  bool found = false;
  for_each_field(c, [&](const char* s, const char* k, auto& field, const KeyMeta&) {
    if (!found && sec == s && key == k) {
      read_value(n, Ctx{sec + "." + key, where}, field);
      found = true;
    }
  });
  return found;
}

std::string key_text(const YAML::Node& key, const std::string& parent) {
  if (!key.IsScalar()) fail(parent.empty() ? "(top level)" : parent, "keys must be plain names");
  return key.Scalar();
}

// Applies a parsed document; origin is the file name or "" for text.
void apply_document(Config& c, const YAML::Node& root, const std::string& origin) {
  if (root.IsNull()) return;  // empty file: all defaults
  if (!root.IsMap())
    fail("(top level)", "expected a map of sections, got " + describe(root), where_of(root, origin));
  std::set<std::string> seen_sections;
  for (auto it = root.begin(); it != root.end(); ++it) {
    const std::string sec = key_text(it->first, "");
    const std::string where = where_of(it->first, origin);
    if (!is_section(sec))
      fail(sec, "unknown section (known: " + join(section_names()) + ")", where);
    if (!seen_sections.insert(sec).second) fail(sec, "duplicate section", where);
    const YAML::Node body = it->second;  // a copy: it-> yields a temporary
    if (body.IsNull()) continue;  // `moe:` alone: all defaults
    if (!body.IsMap()) fail(sec, "expected a map of keys, got " + describe(body), where);
    std::set<std::string> seen_keys;
    for (auto kv = body.begin(); kv != body.end(); ++kv) {
      const std::string key = key_text(kv->first, sec);
      const std::string full = sec + "." + key;
      const std::string kwhere = where_of(kv->first, origin);
      if (!seen_keys.insert(key).second) fail(full, "duplicate key", kwhere);
      if (!set_field(c, sec, key, kv->second, kwhere))
        fail(full, "unknown key (known: " + known_keys(sec) + ")", kwhere);
    }
  }
}

std::string trim(const std::string& s) {
  const auto b = s.find_first_not_of(" \t");
  if (b == std::string::npos) return "";
  return s.substr(b, s.find_last_not_of(" \t") - b + 1);
}

void apply_override(Config& c, const std::string& ov) {
  const std::string where = "override " + quote(ov);
  const auto eq = ov.find('=');
  const std::string path = trim(ov.substr(0, eq));
  const auto dot = path.find('.');
  if (eq == std::string::npos || dot == std::string::npos || dot == 0 ||
      dot + 1 == path.size() || path.find('.', dot + 1) != std::string::npos)
    throw ConfigError("config: " + where + ": expected section.key=value");
  const std::string sec = path.substr(0, dot), key = path.substr(dot + 1);
  if (!is_section(sec)) fail(sec, "unknown section (known: " + join(section_names()) + ")", where);
  YAML::Node value;
  try {
    value = YAML::Load(ov.substr(eq + 1));
  } catch (const YAML::Exception& e) {
    fail(path, "value is not valid YAML: " + e.msg, where);
  }
  if (!set_field(c, sec, key, value, where))
    fail(path, "unknown key (known: " + known_keys(sec) + ")", where);
}

YAML::Node parse_yaml(const std::string& text, const std::string& origin) {
  try {
    return YAML::Load(text);
  } catch (const YAML::Exception& e) {
    const std::string pos = std::to_string(e.mark.line + 1) + ":" + std::to_string(e.mark.column + 1);
    throw ConfigError("config: " + (origin.empty() ? "line " + pos : origin + ":" + pos) +
                      ": YAML syntax error: " + e.msg);
  }
}

std::string read_file(const std::string& path) {
  std::error_code ec;
  if (std::filesystem::is_directory(path, ec))
    throw ConfigError("config: " + path + ": is a directory, expected a YAML file");
  std::ifstream in(path);
  if (!in) throw ConfigError("config: " + path + ": cannot open file (" + std::strerror(errno) + ")");
  std::ostringstream text;
  text << in.rdbuf();
  if (in.bad()) throw ConfigError("config: " + path + ": cannot read file");
  return text.str();
}

// A parsed config document and the file it came from.
struct Document {
  YAML::Node root;
  std::string origin;
};

// The top-level `base: PATH` of a document (removed from it), or "".
std::string take_base(YAML::Node& root, const std::string& origin) {
  if (!root.IsMap() || !root["base"]) return "";
  const YAML::Node b = root["base"];
  if (!b.IsScalar() || b.Scalar().empty())
    fail("base", "expected the path of a config file, got " + describe(b), where_of(b, origin));
  const std::string base = b.Scalar();
  root.remove("base");
  return base;
}

// The documents of `path` and of its bases, the deepest base first: each
// file's keys override its base's. `chain` holds the files being resolved,
// outermost first, to refuse a cycle by naming it.
void collect_documents(const std::string& path, std::vector<std::string>& chain,
                       std::vector<Document>& docs) {
  std::error_code ec;
  const std::string id = std::filesystem::weakly_canonical(path, ec).string();
  for (size_t i = 0; i < chain.size(); ++i)
    if (chain[i] == id) {
      std::string cycle;
      for (size_t j = i; j < chain.size(); ++j) cycle += chain[j] + " -> ";
      throw ConfigError("config: base: a cycle: " + cycle + id);
    }
  YAML::Node root = parse_yaml(read_file(path), path);
  const std::string base = take_base(root, path);
  chain.push_back(id);
  if (!base.empty()) {
    const std::filesystem::path p = std::filesystem::path(path).parent_path() / base;
    if (!std::filesystem::exists(p, ec))
      throw ConfigError("config: " + path + ": base: " + p.string() + ": no such file");
    collect_documents(p.string(), chain, docs);
  }
  chain.pop_back();
  docs.push_back({root, path});
}

// Whether a document or an override sets section.key.
bool sets_key(const std::vector<Document>& docs, const std::vector<std::string>& overrides,
              const std::string& sec, const std::string& key) {
  for (const Document& d : docs) {
    if (!d.root.IsMap()) continue;
    const YAML::Node section = static_cast<const YAML::Node&>(d.root)[sec];
    if (section && section.IsMap() && section[key]) return true;
  }
  for (const auto& ov : overrides)
    if (trim(ov.substr(0, ov.find('='))) == sec + "." + key) return true;
  return false;
}

// stem: the config file's name without its extension ("" for text). A file's
// run writes to runs/<stem> and checkpoints to <out_dir>/checkpoints unless
// told otherwise, so two presets never share a directory.
Config resolve(const std::vector<Document>& docs, const std::vector<std::string>& overrides,
               int world_size, const std::string& stem = "") {
  Config c;
  for (const Document& d : docs) apply_document(c, d.root, d.origin);
  for (const auto& ov : overrides) apply_override(c, ov);
  if (!stem.empty()) {
    if (!sets_key(docs, overrides, "log", "out_dir")) c.log.out_dir = "runs/" + stem;
    if (!sets_key(docs, overrides, "checkpoint", "dir"))
      c.checkpoint.dir = (std::filesystem::path(c.log.out_dir) / "checkpoints").string();
  }
  validate_config(c, world_size);
  return c;
}

// -------------------------------------------------------------- validation

template <class T>
std::string num(T v) {
  if constexpr (std::is_floating_point_v<T>) return fmt_double(v);
  else return std::to_string(v);
}
template <class T>
void positive(const std::string& key, T v) {
  if (!(v > 0)) fail(key, "must be positive, got " + num(v));
}
template <class T>
void non_negative(const std::string& key, T v) {
  if (!(v >= 0)) fail(key, "must be >= 0, got " + num(v));
}
void in_range(const std::string& key, long long v, long long lo, long long hi,
              const std::string& why) {
  if (v < lo || v > hi)
    fail(key, "must be in [" + num(lo) + ", " + num(hi) + "] (" + why + "), got " + num(v));
}

}  // namespace

// ------------------------------------------------------------------ public

Config parse_config(const std::string& yaml_text, const std::vector<std::string>& overrides,
                    int world_size) {
  YAML::Node root = parse_yaml(yaml_text, "");
  if (root.IsMap() && root["base"])
    fail("base", "only a config file has a base (a path relative to the file)");
  return resolve({{root, ""}}, overrides, world_size);
}

Config load_config(const std::string& path, const std::vector<std::string>& overrides,
                   int world_size) {
  std::vector<std::string> chain;
  std::vector<Document> docs;
  collect_documents(path, chain, docs);
  return resolve(docs, overrides, world_size, std::filesystem::path(path).stem().string());
}

void validate_config(const Config& c, int world_size) {
  if (world_size < 1) fail("(world size)", "must be positive, got " + num(world_size));
  const ModelConfig& m = c.model;
  positive("model.vocab_size", m.vocab_size);
  positive("model.hidden", m.hidden);
  positive("model.heads", m.heads);
  positive("model.layers", m.layers);
  positive("model.dense_intermediate", m.dense_intermediate);
  positive("model.seq_len", m.seq_len);
  positive("model.rope_theta", m.rope_theta);
  positive("model.norm_eps", m.norm_eps);
  positive("model.init_std", m.init_std);
  if (m.hidden % m.heads != 0)
    fail("model.hidden", num(m.hidden) + " is not divisible by model.heads = " +
                             num(m.heads));
  if (m.head_dim() % 2 != 0)
    fail("model.hidden", "head dim model.hidden / model.heads = " + num(m.head_dim()) +
                             " must be even (RoPE rotates pairs of dimensions)");
  in_range("model.first_dense_layers", m.first_dense_layers, 0, m.layers,
           "0 .. model.layers");

  const MoeConfig& e = c.moe;
  non_negative("moe.n_shared", e.n_shared);
  positive("moe.n_routed", e.n_routed);
  in_range("moe.top_k", e.top_k, 1, e.n_routed, "1 .. moe.n_routed");
  positive("moe.expert_intermediate", e.expert_intermediate);
  positive("moe.route_scale", e.route_scale);
  positive("moe.n_group", e.n_group);
  if (e.n_routed % e.n_group != 0)
    fail("moe.n_group", num(e.n_group) + " does not divide moe.n_routed = " + num(e.n_routed));
  in_range("moe.topk_group", e.topk_group, 1, e.n_group, "1 .. moe.n_group");
  if (e.top_k > (long long)e.topk_group * (e.n_routed / e.n_group))
    fail("moe.top_k", num(e.top_k) + " exceeds the experts of moe.topk_group groups: " +
                          num(e.topk_group) + " x moe.n_routed / moe.n_group = " +
                          num(e.topk_group) + " x " + num(e.n_routed / e.n_group) + " = " +
                          num((long long)e.topk_group * (e.n_routed / e.n_group)));

  const BalanceConfig& b = c.balance;
  if (b.method == BalanceMethod::LossFree && !(b.update_rate > 0))
    fail("balance.update_rate", "must be positive with balance.method loss_free, got " +
                                    num(b.update_rate));
  non_negative("balance.aux_alpha", b.aux_alpha);
  non_negative("balance.seq_aux_alpha", b.seq_aux_alpha);
  if (b.seq_aux_alpha != 0.0 && b.method != BalanceMethod::LossFree)
    fail("balance.seq_aux_alpha",
         "is the complementary loss of balance.method loss_free (got method " +
             std::string(to_string(b.method)) + "); set it to 0 or use balance.aux_alpha");

  const TrainConfig& t = c.train;
  positive("train.steps", t.steps);
  positive("train.global_batch", t.global_batch);
  positive("train.micro_batch", t.micro_batch);
  const long long per_round = (long long)t.micro_batch * world_size;
  if (t.global_batch % per_round != 0)
    fail("train.global_batch",
         num(t.global_batch) + " is not a multiple of train.micro_batch x world size = " +
             num(t.micro_batch) + " x " + num(world_size) + " = " +
             num(per_round) + " (every rank runs whole micro-batches each step)");
  positive("train.lr", t.lr);
  non_negative("train.min_lr", t.min_lr);
  if (t.lr_schedule == LrSchedule::Cosine && t.min_lr > t.lr)
    fail("train.min_lr", "cosine floor must be <= train.lr = " + num(t.lr) + ", got " +
                             num(t.min_lr));
  non_negative("train.warmup_steps", t.warmup_steps);
  if (t.lr_schedule == LrSchedule::Multistep) {
    if (t.lr_milestones.empty())
      fail("train.lr_milestones", "must be non-empty with train.lr_schedule multistep");
    if (t.lr_values.size() != t.lr_milestones.size())
      fail("train.lr_values", "has " + std::to_string(t.lr_values.size()) +
                                  " entries but train.lr_milestones has " +
                                  std::to_string(t.lr_milestones.size()));
    for (std::size_t i = 0; i < t.lr_milestones.size(); ++i) {
      const std::string ki = "train.lr_milestones[" + std::to_string(i) + "]";
      positive(ki, t.lr_milestones[i]);
      if (i > 0 && t.lr_milestones[i] <= t.lr_milestones[i - 1])
        fail(ki, "milestones must be strictly increasing, got " +
                     num(t.lr_milestones[i - 1]) + " then " +
                     num(t.lr_milestones[i]));
      positive("train.lr_values[" + std::to_string(i) + "]", t.lr_values[i]);
    }
  }
  if (!(t.beta1 >= 0 && t.beta1 < 1)) fail("train.beta1", "must be in [0, 1), got " + num(t.beta1));
  if (!(t.beta2 >= 0 && t.beta2 < 1)) fail("train.beta2", "must be in [0, 1), got " + num(t.beta2));
  positive("train.adam_eps", t.adam_eps);
  non_negative("train.weight_decay", t.weight_decay);
  non_negative("train.grad_clip", t.grad_clip);
  non_negative("train.threads", t.threads);
  positive("train.max_consecutive_skips", t.max_consecutive_skips);
  non_negative("train.eval_interval", t.eval_interval);
  non_negative("train.eval_max_tokens", t.eval_max_tokens);
  non_negative("train.loss_chunk_tokens", t.loss_chunk_tokens);
  in_range("train.zero", t.zero, 0, 1, "0 (off) or 1 (ZeRO stage 1)");
  if (t.precision == Precision::Float64 && t.backend != BackendKind::Cpu)
    fail("train.precision", "float64 requires train.backend cpu, got " +
                                std::string(to_string(t.backend)));

  const DataConfig& d = c.data;
  if (d.source != DataSource::Synthetic && d.path.empty())
    fail("data.path", std::string("must be set with data.source ") + to_string(d.source));
  if (d.source == DataSource::Synthetic)
    in_range("data.synthetic_branching", d.synthetic_branching, 1, m.vocab_size,
             "1 .. model.vocab_size");

  const ParallelConfig& p = c.parallel;
  positive("parallel.ep_size", p.ep_size);
  if (world_size % p.ep_size != 0)
    fail("parallel.ep_size", num(p.ep_size) + " does not divide the world size " +
                                 num(world_size));
  if (e.n_routed % p.ep_size != 0)
    fail("parallel.ep_size", num(p.ep_size) + " does not divide moe.n_routed = " +
                                 num(e.n_routed));
  non_negative("parallel.timeout_seconds", p.timeout_seconds);
  if (p.transport == Transport::Nccl && t.backend == BackendKind::Cpu)
    fail("parallel.transport", "nccl needs train.backend cuda or auto, got cpu");

  non_negative("checkpoint.interval", c.checkpoint.interval);
  positive("checkpoint.keep_last", c.checkpoint.keep_last);

  const LogConfig& l = c.log;
  positive("log.interval", l.interval);
  non_negative("log.expert_load_interval", l.expert_load_interval);
  if (l.out_dir.empty()) fail("log.out_dir", "must not be empty");
  static const std::set<std::string> levels = {"trace", "debug", "info", "warn", "error"};
  if (!levels.count(l.level))
    fail("log.level", "expected one of trace|debug|info|warn|error, got " + quote(l.level));
}

std::vector<ConfigDifference> config_differences(const Config& a, const Config& b) {
  // Both sides through the canonical emitter, compared key by key.
  const YAML::Node ya = YAML::Load(config_to_yaml(a)), yb = YAML::Load(config_to_yaml(b));
  std::vector<ConfigDifference> out;
  for_each_field(a, [&](const char* s, const char* k, const auto&, const KeyMeta&) {
    const std::string va = YAML::Dump(ya[s][k]), vb = YAML::Dump(yb[s][k]);
    if (va != vb) out.push_back({std::string(s) + "." + k, va, vb});
  });
  return out;
}

bool is_architectural_key(const std::string& key) {
  return key.rfind("model.", 0) == 0 || key.rfind("moe.", 0) == 0 || key == "train.precision";
}

namespace {

template <class T>
void emit_value(YAML::Emitter& out, const T& field) {
  if constexpr (std::is_same_v<T, double>) {
    out << fmt_double(field);
  } else if constexpr (std::is_same_v<T, std::string>) {
    out << YAML::DoubleQuoted << field;  // so "", "null" or "123" stay strings
  } else if constexpr (std::is_enum_v<T>) {
    out << enum_name(field);
  } else if constexpr (std::is_same_v<T, std::vector<double>>) {
    out << YAML::Flow << YAML::BeginSeq;
    for (double x : field) out << fmt_double(x);
    out << YAML::EndSeq;
  } else if constexpr (std::is_same_v<T, std::vector<int64_t>>) {
    out << YAML::Flow << YAML::BeginSeq;
    for (int64_t x : field) out << x;
    out << YAML::EndSeq;
  } else {  // bool and integers: yaml-cpp writes true/false and decimal
    out << field;
  }
}

// Every key as "section: {key: value}"; with_meta: each value a flow map of
// the value and its KeyMeta.
std::string emit_config(const Config& c, bool with_meta) {
  YAML::Emitter out;
  out << YAML::BeginMap;
  std::string section;
  for_each_field(c, [&](const char* s, const char* k, const auto& field, const KeyMeta& meta) {
    if (section != s) {
      if (!section.empty()) out << YAML::EndMap;
      out << YAML::Key << s << YAML::Value << YAML::BeginMap;
      section = s;
    }
    out << YAML::Key << k << YAML::Value;
    if (!with_meta) {
      emit_value(out, field);
      return;
    }
    out << YAML::Flow << YAML::BeginMap << YAML::Key << "value" << YAML::Value;
    emit_value(out, field);
    out << YAML::Key << "training" << YAML::Value << to_string(meta.training);
    if (meta.read_when_key)
      out << YAML::Key << "read_when" << YAML::Value << YAML::Flow << YAML::BeginMap
          << YAML::Key << meta.read_when_key << YAML::Value << meta.read_when_value
          << YAML::EndMap;
    out << YAML::EndMap;
  });
  out << YAML::EndMap << YAML::EndMap;
  return std::string(out.c_str()) + "\n";
}

}  // namespace

std::string config_to_yaml(const Config& c) { return emit_config(c, false); }
std::string config_to_yaml_with_meta(const Config& c) { return emit_config(c, true); }

KeyMeta key_meta(const std::string& key) {
  const Config c;
  std::optional<KeyMeta> found;
  for_each_field(c, [&](const char* s, const char* k, const auto&, const KeyMeta& meta) {
    if (key == std::string(s) + "." + k) found = meta;
  });
  if (!found) throw ConfigError("config: " + key + ": unknown key");
  return *found;
}

const char* to_string(TrainingEffect v) {
  switch (v) {
    case TrainingEffect::Changes: return "changes";
    case TrainingEffect::Seed: return "seed";
    case TrainingEffect::None: return "none";
  }
  return "?";
}

const char* to_string(GateFn v) { return enum_name(v); }
const char* to_string(BalanceMethod v) { return enum_name(v); }
const char* to_string(UpdateRule v) { return enum_name(v); }
const char* to_string(BiasMode v) { return enum_name(v); }
const char* to_string(AuxScope v) { return enum_name(v); }
const char* to_string(LrSchedule v) { return enum_name(v); }
const char* to_string(DataSource v) { return enum_name(v); }
const char* to_string(TokenDType v) { return enum_name(v); }
const char* to_string(BackendKind v) { return enum_name(v); }
const char* to_string(Precision v) { return enum_name(v); }
const char* to_string(Transport v) { return enum_name(v); }
const char* to_string(NonFinitePolicy v) { return enum_name(v); }
const char* to_string(Recompute v) { return enum_name(v); }

}  // namespace moe
