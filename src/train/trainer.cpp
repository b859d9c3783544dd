#include "train/trainer.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <exception>
#include <utility>

#include "comm/topology.h"
#include "core/error.h"
#include "core/fault.h"
#include "eval/evaluator.h"
#include "moe/fanout.h"
#include "moe/load_stats.h"
#include "train/checkpoint_gather.h"
#include "train/lr_schedule.h"
#include "train/stop_signal.h"

namespace moe {
namespace {

// With expert parallelism the caller must name the ranks holding this rank's experts.
Comm& checked_replica(Comm* replica) {
  if (!replica) throw InternalError("trainer: expert parallelism needs a replica communicator");
  return *replica;
}

}  // namespace

template <typename T, typename A>
Trainer<T, A>::Trainer(const Config& cfg, Backend<T, A>& be, Comm& comm, const TokenSource& data,
                    const ValidationReader* val, Comm* ep, Comm* replica)
    : cfg_(cfg),
      be_(be),
      comm_(comm),
      ep_(ep && ep->size() > 1 ? ep : nullptr),
      replica_(ep_ ? checked_replica(replica) : comm),
      sampler_(data, cfg.model.seq_len, cfg.train.global_batch, cfg.train.micro_batch, comm.rank(),
               comm.size()),
      val_(val),
      model_(std::make_unique<Transformer<T, A>>(cfg, be, cfg.train.micro_batch, ep_)),
      optimizer_(std::make_unique<Optimizer<T, A>>(be, model_->params(), cfg.train.zero, comm,
                                                   replica_, ep_)),
      balancer_(cfg.balance, cfg.model.moe_layers(), cfg.moe.n_routed, &be),
      tokens_(size_t(cfg.train.micro_batch) * cfg.model.seq_len),
      targets_(tokens_.size()),
      counts_(size_t(cfg.model.moe_layers()) * cfg.moe.n_routed),
      micro_counts_(counts_.size() * size_t(sampler_.micro_batches_per_rank())),
      fanout_(ep_ ? 2 * size_t(cfg.moe.top_k + 1) : 0) {
  model_->init_params(cfg.train.seed);
  model_->use_router_bias(balancer_.device_bias());
  // Fault point (core/fault.h): this rank fails in its second step.
  const auto fail_rank = injected_fault("train.fail_rank");
  injected_step_failure_ = fail_rank && *fail_rank == std::to_string(comm.rank());
  state_.config_yaml = config_to_yaml(cfg);
  state_.version = MOE_VERSION;
}

template <typename T, typename A>
void Trainer<T, A>::use_device_comms(Comm* world, Comm* ep, Comm* replica) {
  if (world && world->size() != comm_.size())
    throw InternalError("trainer: the device communicator spans " + std::to_string(world->size()) +
                        " ranks, the world " + std::to_string(comm_.size()));
  if (world && ep_ && (!ep || !replica))
    throw InternalError("trainer: expert parallelism needs device EP and replica communicators");
  optimizer_->use_device_comms(world, ep_ ? replica : world);
  model_->set_device_ep_comm(world && ep_ ? ep : nullptr);
}

template <typename T, typename A>
void Trainer<T, A>::set_node(int64_t node_id) {
  if (!ep_) return;
  const std::vector<int> node = node_layout(*ep_, node_id);
  model_->set_node_layout(node);
  int64_t groups_across_nodes = *std::max_element(node.begin(), node.end()) > 0;
  comm_.allreduce_sum(&groups_across_nodes, 1);
  report_fanout_nodes_ = groups_across_nodes > 0;
}

// A computation batch is one micro-batch of every rank of an EP group: the
// tokens that group's GPUs route to their experts in one forward (without
// expert parallelism, one rank's micro-batch). Per layer, the mean MaxVio
// over every computation batch of the step; each rank of a group holds the
// same group counts, so the mean over ranks is the mean over groups.
template <typename T, typename A>
std::vector<double> Trainer<T, A>::computation_batch_maxvio() {
  const int L = model_->moe_layers(), E = cfg_.moe.n_routed;
  const size_t LE = counts_.size();
  const int M = int(micro_counts_.size() / LE);
  if (ep_) ep_->allreduce_sum(micro_counts_.data(), micro_counts_.size());
  std::vector<double> per_layer(size_t(L), 0.0);
  std::vector<int64_t> one(LE);
  for (int m = 0; m < M; ++m) {
    std::copy(micro_counts_.begin() + m * LE, micro_counts_.begin() + (m + 1) * LE, one.begin());
    const MaxVio mv = max_violation_layers(one, L, E);
    for (int l = 0; l < L; ++l) per_layer[l] += mv.per_layer[l];
  }
  comm_.allreduce_sum(per_layer.data(), per_layer.size());
  for (double& v : per_layer) v /= double(M) * comm_.size();
  return per_layer;
}

template <typename T, typename A>
StepStats Trainer<T, A>::train_step(int64_t step) {
  const auto t0 = std::chrono::steady_clock::now();
  const TrainConfig& tc = cfg_.train;
  const int S = cfg_.model.seq_len;
  const double global_tokens = double(tc.global_batch) * S;
  const int global_micro_batches = tc.global_batch / tc.micro_batch;

  // Objective = mean token loss over the global batch + aux term averaged
  // over its sequences (scope sequence, and Loss-Free's seq_aux_alpha loss)
  // or its micro-batches (aux_loss with scope batch).
  ForwardOptions opt;
  opt.training = true;
  opt.ce_grad_scale = 1.0 / global_tokens;
  const bool per_batch = cfg_.balance.method == BalanceMethod::AuxLoss &&
                         cfg_.balance.aux_scope == AuxScope::Batch;
  opt.aux_grad_scale = per_batch ? 1.0 / global_micro_batches : 1.0 / tc.global_batch;

  ParamSet<T>& ps = model_->params();
  {
    PhaseScope phase(be_, Phase::Optimizer);  // zeroing the gradients belongs to the update
    ps.zero_grads();
  }
  // Each micro-batch's counts are kept apart: the batch one rank computes
  // (computation-batch MaxVio); their sum over all ranks drives the bias.
  const int M = sampler_.micro_batches_per_rank();
  const size_t LE = counts_.size();
  std::fill(micro_counts_.begin(), micro_counts_.end(), 0);
  std::fill(fanout_.begin(), fanout_.end(), 0);
  opt.fanout = ep_ ? fanout_.data() : nullptr;
  double sums[2] = {0.0, 0.0};  // token loss, aux loss
  for (int m = 0; m < M; ++m) {
    sampler_.micro_batch(step, m, tokens_.data(), targets_.data());
    opt.counts = micro_counts_.data() + size_t(m) * LE;
    const ForwardResult r = model_->forward(tokens_.data(), targets_.data(), tc.micro_batch, opt);
    model_->backward();
    sums[0] += r.loss_sum;
    sums[1] += r.aux_loss_sum;
  }
  std::fill(counts_.begin(), counts_.end(), 0);
  for (int m = 0; m < M; ++m)
    for (size_t i = 0; i < LE; ++i) counts_[i] += micro_counts_[size_t(m) * LE + i];
  optimizer_->reduce_gradients();
  comm_.allreduce_sum(sums, 2);
  comm_.allreduce_sum(counts_.data(), counts_.size());
  if (ep_) comm_.allreduce_sum(fanout_.data(), fanout_.size());  // every token once
  if (injected_step_failure_ && step >= 1)
    throw InternalError("injected failure (MOE_FAULT_INJECTION train.fail_rank)");
  if (after_backward_hook) after_backward_hook(step, ps);

  StepStats st;
  st.step = step + 1;
  st.lr = learning_rate(tc, step);
  st.loss = sums[0] / global_tokens;
  st.aux_loss = sums[1] * opt.aux_grad_scale;
  {
    PhaseScope phase(be_, Phase::Optimizer);  // the clipping norm
    st.grad_norm = optimizer_->grad_norm();
  }
  st.skipped = !std::isfinite(st.loss) || !std::isfinite(st.aux_loss) ||
               !std::isfinite(st.grad_norm) || !balancer_.bias_finite();
  if (!st.skipped) {
    PhaseScope phase(be_, Phase::Optimizer);  // AdamW and the Loss-Free bias update
    AdamWParams ap;
    ap.lr = st.lr;
    ap.beta1 = tc.beta1;
    ap.beta2 = tc.beta2;
    ap.eps = tc.adam_eps;
    ap.step = step + 1 - state_.skipped_steps;  // moments saw only the applied steps
    ap.grad_scale = (tc.grad_clip > 0 && st.grad_norm > tc.grad_clip)
                        ? tc.grad_clip / (st.grad_norm + 1e-6)
                        : 1.0;
    ap.weight_decay = tc.weight_decay;
    optimizer_->step(ap);

    // Loss-Free Balancing: the bias for the next step comes from this step's
    // global counts (never the current batch's future).
    balancer_.update(counts_);
    consecutive_skips_ = 0;
  } else {
    ++state_.skipped_steps;
    ++consecutive_skips_;
  }

  state_.step = step + 1;
  state_.tokens_seen += int64_t(global_tokens);
  const MaxVio mv = max_violation_layers(counts_, model_->moe_layers(), cfg_.moe.n_routed);
  st.maxvio_batch = mv.mean;
  st.maxvio_batch_layers = mv.per_layer;
  st.maxvio_compute_layers = computation_batch_maxvio();
  for (double v : st.maxvio_compute_layers) st.maxvio_compute += v / double(st.maxvio_compute_layers.size());
  if (ep_) {
    const int K = cfg_.moe.top_k;
    st.fanout_ranks = fanout_of(fanout_.data(), K);
    if (report_fanout_nodes_) st.fanout_nodes = fanout_of(fanout_.data() + K + 1, K);
  }
  st.counts = counts_;
  st.bias = balancer_.bias();
  be_.synchronize();
  st.step_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  st.tokens_per_second = global_tokens / std::max(st.step_seconds, 1e-9);
  st.tokens_seen = state_.tokens_seen;
  return st;
}

template <typename T, typename A>
std::string Trainer<T, A>::save_checkpoint() {
  std::string path;
  if (!save_checkpoint_or_log(&path)) throw IoError(std::exchange(last_save_error_, ""));
  return path;
}

template <typename T, typename A>
bool Trainer<T, A>::save_checkpoint_or_log(std::string* path) {
  path->clear();
  last_save_error_.clear();
  if (cfg_.checkpoint.dir.empty()) return true;
  const std::vector<TensorState<T>> tensors =
      gather_checkpoint_tensors(cfg_, model_->params(), *optimizer_, comm_, ep_);
  // 1: the disk refused (logged or thrown by the callers); 2: anything else,
  // rethrown here. Every rank learns which, after the same collective.
  int64_t failed = 0;
  std::exception_ptr other;
  if (comm_.rank() == 0) {
    try {
      *path = moe::save_checkpoint(cfg_.checkpoint.dir, tensors, balancer_,
                                   cfg_.model.first_dense_layers, state_, cfg_.checkpoint.keep_last);
    } catch (const IoError& e) {
      last_save_error_ = e.what();
      failed = 1;
    } catch (...) {
      other = std::current_exception();
      failed = 2;
    }
  }
  comm_.allreduce_sum(&failed, 1);  // also the barrier: every rank knows
  if (other) std::rethrow_exception(other);
  if (failed == 2)
    throw InternalError("rank 0 could not write the checkpoint of step " +
                        std::to_string(state_.step) + " (see its message)");
  if (failed == 1 && comm_.rank() != 0)
    last_save_error_ = "rank 0 could not write it (see its message)";
  return failed == 0;
}

template <typename T, typename A>
void Trainer<T, A>::resume_from(const std::string& ckpt_dir) {
  HostMoments<T> moments;
  const TrainerState loaded = load_checkpoint(ckpt_dir, model_->params(), balancer_,
                                              cfg_.model.first_dense_layers, &moments);
  optimizer_->moments_from_host(moments.m, moments.v);
  state_.step = loaded.step;
  state_.tokens_seen = loaded.tokens_seen;
  state_.skipped_steps = loaded.skipped_steps;
  // tokens_seen grows by this run's batch from here: a changed batch (or an
  // older checkpoint that does not say since when its batch held) starts anew.
  const int64_t per_step = int64_t(cfg_.train.global_batch) * cfg_.model.seq_len;
  const bool same_batch = loaded.batch_since_step >= 0 && loaded.tokens_per_step == per_step;
  state_.batch_since_step = same_batch ? loaded.batch_since_step : loaded.step;
  state_.tokens_at_batch_since = same_batch ? loaded.tokens_at_batch_since : loaded.tokens_seen;
}

template <typename T, typename A>
void Trainer<T, A>::evaluate_and_log(MetricsLog* log) {
  if (!val_) return;
  last_eval_ = evaluate(*model_, *val_, cfg_.train.micro_batch, cfg_.train.eval_max_tokens, comm_);
  last_eval_step_ = state_.step;
  if (log) log->record_eval(state_.step, last_eval_);
}

// The finished model on the whole validation split, as moe-eval would
// evaluate the checkpoint just written (the same weights, batch micro_batch).
template <typename T, typename A>
void Trainer<T, A>::final_evaluation(MetricsLog* log, const std::string& checkpoint) {
  if (!cfg_.train.final_eval) return;
  if (!val_) {
    spdlog::info("final eval: no validation data (data.val_path or val_*.bin): no eval.json");
    return;
  }
  // An in-training eval of this very step over the whole split is the answer.
  const bool have = last_eval_step_ == state_.step && cfg_.train.eval_max_tokens == 0;
  const EvalResult r = have ? last_eval_ : evaluate(*model_, *val_, cfg_.train.micro_batch, 0, comm_);
  if (log) log->record_final_eval(eval_report(r, state_.step, val_->describe(), checkpoint), r);
}

template <typename T, typename A>
RunOutcome Trainer<T, A>::run(MetricsLog* log) {
  const auto t0 = std::chrono::steady_clock::now();
  const int64_t first = state_.step;
  const CheckpointConfig& ck = cfg_.checkpoint;
  int64_t last_saved = -1;
  std::string last_path;  // rank 0: the checkpoint of step last_saved
  for (int64_t s = first; s < cfg_.train.steps; ++s) {
    set_stop_step(s + 1);  // what a stop signal's acknowledgement names
    const StepStats st = train_step(s);
    const double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (log) log->record(st, elapsed, s + 1 - first);
    if (st.skipped) {
      spdlog::warn("step {}: loss {}, gradient norm {}{}: not finite, step skipped ({} in a row)",
                   st.step, st.loss, st.grad_norm,
                   balancer_.bias_finite() ? "" : ", Loss-Free bias", consecutive_skips_);
      if (cfg_.train.nonfinite == NonFinitePolicy::Stop ||
          consecutive_skips_ >= cfg_.train.max_consecutive_skips) {
        // The parameters are those of the last good step: safe to keep,
        // unless the bias itself is what is not finite (then nothing is).
        std::string path;
        if (!balancer_.bias_finite())
          last_save_error_ = "the Loss-Free bias is not finite";
        const bool saved = balancer_.bias_finite() && save_checkpoint_or_log(&path);
        throw InternalError("stopping after " + std::to_string(consecutive_skips_) +
                            " non-finite step(s) in a row (train.nonfinite " +
                            to_string(cfg_.train.nonfinite) + ")" +
                            (!saved ? "; the last good state could not be saved: " + last_save_error_
                             : path.empty() ? "" : "; last good state saved in " + path));
      }
    }
    if (cfg_.train.eval_interval > 0 && st.step % cfg_.train.eval_interval == 0)
      evaluate_and_log(log);
    if (ck.interval > 0 && st.step % ck.interval == 0) {
      if (save_checkpoint_or_log(&last_path)) {
        last_saved = st.step;
      } else if (comm_.rank() == 0) {
        spdlog::error("{}; training goes on, the next try at step {}",
                      std::exchange(last_save_error_, ""),
                      std::min(st.step + ck.interval, cfg_.train.steps));
      }
    }
    if (on_progress) on_progress();
    // Every rank must stop at the same step (the checkpoint is collective),
    // so the ranks agree on whether any of them got the signal.
    int64_t stop = stop_requested() ? 1 : 0;
    comm_.allreduce_sum(&stop, 1);
    if (stop > 0) {
      std::string path = last_saved == st.step ? "" : save_checkpoint();
      spdlog::info("stop signal {} received: stopped after step {}{}", stop_signal(), st.step,
                   path.empty() ? (ck.dir.empty() ? " (no checkpoint.dir: nothing saved)" : "")
                                : ", checkpoint " + path);
      return RunOutcome::Stopped;
    }
  }
  if (last_saved != state_.step) {
    last_path = save_checkpoint();
    if (!last_path.empty()) spdlog::info("checkpoint {}", last_path);
  }
  final_evaluation(log, last_path);
  return RunOutcome::Completed;
}

template class Trainer<float>;
template class Trainer<double>;
template class Trainer<float, bf16>;

}  // namespace moe
