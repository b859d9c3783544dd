#include "train/trainer.h"

#include <spdlog/spdlog.h>

#include <chrono>
#include <cmath>

#include "core/error.h"
#include "eval/evaluator.h"
#include "moe/load_stats.h"
#include "train/lr_schedule.h"
#include "train/stop_signal.h"

namespace moe {

template <typename T>
Trainer<T>::Trainer(const Config& cfg, Backend<T>& be, Comm& comm, const TokenSource& data,
                    const ValidationReader* val)
    : cfg_(cfg),
      be_(be),
      comm_(comm),
      sampler_(data, cfg.model.seq_len, cfg.train.global_batch, cfg.train.micro_batch, comm.rank(),
               comm.size()),
      val_(val),
      model_(std::make_unique<Transformer<T>>(cfg, be, cfg.train.micro_batch)),
      balancer_(cfg.balance, cfg.model.moe_layers(), cfg.moe.n_routed),
      tokens_(size_t(cfg.train.micro_batch) * cfg.model.seq_len),
      targets_(tokens_.size()),
      counts_(size_t(cfg.model.moe_layers()) * cfg.moe.n_routed) {
  model_->init_params(cfg.train.seed);
  model_->set_router_bias(balancer_.bias());
  state_.config_yaml = config_to_yaml(cfg);
  state_.version = MOE_VERSION;
}

template <typename T>
void Trainer<T>::allreduce_gradients() {
  if (comm_.size() == 1) return;
  ParamSet<T>& ps = model_->params();
  grad_host_.resize(ps.size());
  be_.to_host(grad_host_.data(), ps.grads(), ps.size() * sizeof(T));
  comm_.allreduce_sum(grad_host_.data(), grad_host_.size());
  be_.to_device(ps.grads(), grad_host_.data(), ps.size() * sizeof(T));
}

template <typename T>
StepStats Trainer<T>::train_step(int64_t step) {
  const auto t0 = std::chrono::steady_clock::now();
  const TrainConfig& tc = cfg_.train;
  const int S = cfg_.model.seq_len;
  const double global_tokens = double(tc.global_batch) * S;
  const int global_micro_batches = tc.global_batch / tc.micro_batch;

  // Objective = mean token loss over the global batch + aux term averaged
  // over its sequences (scope sequence) or its micro-batches (scope batch).
  ForwardOptions opt;
  opt.ce_grad_scale = 1.0 / global_tokens;
  opt.aux_grad_scale = cfg_.balance.aux_scope == AuxScope::Sequence
                           ? 1.0 / tc.global_batch
                           : 1.0 / global_micro_batches;
  opt.counts = counts_.data();

  ParamSet<T>& ps = model_->params();
  ps.zero_grads();
  std::fill(counts_.begin(), counts_.end(), 0);
  double sums[2] = {0.0, 0.0};  // token loss, aux loss
  for (int m = 0; m < sampler_.micro_batches_per_rank(); ++m) {
    sampler_.micro_batch(step, m, tokens_.data(), targets_.data());
    const ForwardResult r = model_->forward(tokens_.data(), targets_.data(), tc.micro_batch, opt);
    model_->backward();
    sums[0] += r.loss_sum;
    sums[1] += r.aux_loss_sum;
  }
  allreduce_gradients();
  comm_.allreduce_sum(sums, 2);
  comm_.allreduce_sum(counts_.data(), counts_.size());
  if (after_backward_hook) after_backward_hook(step, ps);

  StepStats st;
  st.step = step + 1;
  st.lr = learning_rate(tc, step);
  st.loss = sums[0] / global_tokens;
  st.aux_loss = sums[1] * opt.aux_grad_scale;
  st.grad_norm = std::sqrt(be_.sum_squares(ps.grads(), ps.size()));
  st.skipped = !std::isfinite(st.loss) || !std::isfinite(st.aux_loss) ||
               !std::isfinite(st.grad_norm);
  if (!st.skipped) {
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
    be_.adamw_step(ps.params(), ps.grads(), ps.adam_m(), ps.adam_v(), ps.decay_size(), ap);
    ap.weight_decay = 0.0;
    const size_t nd = ps.decay_size();
    be_.adamw_step(ps.params() + nd, ps.grads() + nd, ps.adam_m() + nd, ps.adam_v() + nd,
                   ps.size() - nd, ap);

    // Loss-Free Balancing: the bias for the next step comes from this step's
    // global counts (never the current batch's future).
    balancer_.update(counts_);
    if (balancer_.updates_bias()) model_->set_router_bias(balancer_.bias());
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
  st.counts = counts_;
  be_.synchronize();
  st.step_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  st.tokens_per_second = global_tokens / std::max(st.step_seconds, 1e-9);
  st.tokens_seen = state_.tokens_seen;
  return st;
}

template <typename T>
std::string Trainer<T>::save_checkpoint() {
  if (cfg_.checkpoint.dir.empty()) return "";
  std::string path;
  if (comm_.rank() == 0)
    path = moe::save_checkpoint(cfg_.checkpoint.dir, model_->params(), balancer_,
                                cfg_.model.first_dense_layers, state_, cfg_.checkpoint.keep_last);
  comm_.barrier();
  return path;
}

template <typename T>
void Trainer<T>::resume_from(const std::string& ckpt_dir) {
  const TrainerState loaded = load_checkpoint(ckpt_dir, model_->params(), balancer_,
                                              cfg_.model.first_dense_layers, true);
  model_->set_router_bias(balancer_.bias());
  state_.step = loaded.step;
  state_.tokens_seen = loaded.tokens_seen;
  state_.skipped_steps = loaded.skipped_steps;
}

template <typename T>
void Trainer<T>::evaluate_and_log(MetricsLog* log) {
  if (!val_) return;
  const EvalResult r =
      evaluate(*model_, *val_, cfg_.train.micro_batch, cfg_.train.eval_max_tokens, comm_);
  if (log) log->record_eval(state_.step, r);
}

template <typename T>
RunOutcome Trainer<T>::run(MetricsLog* log) {
  const auto t0 = std::chrono::steady_clock::now();
  const int64_t first = state_.step;
  const CheckpointConfig& ck = cfg_.checkpoint;
  int64_t last_saved = -1;
  for (int64_t s = first; s < cfg_.train.steps; ++s) {
    const StepStats st = train_step(s);
    const double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (log) log->record(st, elapsed, s + 1 - first);
    if (st.skipped) {
      spdlog::warn("step {}: non-finite loss {} or gradient norm {}: step skipped ({} in a row)",
                   st.step, st.loss, st.grad_norm, consecutive_skips_);
      if (cfg_.train.nonfinite == NonFinitePolicy::Stop ||
          consecutive_skips_ >= cfg_.train.max_consecutive_skips) {
        // The parameters are those of the last good step: safe to keep.
        const std::string path = save_checkpoint();
        throw InternalError("stopping after " + std::to_string(consecutive_skips_) +
                            " non-finite step(s) in a row (train.nonfinite " +
                            to_string(cfg_.train.nonfinite) + ")" +
                            (path.empty() ? "" : "; last good state saved in " + path));
      }
    }
    if (cfg_.train.eval_interval > 0 && st.step % cfg_.train.eval_interval == 0)
      evaluate_and_log(log);
    if (ck.interval > 0 && st.step % ck.interval == 0) {
      save_checkpoint();
      last_saved = st.step;
    }
    if (stop_requested()) {
      std::string path = last_saved == st.step ? "" : save_checkpoint();
      spdlog::info("stop signal {} received: stopped after step {}{}", stop_signal(), st.step,
                   path.empty() ? (ck.dir.empty() ? " (no checkpoint.dir: nothing saved)" : "")
                                : ", checkpoint " + path);
      return RunOutcome::Stopped;
    }
  }
  if (last_saved != state_.step) {
    const std::string path = save_checkpoint();
    if (!path.empty()) spdlog::info("checkpoint {}", path);
  }
  return RunOutcome::Completed;
}

template class Trainer<float>;
template class Trainer<double>;

}  // namespace moe
