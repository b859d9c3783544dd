// The small model of the multi-rank tests (test_mpi_*.cpp): 3 layers (one
// dense), 1 shared + 8 routed experts, top-2, a global batch of 8 sequences
// of 8 tokens in micro-batches of 2, so that 1, 2 and 4 ranks all run whole
// micro-batches and ep_size 2 and 4 divide the experts. And what those tests
// compare between runs: the per-step trace of a trainer.
#pragma once

#include <vector>

#include "config/config.h"
#include "train/trainer.h"

namespace moe::test {

inline Config mpi_small_config(BalanceMethod method) {
  Config c;
  c.model = {.vocab_size = 40, .hidden = 16, .heads = 2, .layers = 3, .first_dense_layers = 1,
             .dense_intermediate = 24, .seq_len = 8, .rope_theta = 10000, .norm_eps = 1e-6,
             .init_std = 0.05};
  c.moe.n_shared = 1;
  c.moe.n_routed = 8;
  c.moe.top_k = 2;
  c.moe.expert_intermediate = 8;
  c.balance.method = method;
  c.balance.update_rate = 0.01;
  c.balance.aux_alpha = 0.01;
  c.train.steps = 6;
  c.train.global_batch = 8;
  c.train.micro_batch = 2;
  c.train.lr = 5e-3;
  c.train.warmup_steps = 1;
  c.train.min_lr = 5e-4;
  // The Trainer does not read this: the tests build their backends with
  // make_cpu_backend(1) themselves, one thread on both sides of every
  // comparison (OpenBLAS's Haswell/Zen kernels round by thread count).
  c.train.threads = 1;
  c.data.synthetic_branching = 3;
  return c;
}

// What two runs must agree on, step by step, and the final biases.
struct Trace {
  std::vector<double> loss, aux, grad_norm, maxvio, maxvio_compute;
  std::vector<std::vector<int64_t>> counts;
  std::vector<float> bias;
};

inline Trace record(Trainer<float>& t, int64_t steps) {
  Trace tr;
  for (int64_t s = 0; s < steps; ++s) {
    const StepStats st = t.train_step(s);
    tr.loss.push_back(st.loss);
    tr.aux.push_back(st.aux_loss);
    tr.grad_norm.push_back(st.grad_norm);
    tr.maxvio.push_back(st.maxvio_batch);
    tr.maxvio_compute.push_back(st.maxvio_compute);
    tr.counts.push_back(st.counts);
  }
  tr.bias = t.balancer().bias();
  return tr;
}

// Adversarial routing: a selection bias that sends every token to experts 6
// and 7 (one rank of an EP group gets all rows, the others none).
inline std::vector<float> bias_to_experts_6_and_7(const Config& c) {
  std::vector<float> bias(size_t(c.model.moe_layers()) * c.moe.n_routed, 0.0f);
  for (int l = 0; l < c.model.moe_layers(); ++l)
    bias[size_t(l) * c.moe.n_routed + 6] = bias[size_t(l) * c.moe.n_routed + 7] = 5.0f;
  return bias;
}

}  // namespace moe::test
