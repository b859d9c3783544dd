// The small model and short runs of the checkpoint, non-finite and full-disk
// tests (test_checkpoint, test_full_disk): 2 layers (1 MoE, 4 experts,
// top-2), 4 sequences of 16 tokens per step, one CPU thread (train.threads
// and the backend's: OpenBLAS may round a GEMM differently with another thread
// count, and the tests compare runs of this model bit for bit).
#pragma once

#include <filesystem>
#include <memory>
#include <vector>

#include "backend/backend.h"
#include "comm/comm.h"
#include "config/config.h"
#include "data/token_source.h"
#include "train/trainer.h"

namespace moe::test {

inline Config small_config(BalanceMethod method, const std::filesystem::path& ckpt_dir) {
  Config c;
  c.model = {.vocab_size = 48, .hidden = 16, .heads = 2, .layers = 2, .first_dense_layers = 1,
             .dense_intermediate = 32, .seq_len = 16, .rope_theta = 10000, .norm_eps = 1e-6,
             .init_std = 0.02};
  c.moe.n_shared = 1;
  c.moe.n_routed = 4;
  c.moe.top_k = 2;
  c.moe.expert_intermediate = 8;
  c.balance.method = method;
  c.balance.update_rate = 0.01;
  c.balance.aux_alpha = 0.01;
  c.train.steps = 8;
  c.train.global_batch = 4;
  c.train.micro_batch = 2;
  c.train.lr = 3e-3;
  c.train.warmup_steps = 2;
  c.train.min_lr = 3e-4;
  c.train.threads = 1;
  c.checkpoint.dir = ckpt_dir.string();
  c.checkpoint.keep_last = 2;
  return c;
}

template <typename T>
struct TrainRun {
  std::unique_ptr<Backend<T>> be = make_cpu_backend<T>(1);
  LocalComm comm;
  std::unique_ptr<TokenSource> data;
  std::unique_ptr<Trainer<T>> trainer;
  explicit TrainRun(const Config& c) : data(make_train_source(c)) {
    trainer = std::make_unique<Trainer<T>>(c, *be, comm, *data);
  }
  std::vector<double> steps(int64_t n) {
    std::vector<double> losses;
    for (int64_t i = 0; i < n; ++i) losses.push_back(trainer->train_step(trainer->next_step()).loss);
    return losses;
  }
  std::vector<T> params() { return trainer->model().params().params_to_host(); }
};

}  // namespace moe::test
