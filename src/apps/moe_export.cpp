// moe-export: a checkpoint as a Hugging Face transformers `glm4_moe` model
// directory, and such a directory back into a checkpoint (docs/export.md).
//   moe-export --checkpoint DIR --output HF_DIR [--dtype bfloat16|float32]
//              [--tokenizer M.model] [--max-shard-mb N]
//   moe-export --from-hf HF_DIR --output CKPT_DIR [--config FILE]
#include <spdlog/spdlog.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "apps/cli.h"
#include "apps/common.h"
#include "core/file_io.h"
#include "core/path_check.h"
#include "data/shard_dataset.h"
#include "data/shard_format.h"
#include "export/hf_glm4_moe.h"
#include "tokenizer/tokenizer.h"
#include "train/checkpoint.h"
#include "train/safetensors.h"

namespace fs = std::filesystem;

namespace {

struct Args {
  std::string checkpoint, output, dtype = "bfloat16", tokenizer, from_hf, config;
  double max_shard_mb = 5000;
};

// An output directory that does not exist or is empty, and that can be
// made: nothing is overwritten, and a bad path fails before any work.
void require_fresh_output(const std::string& dir) { moe::check_new_output_dir(dir, "--output"); }

// Written and fsynced through core/file_io.h: a full disk is an IoError.
void write_text(const fs::path& p, const std::string& text) {
  moe::io::write_file(p.string(), text);
}

nlohmann::json read_json(const fs::path& p) {
  std::ifstream f(p);
  if (!f) throw moe::InputError(p.string() + ": cannot open");
  try {
    return nlohmann::json::parse(f);
  } catch (const std::exception& e) {
    throw moe::DataError(p.string() + ": not JSON: " + e.what());
  }
}

// The tokenizer the training shards were written with: summary.json of the
// shard directory names it (moe-data prepare).
std::string recorded_tokenizer(const moe::Config& cfg) {
  if (cfg.data.source != moe::DataSource::Shards) return "";
  fs::path dir(cfg.data.path);
  if (!fs::is_directory(dir)) dir = dir.parent_path();
  const fs::path summary = dir / "summary.json";
  if (!fs::exists(summary)) return "";
  const nlohmann::json j = read_json(summary);
  const std::string path = j.value("/tokenizer/path"_json_pointer, std::string());
  return fs::exists(path) ? path : "";
}

// tokenizer.model and the transformers files that load it (LlamaTokenizer:
// SentencePiece as is, no dummy prefix, no BOS/EOS added: the ids moe-data
// writes). The model must be the one whose hash the training shards carry.
moe::SpecialTokens export_tokenizer(const std::string& path, const moe::Config& cfg,
                                    const fs::path& out) {
  moe::data::Tokenizer tok = moe::data::load_tokenizer(path);
  if (int64_t(tok.vocab_size) > cfg.model.vocab_size)
    throw moe::InputError("--tokenizer: " + path + " has " + std::to_string(tok.vocab_size) +
                          " pieces, more than model.vocab_size " +
                          std::to_string(cfg.model.vocab_size));
  if (cfg.data.source == moe::DataSource::Shards) {
    try {
      for (const std::string& shard : moe::resolve_shards(cfg.data.path, "train")) {
        std::ifstream f(shard, std::ios::binary);
        unsigned char h[moe::kShardHeaderBytes];
        f.read(reinterpret_cast<char*>(h), sizeof h);
        const moe::ShardHeader header = moe::decode_shard_header(h, size_t(f.gcount()), shard);
        if (header.tokenizer_hash != tok.hash)
          throw moe::InputError("--tokenizer: " + path + " is not the tokenizer of " + shard +
                                " (its hash differs from the one the shard records)");
        break;  // every shard of a set agrees (ShardSet checks it)
      }
    } catch (const moe::DataError& e) {
      spdlog::warn("tokenizer: cannot check it against the training shards: {}", e.what());
    }
  }
  // Its own round trip on a probe text: ids that decode to the text.
  const std::string probe = "Loss-Free Balancing, 2024: ids 123 and\ttabs.";
  std::vector<int> ids;
  std::string back;
  if (!tok.sp->Encode(probe, &ids).ok() || !tok.sp->Decode(ids, &back).ok() || back != probe)
    throw moe::DataError("--tokenizer: " + path + " does not round-trip a probe text");
  {
    std::ifstream in(path, std::ios::binary);
    const std::string model((std::istreambuf_iterator<char>(in)), {});
    std::error_code ec;
    if (model.size() != fs::file_size(path, ec) || ec)
      throw moe::DataError("--tokenizer: " + path + ": read failed");
    write_text(out / "tokenizer.model", model);
  }
  auto piece = [&](int id) { return id >= 0 ? nlohmann::json(tok.sp->IdToPiece(id)) : nlohmann::json(); };
  nlohmann::ordered_json cfgj = {{"tokenizer_class", "LlamaTokenizer"},
                                 {"legacy", true},
                                 {"add_bos_token", false},
                                 {"add_eos_token", false},
                                 {"add_prefix_space", false},
                                 {"clean_up_tokenization_spaces", false},
                                 {"model_max_length", cfg.model.seq_len},
                                 {"bos_token", piece(tok.bos_id)},
                                 {"eos_token", piece(tok.eos_id)},
                                 {"unk_token", piece(tok.unk_id)},
                                 {"pad_token", piece(tok.pad_id)}};
  write_text(out / "tokenizer_config.json", cfgj.dump(2) + "\n");
  nlohmann::ordered_json special = {{"bos_token", piece(tok.bos_id)},
                                    {"eos_token", piece(tok.eos_id)},
                                    {"unk_token", piece(tok.unk_id)},
                                    {"pad_token", piece(tok.pad_id)}};
  write_text(out / "special_tokens_map.json", special.dump(2) + "\n");
  spdlog::info("tokenizer: {} ({} pieces; probe text {} ids, round trip exact)", path,
               tok.vocab_size, ids.size());
  return {tok.bos_id, tok.eos_id, tok.pad_id};
}

// Weight files: one, or shards of at most max_bytes with an index.
void write_weights(const std::vector<moe::HfTensor>& tensors, bool bf16, size_t max_bytes,
                   const fs::path& out) {
  std::vector<moe::SafeTensorFile> files(1);
  std::vector<size_t> bytes(1, 0);
  std::vector<std::pair<std::string, size_t>> where;  // tensor -> file
  size_t total = 0;
  for (const moe::HfTensor& t : tensors) {
    moe::SafeTensor st = bf16 && !t.keep_fp32 ? moe::make_bf16(t.values.data(), t.shape)
                                              : moe::make_f32(t.values.data(), t.shape);
    if (bytes.back() > 0 && bytes.back() + st.data.size() > max_bytes) {
      files.emplace_back();
      bytes.push_back(0);
    }
    bytes.back() += st.data.size();
    total += st.data.size();
    where.emplace_back(t.name, files.size() - 1);
    files.back().tensors[t.name] = std::move(st);
  }
  const size_t n = files.size();
  auto name = [&](size_t i) {
    if (n == 1) return std::string("model.safetensors");
    char buf[64];
    std::snprintf(buf, sizeof buf, "model-%05zu-of-%05zu.safetensors", i + 1, n);
    return std::string(buf);
  };
  for (size_t i = 0; i < n; ++i) {
    files[i].metadata["format"] = "pt";
    moe::write_safetensors((out / name(i)).string(), files[i]);
  }
  if (n > 1) {
    nlohmann::ordered_json index;
    index["metadata"] = {{"total_size", total}};
    for (const auto& [tensor, file] : where) index["weight_map"][tensor] = name(file);
    write_text(out / "model.safetensors.index.json", index.dump(2) + "\n");
  }
  spdlog::info("weights: {} tensors, {:.1f} MiB in {} file(s), {}", tensors.size(),
               double(total) / (1 << 20), n, bf16 ? "bfloat16" : "float32");
}

// README.md: what the model is, how it was trained, how it evaluated.
std::string model_card(const moe::Config& cfg, const moe::TrainerState& st,
                       const std::string& ckpt, const nlohmann::json* eval,
                       const std::string& bias_note) {
  std::string s = "---\nlibrary_name: transformers\npipeline_tag: text-generation\n---\n\n";
  s += "# glm4_moe model trained with moe-lfb\n\n";
  s += "A DeepSeekMoE-style model pretrained with moe-lfb (balance: " +
       moe::describe_balance(cfg.balance) + "), exported from `" + ckpt + "` (step " +
       std::to_string(st.step) + ", " + std::to_string(st.tokens_seen) + " tokens seen).\n\n";
  s += "Load it with `AutoModelForCausalLM.from_pretrained(dir)`; the tokenizer, when present, with "
       "`AutoTokenizer.from_pretrained(dir, use_fast=False)` (SentencePiece).\n\n";
  if (!bias_note.empty()) s += "Router: " + bias_note + ".\n\n";
  if (eval) {
    s += "## Evaluation (moe-eval)\n\n| metric | value |\n|---|---|\n";
    s += "| validation loss | " + std::to_string(eval->value("loss", 0.0)) + " |\n";
    s += "| perplexity | " + std::to_string(eval->value("perplexity", 0.0)) + " |\n";
    if (eval->contains("maxvio_global"))
      s += "| MaxVio_global | " + eval->at("maxvio_global").dump() + " |\n";
    s += "| tokens | " + eval->value("tokens", nlohmann::json(0)).dump() + " |\n";
    s += "| evaluated step | " + eval->value("step", nlohmann::json(0)).dump() + " |\n\n";
  }
  s += "## Training config\n\n```yaml\n" + st.config_yaml + "```\n";
  return s;
}

int export_checkpoint(const Args& a) {
  std::string ckpt = a.checkpoint;
  if (!fs::exists(fs::path(ckpt) / "trainer_state.json")) {
    ckpt = moe::find_latest_checkpoint(a.checkpoint);
    if (ckpt.empty()) throw moe::InputError("--checkpoint: no checkpoint in " + a.checkpoint);
  }
  const moe::TrainerState st = moe::read_trainer_state(ckpt);
  const moe::Config cfg = moe::parse_config(st.config_yaml);
  moe::check_glm4_moe_exportable(cfg);
  require_fresh_output(a.output);
  const std::string model_path = (fs::path(ckpt) / "model.safetensors").string();
  const moe::SafeTensorFile ours = moe::read_safetensors(model_path);
  moe::require_finite_tensors(ours, model_path, ckpt);  // as a resume would refuse it
  std::vector<float> shifts;
  const std::vector<moe::HfTensor> tensors = moe::to_glm4_moe(ours, cfg, &shifts);
  // Group-limited routing: the bias is written shifted (hf_glm4_moe.h), said
  // in the log and on the model card.
  std::string bias_note;
  if (!shifts.empty()) {
    bias_note = "e_score_correction_bias is the training bias shifted by a constant per MoE layer (";
    for (size_t i = 0; i < shifts.size(); ++i)
      bias_note += (i ? ", " : "") + fmt::format("{:.9g}", shifts[i]);
    bias_note += fmt::format(
        "), so that glm4_moe's 0.0 mask of the dropped groups (n_group {}, topk_group {}) "
        "selects the experts training selected; selections and gates are unchanged "
        "(docs/export.md)",
        cfg.moe.n_group, cfg.moe.topk_group);
    spdlog::info("router bias: {}", bias_note);
  }

  // Written under a temporary name and renamed: a directory at --output is
  // complete. A failure (a full disk) removes the temporary directory.
  fs::path out = fs::path(a.output).lexically_normal();
  if (out.filename().empty()) out = out.parent_path();  // "hf/" is "hf"
  const fs::path tmp = out.string() + ".tmp";
  fs::remove_all(tmp);
  try {
    moe::io::make_dirs(tmp.string());
    const std::string tok = a.tokenizer.empty() ? recorded_tokenizer(cfg) : a.tokenizer;
    moe::SpecialTokens ids;
    if (!tok.empty())
      ids = export_tokenizer(tok, cfg, tmp);
    else
      spdlog::info("tokenizer: none given or recorded (synthetic data?): no tokenizer files");
    write_text(tmp / "config.json", moe::glm4_moe_config(cfg, ids, a.dtype).dump(2) + "\n");
    nlohmann::ordered_json gen = {{"_from_model_config", true}, {"do_sample", false}};
    if (ids.bos >= 0) gen["bos_token_id"] = ids.bos;
    if (ids.eos >= 0) gen["eos_token_id"] = ids.eos;
    if (ids.pad >= 0) gen["pad_token_id"] = ids.pad;
    gen["max_length"] = cfg.model.seq_len;
    write_text(tmp / "generation_config.json", gen.dump(2) + "\n");
    write_weights(tensors, a.dtype == "bfloat16", size_t(a.max_shard_mb * double(1 << 20)), tmp);

    // eval.json of the run (log.out_dir, the parent of checkpoint.dir by default).
    nlohmann::json eval;
    for (const fs::path& p : {fs::path(ckpt).parent_path().parent_path() / "eval.json",
                              fs::path(cfg.log.out_dir) / "eval.json"})
      if (fs::exists(p)) {
        eval = read_json(p);
        spdlog::info("model card: evaluation from {}", p.string());
        break;
      }
    write_text(tmp / "README.md", model_card(cfg, st, ckpt, eval.is_null() ? nullptr : &eval, bias_note));
    fs::remove(out);  // an empty directory, if any (require_fresh_output)
    moe::io::rename_path(tmp.string(), out.string());
    try {
      moe::io::sync_dir(fs::absolute(out).parent_path().string());
    } catch (...) {  // not known to be on disk: not there
      moe::io::remove_quietly(out.string());
      throw;
    }
  } catch (...) {
    moe::io::remove_quietly(tmp.string());
    throw;
  }
  spdlog::info("exported {} (step {}) to {}", ckpt, st.step, a.output);
  return 0;
}

int import_hf(const Args& a) {
  const fs::path dir(a.from_hf);
  const nlohmann::json hf = read_json(dir / "config.json");
  const moe::Config defaults = a.config.empty() ? moe::Config{} : moe::load_config(a.config);
  moe::Config cfg = moe::config_from_glm4_moe(hf, defaults);
  moe::validate_config(cfg, 1);
  require_fresh_output(a.output);

  std::vector<std::string> files;
  if (fs::exists(dir / "model.safetensors.index.json")) {
    const nlohmann::json index = read_json(dir / "model.safetensors.index.json");
    for (const auto& [tensor, file] : index.at("weight_map").items()) {
      const std::string f = file.get<std::string>();
      if (std::find(files.begin(), files.end(), f) == files.end()) files.push_back(f);
    }
  } else {
    files.push_back("model.safetensors");
  }
  std::map<std::string, moe::SafeTensor> tensors;
  for (const std::string& f : files)
    for (auto& [name, t] : moe::read_safetensors((dir / f).string()).tensors)
      tensors[name] = std::move(t);
  const moe::SafeTensorFile ours = moe::from_glm4_moe(tensors, cfg);

  // A step-0 checkpoint: parameters and biases, zero AdamW moments.
  std::vector<moe::TensorState<float>> states;
  std::vector<float> bias;
  for (const auto& [name, t] : ours.tensors) {
    if (name.size() > 12 && name.compare(name.size() - 12, 12, ".router_bias") == 0)
      continue;  // the Balancer's, below
    moe::TensorState<float> s;
    s.name = name;
    s.shape = t.shape;
    s.param.resize(t.data.size() / sizeof(float));
    std::memcpy(s.param.data(), t.data.data(), t.data.size());
    s.m.assign(s.param.size(), 0.0f);
    s.v.assign(s.param.size(), 0.0f);
    states.push_back(std::move(s));
  }
  moe::Balancer balancer(cfg.balance, cfg.model.moe_layers(), cfg.moe.n_routed);
  for (int l = cfg.model.first_dense_layers; l < cfg.model.layers; ++l) {
    const moe::SafeTensor& b = ours.tensors.at(moe::router_bias_name(l));
    const size_t at = bias.size();
    bias.resize(at + size_t(cfg.moe.n_routed));
    std::memcpy(bias.data() + at, b.data.data(), b.data.size());
  }
  balancer.set_bias(bias);
  moe::TrainerState st;
  st.config_yaml = moe::config_to_yaml(cfg);
  st.version = MOE_VERSION;
  const std::string path = moe::save_checkpoint(a.output, states, balancer,
                                                cfg.model.first_dense_layers, st, 1);
  spdlog::info("imported {} ({} tensors) as {}", a.from_hf, tensors.size(), path);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  return moe::run_main("moe-export", [&] {
    moe::setup_logging("info");
    Args a;
    CLI::App app{"A checkpoint as a Hugging Face transformers glm4_moe model directory "
                 "(--checkpoint), or such a directory back into a checkpoint (--from-hf); "
                 "docs/export.md."};
    moe::cli::configure(app, "moe-export");
    app.add_option("--checkpoint", a.checkpoint,
                   "export: a checkpoint (step_* directory) or a checkpoint.dir (its newest)")
        ->type_name("DIR");
    app.add_option("--output", a.output, "the directory to write; must not exist or be empty")
        ->type_name("DIR")
        ->required();
    app.add_option("--dtype", a.dtype,
                   "export: weights in bfloat16 (default) or float32; the router's "
                   "e_score_correction_bias is float32 either way")
        ->type_name("D")
        ->check(CLI::IsMember({"bfloat16", "float32"}));
    app.add_option("--tokenizer", a.tokenizer,
                   "export: the SentencePiece model of the training data (default: the one "
                   "recorded in the shard directory's summary.json, if any)")
        ->type_name("FILE");
    app.add_option("--max-shard-mb", a.max_shard_mb,
                   "export: weight files above N MiB are split, with an index (default 5000)")
        ->type_name("N")
        ->check(moe::cli::number_in(1e-6, 1e9));
    app.add_option("--from-hf", a.from_hf,
                   "import: a glm4_moe directory (config.json, safetensors) into a checkpoint "
                   "under --output (step_00000000, zero AdamW moments)")
        ->type_name("DIR");
    app.add_option("--config", a.config,
                   "import: the run config whose non-model keys the checkpoint keeps (default: "
                   "the built-in defaults)")
        ->type_name("FILE");
    if (!moe::cli::parse(app, argc, argv)) return 0;
    if (a.from_hf.empty() == a.checkpoint.empty())
      throw moe::InputError("give exactly one of --checkpoint (export) and --from-hf (import)");
    return a.from_hf.empty() ? export_checkpoint(a) : import_hf(a);
  });
}
