// Checkpoints (docs/design.md section 5). One directory per step under
// checkpoint.dir:
//   step_00001000/model.safetensors      parameters (one tensor per expert) and
//                                        the router selection biases
//   step_00001000/optimizer.safetensors  AdamW moments (adam_m.<name>, adam_v.<name>)
//   step_00001000/trainer_state.json     step, tokens seen, config, code version
//   latest                               name of the newest complete checkpoint
// A checkpoint is written under a temporary name, every file fsynced, then
// renamed: a directory named step_* is always complete. Tensors are stored
// in the training precision (F32, or F64 for float64 runs) so resuming is
// bit-exact.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "layers/params.h"
#include "moe/balancer.h"
#include "train/safetensors.h"

namespace moe {

struct TrainerState {
  int64_t step = 0;            // optimizer steps done
  int64_t tokens_seen = 0;
  int64_t skipped_steps = 0;   // steps skipped for a non-finite loss or gradient
  std::string config_yaml;     // the run's resolved config
  std::string version;         // code version that wrote it
  // The config's train.global_batch holds since step batch_since_step, when
  // tokens_seen was tokens_at_batch_since: (0, 0) unless a resume changed
  // the batch, so tokens_seen = tokens_at_batch_since + (step -
  // batch_since_step) x global_batch x seq_len. -1: not recorded (older
  // checkpoints), then only bounds are checked.
  int64_t batch_since_step = 0;
  int64_t tokens_at_batch_since = 0;
  // Read, not written: global_batch x seq_len of config_yaml (0: unreadable).
  int64_t tokens_per_step = 0;
};

// One named tensor's values, host copies: parameter and AdamW moments.
template <typename T>
struct TensorState {
  std::string name;
  std::vector<int64_t> shape;
  std::vector<T> param, m, v;
};
// Every tensor of a parameter set (host copies), with its AdamW moments
// taken from m and v in the parameter set's layout (Optimizer::moments_to_host).
template <typename T>
std::vector<TensorState<T>> tensor_states(const ParamSet<T>& params, const std::vector<T>& m,
                                          const std::vector<T>& v);

// AdamW moments in a parameter set's layout (host).
template <typename T>
struct HostMoments {
  std::vector<T> m, v;
};

// Writes a checkpoint of `state.step` under root; prunes to keep_last;
// updates `latest`. Returns the checkpoint's directory. Refuses
// (InternalError) to write non-finite parameters or moments. A file
// operation that fails (a full disk: core/file_io.h) leaves root as it was:
// the partial directory is removed, the previous checkpoint stays `latest`
// and intact, and the IoError says which step was not saved and why.
template <typename T>
std::string save_checkpoint(const std::string& root, const std::vector<TensorState<T>>& tensors,
                            const Balancer& balancer, int first_moe_layer,
                            const TrainerState& state, int keep_last);

// Reads trainer_state.json of a checkpoint directory and checks it against
// itself: the step equals the directory's (step_00000040: 40) and is not
// negative, skipped_steps is within [0, step], tokens_seen is what the steps
// and the saved config's batch imply. A failure is a DataError naming the
// file and the previous checkpoint beside it, if any.
TrainerState read_trainer_state(const std::string& ckpt_dir);

// Loads parameters and biases into params/balancer and, unless `moments` is
// null, the AdamW moments into it (params' layout), checking every tensor's
// presence and shape and that every value is finite (DataError otherwise,
// as read_trainer_state). Returns the trainer state.
template <typename T>
TrainerState load_checkpoint(const std::string& ckpt_dir, ParamSet<T>& params, Balancer& balancer,
                             int first_moe_layer, HostMoments<T>* moments = nullptr);

// DataError unless every float tensor of `file` (read from `path`, in the
// checkpoint ckpt_dir) is finite (moe-export, which reads the file itself).
void require_finite_tensors(const SafeTensorFile& file, const std::string& path,
                            const std::string& ckpt_dir);

// The newest complete checkpoint under root (via `latest`, else by scanning
// step_* directories); "" when there is none.
std::string find_latest_checkpoint(const std::string& root);

// The checkpoint a user means by `dir`: dir itself when it holds
// trainer_state.json, else the newest checkpoint of dir as a checkpoint.dir
// (as moe-eval and moe-export read --checkpoint); "" when it is neither.
std::string checkpoint_in(const std::string& dir);

// Name of the bias tensor of the MoE layer at transformer layer `layer`.
std::string router_bias_name(int layer);

}  // namespace moe
