#include "train/checkpoint.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "config/config.h"
#include "core/error.h"
#include "core/fault.h"
#include "core/file_io.h"
#include "train/safetensors.h"

namespace moe {

namespace fs = std::filesystem;

namespace {

std::string step_dir_name(int64_t step) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "step_%08lld", static_cast<long long>(step));
  return buf;
}

// Step number of a "step_NNNNNNNN" name; -1 for anything else.
int64_t parse_step_dir(const std::string& name) {
  if (name.size() <= 5 || name.rfind("step_", 0) != 0) return -1;
  int64_t v = 0;
  for (size_t i = 5; i < name.size(); ++i) {
    if (name[i] < '0' || name[i] > '9') return -1;
    v = v * 10 + (name[i] - '0');
  }
  return v;
}

template <typename T>
SafeTensor make_native(const T* data, std::vector<int64_t> shape) {
  if constexpr (sizeof(T) == 8)
    return make_f64(data, std::move(shape));
  else
    return make_f32(data, std::move(shape));
}

template <typename T>
void require_finite(const std::vector<T>& v, const char* what) {
  for (T x : v)
    if (!std::isfinite(double(x)))
      throw InternalError(std::string("refusing to write a checkpoint with non-finite ") + what);
}

// What to say after a checkpoint that does not agree with itself or holds a
// non-finite value: the previous complete checkpoint beside it, by name.
std::string inconsistent_hint(const std::string& ckpt_dir) {
  fs::path dir = fs::path(ckpt_dir).lexically_normal();
  if (dir.filename().empty()) dir = dir.parent_path();  // "ck/step_00000040/"
  const int64_t self = parse_step_dir(dir.filename().string());
  const fs::path root = dir.parent_path().empty() ? fs::path(".") : dir.parent_path();
  int64_t best = -1;
  std::error_code ec, ec2;
  if (self > 0)
    for (fs::directory_iterator it(root, ec), end; !ec && it != end; it.increment(ec)) {
      const int64_t s = parse_step_dir(it->path().filename().string());
      if (s >= 0 && s < self && s > best && fs::exists(it->path() / "trainer_state.json", ec2))
        best = s;
    }
  if (best < 0) return "; there is no earlier checkpoint beside it";
  return "; use the previous checkpoint, " + (dir.parent_path() / step_dir_name(best)).string() +
         ", instead";
}

// model.seq_len and train.global_batch x model.seq_len of a saved config;
// {0, 0} when it does not parse (the programs say so when they read it).
struct StepTokens {
  int64_t seq_len = 0, per_step = 0;
};
StepTokens step_tokens(const std::string& config_yaml) {
  try {
    const Config c =
        parse_config(config_yaml, {"parallel.ep_size=1", "parallel.transport=auto"}, 1);
    return {c.model.seq_len, int64_t(c.train.global_batch) * c.model.seq_len};
  } catch (const InputError&) {
    return {};
  }
}

// The checks of read_trainer_state (checkpoint.h); "" when consistent.
std::string trainer_state_problem(const TrainerState& st, const std::string& ckpt_dir,
                                  int64_t seq_len) {
  const auto str = [](int64_t v) { return std::to_string(v); };
  fs::path dir = fs::path(ckpt_dir).lexically_normal();
  if (dir.filename().empty()) dir = dir.parent_path();
  const int64_t dir_step = parse_step_dir(dir.filename().string());
  if (st.step < 0) return "step " + str(st.step) + " is negative";
  if (dir_step >= 0 && st.step != dir_step)
    return "step " + str(st.step) + " does not match the directory " + dir.filename().string();
  if (st.skipped_steps < 0 || st.skipped_steps > st.step)
    return "skipped_steps " + str(st.skipped_steps) + " is outside [0, step " + str(st.step) + "]";
  if (st.tokens_seen < 0) return "tokens_seen " + str(st.tokens_seen) + " is negative";
  // Every step adds global_batch (>= 1, may change on a resume) sequences of
  // model.seq_len tokens (fixed for a model).
  if (seq_len > 0 && (st.tokens_seen % seq_len != 0 || st.tokens_seen / seq_len < st.step))
    return "tokens_seen " + str(st.tokens_seen) + " is not whole sequences of model.seq_len " +
           str(seq_len) + ", at least one per step of " + str(st.step);
  const int64_t s0 = st.batch_since_step, t0 = st.tokens_at_batch_since, per = st.tokens_per_step;
  if (s0 < 0) return "";  // not recorded (an older checkpoint): the bounds above only
  if (s0 > st.step || t0 < 0 || t0 > st.tokens_seen || (s0 == 0 && t0 != 0))
    return "global_batch_since {step " + str(s0) + ", tokens_seen " + str(t0) +
           "} does not fit step " + str(st.step) + " and tokens_seen " + str(st.tokens_seen);
  if (per <= 0) return "";  // the saved config does not parse: its reader says so
  int64_t expected = 0;
  const bool overflow = __builtin_mul_overflow(st.step - s0, per, &expected) ||
                        __builtin_add_overflow(expected, t0, &expected);
  if (overflow || expected != st.tokens_seen)
    return "tokens_seen " + str(st.tokens_seen) + " does not match the steps: " +
           (overflow ? "over 2^63" : str(expected)) + " expected (" +
           (s0 > 0 ? str(t0) + " at step " + str(s0) + ", then " : "") + str(st.step - s0) +
           " steps of " + str(per) + " tokens, train.global_batch x model.seq_len)";
  return "";
}

template <typename T>
void require_finite_values(const T* x, size_t n, const std::string& file, const std::string& tensor,
                           const std::string& ckpt_dir) {
  for (size_t i = 0; i < n; ++i)
    if (!std::isfinite(double(x[i])))
      throw DataError(file + ": " + tensor + " holds a non-finite value at element " +
                      std::to_string(i) + inconsistent_hint(ckpt_dir));
}

// Fault point (core/fault.h): the checkpoint tests crash the process
// between writing a checkpoint and making it visible, as a power loss would:
// at every save, or only at the save of step N (checkpoint.before_rename=N).
void maybe_crash_before_rename(int64_t step) {
  const auto at = injected_fault("checkpoint.before_rename");
  if (at && (at->empty() || std::atoll(at->c_str()) == step)) std::_Exit(3);
}

}  // namespace

std::string router_bias_name(int layer) {
  return "layers." + std::to_string(layer) + ".moe.router_bias";
}

template <typename T>
std::vector<TensorState<T>> tensor_states(const ParamSet<T>& params, const std::vector<T>& m,
                                          const std::vector<T>& v) {
  MOE_CHECK(m.size() == params.size() && v.size() == params.size(), "tensor_states: moments size");
  const std::vector<T> p = params.params_to_host();
  std::vector<TensorState<T>> out;
  for (const ParamInfo& info : params.all()) {
    auto slice = [&](const std::vector<T>& x) {
      return std::vector<T>(x.begin() + info.offset, x.begin() + info.offset + info.numel);
    };
    out.push_back({info.name, info.shape, slice(p), slice(m), slice(v)});
  }
  return out;
}

template <typename T>
std::string save_checkpoint(const std::string& root, const std::vector<TensorState<T>>& tensors,
                            const Balancer& balancer, int first_moe_layer,
                            const TrainerState& state, int keep_last) {
  const fs::path dir(root);
  std::error_code ec;
  if (fs::exists(dir, ec) && !fs::is_directory(dir, ec))
    throw InputError("checkpoint.dir: " + root + " exists and is not a directory");
  auto not_saved = [&](const char* why, const std::string& previous) {
    return IoError("checkpoint of step " + std::to_string(state.step) + " not saved: " + why +
                   (previous.empty() ? "; there is no earlier checkpoint"
                                     : "; the latest checkpoint is still " + previous));
  };
  try {
    io::make_dirs(root);  // a full disk here is a failed save like any other
  } catch (const IoError& e) {
    throw not_saved(e.what(), fs::is_directory(dir, ec) ? find_latest_checkpoint(root) : "");
  }

  SafeTensorFile model, optim;
  model.metadata["format"] = "moe-lfb";
  optim.metadata["format"] = "moe-lfb";
  for (const TensorState<T>& t : tensors) {
    require_finite(t.param, "parameters");
    require_finite(t.m, "AdamW moments");
    require_finite(t.v, "AdamW moments");
    model.tensors[t.name] = make_native(t.param.data(), t.shape);
    optim.tensors["adam_m." + t.name] = make_native(t.m.data(), t.shape);
    optim.tensors["adam_v." + t.name] = make_native(t.v.data(), t.shape);
  }
  require_finite(balancer.bias(), "router biases");
  const int E = balancer.experts();
  for (int l = 0; l < balancer.layers(); ++l)
    model.tensors[router_bias_name(first_moe_layer + l)] =
        make_f32(balancer.bias().data() + size_t(l) * E, {E});

  const std::string name = step_dir_name(state.step);
  const fs::path final_dir = dir / name, tmp_dir = dir / ("." + name + ".tmp");
  const fs::path aside = dir / ("." + name + ".old"), latest = dir / "latest";
  // A crash between setting a same-step copy aside and renaming the new one
  // in left the only copy aside: put it back before anything else.
  if (!fs::exists(final_dir, ec) && fs::exists(aside / "trainer_state.json", ec))
    fs::rename(aside, final_dir, ec);
  const std::string previous = find_latest_checkpoint(root);  // what a resume would take now
  io::remove_quietly(tmp_dir.string());
  io::remove_quietly(aside.string());
  bool set_aside = false, renamed = false, pointed = false;
  try {
    io::make_dirs(tmp_dir.string());
    write_safetensors((tmp_dir / "model.safetensors").string(), model);
    write_safetensors((tmp_dir / "optimizer.safetensors").string(), optim);
    const nlohmann::ordered_json js = {{"step", state.step},
                                       {"tokens_seen", state.tokens_seen},
                                       {"skipped_steps", state.skipped_steps},
                                       {"global_batch_since",
                                        {{"step", std::max<int64_t>(state.batch_since_step, 0)},
                                         {"tokens_seen", state.tokens_at_batch_since}}},
                                       {"version", state.version},
                                       {"config", state.config_yaml}};
    io::write_file_atomically((tmp_dir / "trainer_state.json").string(), js.dump(2) + "\n");
    io::sync_dir(tmp_dir.string());
    maybe_crash_before_rename(state.step);
    if (fs::exists(final_dir)) {  // an older copy of the same step (a repeated save)
      io::rename_path(final_dir.string(), aside.string());
      set_aside = true;
    }
    io::rename_path(tmp_dir.string(), final_dir.string());
    renamed = true;
    io::sync_dir(dir.string());
    io::write_file_atomically(latest.string(), name + "\n");
    pointed = true;
    io::sync_dir(dir.string());
  } catch (...) {
    // Put the directory back as it was: the previous checkpoint stays the one
    // a resume takes, and nothing half-written is left.
    if (pointed) {
      if (previous.empty())
        fs::remove(latest, ec);
      else
        try {
          io::write_file_atomically(latest.string(), fs::path(previous).filename().string() + "\n");
        } catch (const IoError&) {  // find_latest_checkpoint falls back to the newest step dir
        }
    }
    if (renamed) io::remove_quietly(final_dir.string());
    if (set_aside) {
      fs::rename(aside, final_dir, ec);  // if this fails, the next save puts it back
      if (ec) spdlog::warn("checkpoint: cannot move {} back: {}", aside.string(), ec.message());
    }
    io::remove_quietly(tmp_dir.string());
    try {
      throw;
    } catch (const IoError& e) {
      throw not_saved(e.what(), previous);
    }
  }
  io::remove_quietly(aside.string());

  // Prune the oldest complete checkpoints beyond keep_last, never the one
  // just written (after a resume from an older step it is not the newest).
  // A failure here loses nothing: the new checkpoint is complete and `latest`.
  std::vector<std::pair<int64_t, fs::path>> all;
  for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec))
    if (it->is_directory() && parse_step_dir(it->path().filename().string()) >= 0 &&
        it->path().filename() != name)
      all.emplace_back(parse_step_dir(it->path().filename().string()), it->path());
  std::sort(all.begin(), all.end());
  for (size_t i = 0; i + size_t(std::max(keep_last - 1, 0)) < all.size(); ++i) {
    fs::remove_all(all[i].second, ec);
    if (ec) spdlog::warn("checkpoint: cannot prune {}: {}", all[i].second.string(), ec.message());
  }
  return final_dir.string();
}

TrainerState read_trainer_state(const std::string& ckpt_dir) {
  const fs::path p = fs::path(ckpt_dir) / "trainer_state.json";
  std::ifstream f(p);
  if (!f) throw DataError(p.string() + ": cannot open (not a checkpoint directory?)");
  TrainerState st;
  try {
    const nlohmann::json j = nlohmann::json::parse(f);
    st.step = j.at("step").get<int64_t>();
    st.tokens_seen = j.at("tokens_seen").get<int64_t>();
    st.skipped_steps = j.at("skipped_steps").get<int64_t>();
    st.version = j.at("version").get<std::string>();
    st.config_yaml = j.at("config").get<std::string>();
    st.batch_since_step = st.tokens_at_batch_since = -1;
    if (j.contains("global_batch_since")) {
      st.batch_since_step = j.at("global_batch_since").at("step").get<int64_t>();
      st.tokens_at_batch_since = j.at("global_batch_since").at("tokens_seen").get<int64_t>();
    }
  } catch (const std::exception& e) {
    throw DataError(p.string() + ": corrupt trainer state: " + e.what());
  }
  const StepTokens tokens = step_tokens(st.config_yaml);
  st.tokens_per_step = tokens.per_step;
  if (const std::string problem = trainer_state_problem(st, ckpt_dir, tokens.seq_len);
      !problem.empty())
    throw DataError(p.string() + ": " + problem + inconsistent_hint(ckpt_dir));
  return st;
}

template <typename T>
TrainerState load_checkpoint(const std::string& ckpt_dir, ParamSet<T>& params, Balancer& balancer,
                             int first_moe_layer, HostMoments<T>* moments) {
  const TrainerState st = read_trainer_state(ckpt_dir);
  const std::string model_path = (fs::path(ckpt_dir) / "model.safetensors").string();
  const SafeTensorFile model = read_safetensors(model_path);
  auto find = [](const SafeTensorFile& f, const std::string& file, const std::string& name,
                 const std::vector<int64_t>& shape) -> const SafeTensor& {
    auto it = f.tensors.find(name);
    if (it == f.tensors.end())
      throw DataError(file + ": missing tensor " + name + " (a checkpoint of another model?)");
    if (it->second.shape != shape)
      throw DataError(file + ": tensor " + name + " has another shape than this model's");
    return it->second;
  };

  std::vector<T> p(params.size());
  for (const ParamInfo& info : params.all())
    copy_float_tensor(find(model, model_path, info.name, info.shape), p.data() + info.offset,
                      info.numel, model_path + ": " + info.name);
  std::vector<float> bias(balancer.bias().size());
  const int E = balancer.experts();
  for (int l = 0; l < balancer.layers(); ++l) {
    const std::string name = router_bias_name(first_moe_layer + l);
    copy_float_tensor(find(model, model_path, name, {E}), bias.data() + size_t(l) * E, size_t(E),
                      model_path + ": " + name);
  }
  for (const ParamInfo& info : params.all())
    require_finite_values(p.data() + info.offset, info.numel, model_path, info.name, ckpt_dir);
  for (size_t i = 0; i < bias.size(); ++i)
    if (!std::isfinite(bias[i]))
      throw DataError(model_path + ": " + router_bias_name(first_moe_layer + int(i) / E) +
                      " holds a non-finite value (a corrupt checkpoint)" +
                      inconsistent_hint(ckpt_dir));
  params.params_from_host(p);
  balancer.set_bias(bias);

  if (moments) {
    const std::string optim_path = (fs::path(ckpt_dir) / "optimizer.safetensors").string();
    const SafeTensorFile optim = read_safetensors(optim_path);
    std::vector<T>& m = moments->m;
    std::vector<T>& v = moments->v;
    m.assign(params.size(), T(0));
    v.assign(params.size(), T(0));
    for (const ParamInfo& info : params.all()) {
      copy_float_tensor(find(optim, optim_path, "adam_m." + info.name, info.shape),
                        m.data() + info.offset, info.numel, optim_path + ": adam_m." + info.name);
      copy_float_tensor(find(optim, optim_path, "adam_v." + info.name, info.shape),
                        v.data() + info.offset, info.numel, optim_path + ": adam_v." + info.name);
      require_finite_values(m.data() + info.offset, info.numel, optim_path, "adam_m." + info.name,
                            ckpt_dir);
      require_finite_values(v.data() + info.offset, info.numel, optim_path, "adam_v." + info.name,
                            ckpt_dir);
    }
  }
  return st;
}

void require_finite_tensors(const SafeTensorFile& file, const std::string& path,
                            const std::string& ckpt_dir) {
  std::vector<double> values;
  for (const auto& [name, t] : file.tensors) {
    if (t.dtype == "I64") continue;
    size_t n = 1;
    for (int64_t d : t.shape) n *= size_t(d);
    values.resize(n);
    copy_float_tensor(t, values.data(), n, path + ": " + name);
    require_finite_values(values.data(), n, path, name, ckpt_dir);
  }
}

std::string find_latest_checkpoint(const std::string& root) {
  const fs::path dir(root);
  if (!fs::is_directory(dir)) return "";
  std::ifstream latest(dir / "latest");
  std::string name;
  if (latest >> name && parse_step_dir(name) >= 0 && fs::is_directory(dir / name))
    return (dir / name).string();
  // No usable pointer: the newest complete step directory.
  int64_t best = -1;
  for (const auto& e : fs::directory_iterator(dir)) {
    const int64_t s = parse_step_dir(e.path().filename().string());
    if (e.is_directory() && s > best) best = s;
  }
  return best < 0 ? "" : (dir / step_dir_name(best)).string();
}

std::string checkpoint_in(const std::string& dir) {
  std::error_code ec;
  if (fs::exists(fs::path(dir) / "trainer_state.json", ec)) return dir;
  try {
    return find_latest_checkpoint(dir);
  } catch (const fs::filesystem_error& e) {  // an unreadable directory
    throw InputError(dir + ": " + e.code().message());
  }
}

template std::vector<TensorState<float>> tensor_states(const ParamSet<float>&,
                                                       const std::vector<float>&,
                                                       const std::vector<float>&);
template std::vector<TensorState<double>> tensor_states(const ParamSet<double>&,
                                                        const std::vector<double>&,
                                                        const std::vector<double>&);
template std::string save_checkpoint<float>(const std::string&,
                                            const std::vector<TensorState<float>>&,
                                            const Balancer&, int, const TrainerState&, int);
template std::string save_checkpoint<double>(const std::string&,
                                             const std::vector<TensorState<double>>&,
                                             const Balancer&, int, const TrainerState&, int);
template TrainerState load_checkpoint<float>(const std::string&, ParamSet<float>&, Balancer&, int,
                                             HostMoments<float>*);
template TrainerState load_checkpoint<double>(const std::string&, ParamSet<double>&, Balancer&,
                                              int, HostMoments<double>*);

}  // namespace moe
