// The training loop: gradient accumulation over micro-batches to the global
// batch, gradient all-reduce, global-norm clipping, AdamW, and the Loss-Free
// bias update from the all-reduced per-expert counts of the step.
#pragma once

#include <memory>
#include <vector>

#include "data/token_source.h"
#include "dist/comm.h"
#include "model/transformer.h"
#include "moe/balancer.h"
#include "train/metrics.h"

namespace moe {

template <typename T>
class Trainer {
 public:
  // The trainer borrows the backend, communicator and data source.
  Trainer(const Config& cfg, Backend<T>& be, Comm& comm, const TokenSource& data);

  // One optimizer step with 0-based index `step` (the step's data and LR).
  StepStats train_step(int64_t step);
  // Runs steps [first_step, train.steps), logging to `log` when non-null.
  void run(int64_t first_step, MetricsLog* log);

  Transformer<T>& model() { return *model_; }
  Balancer& balancer() { return balancer_; }

 private:
  void allreduce_gradients();

  Config cfg_;
  Backend<T>& be_;
  Comm& comm_;
  BatchSampler sampler_;
  std::unique_ptr<Transformer<T>> model_;
  Balancer balancer_;
  std::vector<int32_t> tokens_, targets_;
  std::vector<int64_t> counts_;
  std::vector<T> grad_host_;  // staging for host all-reduce (multi-rank only)
  int64_t tokens_seen_ = 0;
};

}  // namespace moe
