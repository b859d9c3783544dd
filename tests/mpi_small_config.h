// The small model of the multi-rank tests (test_mpi_*.cpp): 3 layers (one
// dense), 1 shared + 8 routed experts, top-2, a global batch of 8 sequences
// of 8 tokens in micro-batches of 2, so that 1, 2 and 4 ranks all run whole
// micro-batches and ep_size 2 and 4 divide the experts.
#pragma once

#include "config/config.h"

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
  c.train.threads = 1;
  c.data.synthetic_branching = 3;
  return c;
}

}  // namespace moe::test
