#include "train/trainer.h"

#include <chrono>
#include <cmath>

#include "moe/load_stats.h"
#include "train/lr_schedule.h"

namespace moe {

template <typename T>
Trainer<T>::Trainer(const Config& cfg, Backend<T>& be, Comm& comm, const TokenSource& data)
    : cfg_(cfg),
      be_(be),
      comm_(comm),
      sampler_(data, cfg.model.seq_len, cfg.train.global_batch, cfg.train.micro_batch, comm.rank(),
               comm.size()),
      model_(std::make_unique<Transformer<T>>(cfg, be, cfg.train.micro_batch)),
      balancer_(cfg.balance, cfg.model.moe_layers(), cfg.moe.n_routed),
      tokens_(size_t(cfg.train.micro_batch) * cfg.model.seq_len),
      targets_(tokens_.size()),
      counts_(size_t(cfg.model.moe_layers()) * cfg.moe.n_routed) {
  model_->init_params(cfg.train.seed);
  model_->set_router_bias(balancer_.bias());
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

  StepStats st;
  st.step = step + 1;
  st.lr = learning_rate(tc, step);
  st.grad_norm = std::sqrt(be_.sum_squares(ps.grads(), ps.size()));
  AdamWParams ap;
  ap.lr = st.lr;
  ap.beta1 = tc.beta1;
  ap.beta2 = tc.beta2;
  ap.eps = tc.adam_eps;
  ap.step = step + 1;
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

  tokens_seen_ += int64_t(global_tokens);
  st.loss = sums[0] / global_tokens;
  st.aux_loss = sums[1] * opt.aux_grad_scale;
  const MaxVio mv = max_violation_layers(counts_, model_->moe_layers(), cfg_.moe.n_routed);
  st.maxvio_batch = mv.mean;
  st.maxvio_batch_layers = mv.per_layer;
  st.counts = counts_;
  be_.synchronize();
  st.step_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  st.tokens_per_second = global_tokens / std::max(st.step_seconds, 1e-9);
  st.tokens_seen = tokens_seen_;
  return st;
}

template <typename T>
void Trainer<T>::run(int64_t first_step, MetricsLog* log) {
  const auto t0 = std::chrono::steady_clock::now();
  for (int64_t s = first_step; s < cfg_.train.steps; ++s) {
    const StepStats st = train_step(s);
    const double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (log) log->record(st, elapsed, s + 1 - first_step);
  }
}

template class Trainer<float>;
template class Trainer<double>;

}  // namespace moe
