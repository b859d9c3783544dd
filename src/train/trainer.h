// The training loop: gradient accumulation over micro-batches to the global
// batch, gradient sums over the ranks, global-norm clipping and AdamW
// (Optimizer: all-reduce, or ZeRO-1's reduce-scatter and all-gather), the Loss-Free
// bias update from the all-reduced per-expert counts of the step; plus the
// run around it: checkpoints, resume, graceful stop on SIGINT/SIGTERM,
// non-finite step handling and periodic evaluation.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "data/shard_dataset.h"
#include "data/token_source.h"
#include "comm/comm.h"
#include "eval/evaluator.h"
#include "model/transformer.h"
#include "moe/balancer.h"
#include "train/checkpoint.h"
#include "train/metrics.h"
#include "train/optimizer.h"

namespace moe {

enum class RunOutcome { Completed, Stopped };

// T: parameters and full-precision state; A: activations (backend.h).
template <typename T, typename A = T>
class Trainer {
 public:
  // The trainer borrows the backend, communicators and data source. `val` may
  // be null (no in-training evaluation). world: every rank; ep: this rank's
  // expert-parallel group and replica: the ranks holding the same experts
  // (both null without expert parallelism: every rank holds every expert).
  Trainer(const Config& cfg, Backend<T, A>& be, Comm& world, const TokenSource& data,
          const ValidationReader* val = nullptr, Comm* ep = nullptr, Comm* replica = nullptr);

  // One optimizer step with 0-based index `step` (the step's data and LR).
  // A step whose loss or gradient norm is not finite changes nothing and
  // comes back with st.skipped set.
  StepStats train_step(int64_t step);
  // Runs steps [next_step(), train.steps): checkpoints every
  // checkpoint.interval steps and at the end, evaluates every
  // train.eval_interval steps and, when done, the whole validation split
  // (train.final_eval: eval.json); on a stop signal checkpoints and returns
  // Stopped. Throws InternalError when non-finite steps stop the run. A
  // periodic checkpoint that cannot be written is logged and the run goes
  // on (the next interval tries again); the last one (end of run, stop
  // signal) failing ends the run with its IoError (docs/reliability.md).
  RunOutcome run(MetricsLog* log);

  // Checkpoint of the current state under checkpoint.dir (collective: rank
  // 0 writes); returns its path on rank 0. A failed write (a full disk) is
  // an IoError on every rank, after which checkpoint.dir is as it was.
  std::string save_checkpoint();
  // Restores a checkpoint directory (parameters, AdamW moments, bias, step).
  void resume_from(const std::string& ckpt_dir);

  // Communicators that move backend memory themselves (NcclComm on GPUs),
  // over the same ranks as the world, EP and replica communicators: gradients
  // are then summed and the MoE rows exchanged in place instead of through
  // host memory. ep and replica are needed with expert parallelism only.
  // Null world: back to the host path.
  void use_device_comms(Comm* world, Comm* ep = nullptr, Comm* replica = nullptr);

  // Collective over the world: this rank's node (any id that the ranks of a
  // node share, e.g. MpiEnvironment::node_id). With expert parallelism the
  // fan-out is then also counted in nodes, and reported when some EP group
  // spans more than one node.
  void set_node(int64_t node_id);

  int64_t next_step() const { return state_.step; }
  const TrainerState& state() const { return state_; }
  Transformer<T, A>& model() { return *model_; }
  Optimizer<T, A>& optimizer() { return *optimizer_; }
  Balancer& balancer() { return balancer_; }

  // Test seam: called after the gradients of a step are summed, before the
  // norm is taken (tests inject non-finite gradients through it). Production
  // code never sets it (the train.fail_rank fault point has its own flag).
  std::function<void(int64_t step, ParamSet<T>&)> after_backward_hook;
  // Called after every completed step (and its eval and checkpoint): the
  // watchdog's heartbeat.
  std::function<void()> on_progress;

 private:
  // save_checkpoint() that logs a failed write instead of throwing: false
  // on every rank when it failed.
  bool save_checkpoint_or_log(std::string* path);
  void evaluate_and_log(MetricsLog* log);
  void final_evaluation(MetricsLog* log, const std::string& checkpoint);
  std::vector<double> computation_batch_maxvio();

  Config cfg_;
  Backend<T, A>& be_;
  Comm& comm_;
  Comm* ep_;       // null: all experts local
  Comm& replica_;  // ranks holding this rank's experts: the world without expert parallelism
  bool injected_step_failure_ = false;  // MOE_FAULT_INJECTION train.fail_rank names this rank
  BatchSampler sampler_;
  const ValidationReader* val_;
  std::unique_ptr<Transformer<T, A>> model_;
  std::unique_ptr<Optimizer<T, A>> optimizer_;  // AdamW, its moments and the gradient sums
  Balancer balancer_;
  std::vector<int32_t> tokens_, targets_;
  std::vector<int64_t> counts_;        // [moe_layers * n_routed]: the step's global batch
  std::vector<int64_t> micro_counts_;  // [micro-batches per rank][moe_layers * n_routed]
  // Expert parallelism only: the step's fan-out histograms over the global
  // batch and the MoE layers, [2][top_k + 1] (ForwardOptions::fanout).
  std::vector<int64_t> fanout_;
  bool report_fanout_nodes_ = false;  // set_node found an EP group across nodes
  TrainerState state_;
  int consecutive_skips_ = 0;
  EvalResult last_eval_;           // the latest in-training evaluation ...
  std::string last_save_error_;  // rank 0: why the last checkpoint could not be written
  int64_t last_eval_step_ = -1;    // ... after this many steps
};

}  // namespace moe
