// Typed configuration of a moe-lfb run. Parsed from YAML by load_config();
// every key is documented in docs/config.md.
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "core/op_args.h"

namespace moe {

// GateFn (moe.gate) and BiasMode (balance.bias_mode) are in core/op_args.h:
// kernel launchers take them too.
enum class BalanceMethod { LossFree, AuxLoss, None };
enum class UpdateRule { Sign, Proportional };
enum class AuxScope { Sequence, Batch };
enum class LrSchedule { Cosine, Multistep, Constant };
enum class DataSource { Synthetic, Tokens, Shards };
enum class TokenDType { U16, U32 };
enum class BackendKind { Auto, Cpu, Cuda };
enum class Precision { Float32, Float64, BFloat16 };
enum class Transport { Auto, Mpi, Nccl };
enum class NonFinitePolicy { Skip, Stop };
enum class Recompute { None, Selective, Full };

struct ModelConfig {
  int vocab_size = 32064;
  int hidden = 1024;
  int heads = 8;
  int layers = 9;
  int first_dense_layers = 1;
  int dense_intermediate = 4096;
  int seq_len = 2048;
  double rope_theta = 10000.0;
  double norm_eps = 1e-6;
  double init_std = 0.006;

  int head_dim() const { return hidden / heads; }
  int moe_layers() const { return layers - first_dense_layers; }
  bool operator==(const ModelConfig&) const = default;
};

struct MoeConfig {
  int n_shared = 2;
  int n_routed = 64;
  int top_k = 6;
  int expert_intermediate = 512;
  GateFn gate = GateFn::Sigmoid;
  bool normalize_gates = false;  // divide gates by their sum over the selected experts
  double route_scale = 1.0;      // multiplies the gates
  // Group-limited routing (DeepSeek-V3): n_routed / n_group experts per
  // group, top-K among the topk_group best groups' experts; 1 and 1 = off.
  int n_group = 1;
  int topk_group = 1;
  bool operator==(const MoeConfig&) const = default;
};

struct BalanceConfig {
  BalanceMethod method = BalanceMethod::LossFree;
  double update_rate = 0.001;  // u
  UpdateRule update_rule = UpdateRule::Sign;
  BiasMode bias_mode = BiasMode::Additive;
  bool center_bias = false;
  double aux_alpha = 0.001;
  AuxScope aux_scope = AuxScope::Sequence;
  // DeepSeek-V3's complementary sequence-wise balance loss beside Loss-Free
  // (normalised affinities, per sequence); 0 = off. loss_free only.
  double seq_aux_alpha = 0.0;
  bool operator==(const BalanceConfig&) const = default;
};

struct TrainConfig {
  int64_t steps = 1000;
  int global_batch = 8;  // sequences per optimizer step, all ranks together
  int micro_batch = 1;   // sequences per forward/backward on one rank
  double lr = 1e-3;
  LrSchedule lr_schedule = LrSchedule::Cosine;
  int64_t warmup_steps = 100;
  double min_lr = 1e-4;                  // cosine floor
  std::vector<int64_t> lr_milestones;    // multistep: step at which lr_values[i] starts
  std::vector<double> lr_values;         // multistep: lr after each milestone
  double beta1 = 0.9;
  double beta2 = 0.95;
  double adam_eps = 1e-8;
  double weight_decay = 0.1;
  double grad_clip = 1.0;  // global-norm clip; 0 disables
  uint64_t seed = 1234;
  BackendKind backend = BackendKind::Auto;
  Precision precision = Precision::Float32;  // CPU only: float64 for reference runs
  int threads = 0;                           // CPU threads; 0 = all cores
  // A step whose loss or gradient norm is not finite is skipped (no update,
  // no bias change) or stops the run; skip aborts after this many in a row.
  NonFinitePolicy nonfinite = NonFinitePolicy::Skip;
  int max_consecutive_skips = 5;
  int64_t eval_interval = 0;          // steps between in-training evals; 0 = off
  int64_t eval_max_tokens = 1048576;  // tokens per in-training eval; 0 = whole split
  bool final_eval = true;             // whole split at the end of training: eval.json
  // Tokens per chunk of the LM head + cross-entropy (the logits of one chunk
  // are in memory at a time); 0 = auto, about 256 MiB of logits.
  int64_t loss_chunk_tokens = 0;
  // Distributed optimizer: 0 = every rank holds the AdamW moments of all its
  // parameters; 1 = ZeRO stage 1, each rank holds and updates one shard
  // (docs/parallel.md).
  int zero = 0;
  // Activation recomputation in backward (docs/parallel.md): none, selective
  // (the cheap-to-redo activations) or full (each layer from its input).
  Recompute recompute = Recompute::None;
  bool operator==(const TrainConfig&) const = default;
};

struct DataConfig {
  DataSource source = DataSource::Synthetic;
  // tokens: a raw token file. shards: a shard directory (its train_*.bin), a
  // glob pattern or one shard file.
  std::string path;
  TokenDType dtype = TokenDType::U16;  // raw token files only; shards carry their width
  // Validation shards (directory, glob or file). Empty: the val_*.bin of
  // data.path when that is a directory.
  std::string val_path;
  // synthetic: a fixed random first-order Markov chain over the vocab in which
  // every token has `synthetic_branching` equally likely successors, so the
  // achievable loss is ln(branching). branching == vocab gives uniform noise.
  int synthetic_branching = 4;
  // Which corpus the config expects and the command that makes it, added to
  // the error when data.path or data.val_path is missing (presets carry one).
  std::string prepare_hint;
  bool operator==(const DataConfig&) const = default;
};

struct ParallelConfig {
  int ep_size = 1;
  Transport transport = Transport::Auto;
  // A multi-rank job in which no step completes for this long is ended (a
  // hung peer must not hang the job forever); 0 disables.
  double timeout_seconds = 1800;
  bool operator==(const ParallelConfig&) const = default;
};

struct CheckpointConfig {
  std::string dir;        // empty: no checkpoints (a config file defaults it, load_config)
  int64_t interval = 0;   // steps between checkpoints; 0 = only at the end
  int keep_last = 3;
  bool operator==(const CheckpointConfig&) const = default;
};

struct LogConfig {
  int interval = 10;                // console progress line every N steps
  std::string out_dir = "runs/default";  // run outputs (a config file: runs/<stem>, load_config)
  int expert_load_interval = 100;   // per-expert loads every N steps; 0 = never
  std::string level = "info";       // trace|debug|info|warn|error
  bool operator==(const LogConfig&) const = default;
};

struct Config {
  ModelConfig model;
  MoeConfig moe;
  BalanceConfig balance;
  TrainConfig train;
  DataConfig data;
  ParallelConfig parallel;
  CheckpointConfig checkpoint;
  LogConfig log;
  // Field-wise; exact for doubles (config_to_yaml round-trips them exactly).
  bool operator==(const Config&) const = default;
};

// Loads a YAML file, applies "--set a.b=c" overrides (each a "path=value"
// string, value parsed as YAML), checks it strictly and returns it. A
// top-level `base: PATH` (relative to the file) loads that config first,
// recursively; the file's own keys, then the overrides, replace the base's.
// A missing base or a cycle of bases is a ConfigError naming the files.
// Throws ConfigError naming the offending key for unknown keys, wrong types
// and inconsistent values. world_size is used for divisibility checks.
// Unless the file, its bases or an override set them, log.out_dir is
// runs/<file stem> and checkpoint.dir <log.out_dir>/checkpoints.
Config load_config(const std::string& path, const std::vector<std::string>& overrides = {},
                   int world_size = 1);
// Same from YAML text (tests, embedded presets).
Config parse_config(const std::string& yaml_text, const std::vector<std::string>& overrides = {},
                    int world_size = 1);
// Cross-key consistency checks; throws ConfigError. Called by the loaders.
void validate_config(const Config& c, int world_size);
// Keys whose values differ between a and b, as (key, value in a, value in b).
struct ConfigDifference {
  std::string key, before, after;
};
std::vector<ConfigDifference> config_differences(const Config& a, const Config& b);
// True for keys that change the model's parameters or their meaning (model.*,
// moe.*, train.precision): a checkpoint cannot be resumed across them.
bool is_architectural_key(const std::string& key);

// Canonical YAML dump of every key (written next to metrics for provenance).
std::string config_to_yaml(const Config& c);

// What a key does to training, kept beside the key in the field table, so
// tools that group runs (scripts/report.py) take it from here.
enum class TrainingEffect {
  Changes,  // changes what a run trains (model, data, optimizer, balancing, ...)
  Seed,     // the random seed: runs that differ only here are seeds of one setting
  None,     // changes no trained weight (logging, checkpoints, evaluation, threads, ...)
};
struct KeyMeta {
  TrainingEffect training = TrainingEffect::Changes;
  // Read only when key read_when_key has value read_when_value (both null:
  // always read), e.g. balance.update_rate only with balance.method loss_free.
  const char* read_when_key = nullptr;
  const char* read_when_value = nullptr;
};
// The metadata of "section.key"; throws ConfigError for an unknown key.
KeyMeta key_meta(const std::string& key);
// config_to_yaml with each key's value and metadata:
//   section:
//     key: {value: V, training: changes|seed|none[, read_when: {KEY: VALUE}]}
// (moe-train --print-config --with-meta; docs/config.md).
std::string config_to_yaml_with_meta(const Config& c);
const char* to_string(TrainingEffect v);

const char* to_string(GateFn v);
const char* to_string(BalanceMethod v);
const char* to_string(UpdateRule v);
const char* to_string(BiasMode v);
const char* to_string(AuxScope v);
const char* to_string(LrSchedule v);
const char* to_string(DataSource v);
const char* to_string(TokenDType v);
const char* to_string(BackendKind v);
const char* to_string(Precision v);
const char* to_string(Transport v);
const char* to_string(NonFinitePolicy v);
const char* to_string(Recompute v);

}  // namespace moe
