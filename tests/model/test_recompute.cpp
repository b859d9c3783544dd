// train.recompute (docs/parallel.md, "Activation recomputation"): on the CPU
// backend, selective and full give the bits of none (losses, gradients,
// counts, aux losses, biases) in fp32 and bf16, with and without shared
// experts, Loss-Free and aux loss, over a forward + backward and over
// Trainer steps; and the recomputation counts nothing: the counts of a step
// are the hand count of the routing the training forward decided.
//
// Every comparison is exact because both sides are the same computation:
// the same config but for train.recompute, the same shapes (micro-batch 3),
// and a backend of the same thread count (c.train.threads = 2 on both sides;
// OpenBLAS's Haswell/Zen kernels round by thread count, so it must match); a
// recompute reruns the same op on the same inputs, reusing the stored
// routing, and counts nothing.
#include <gtest/gtest.h>

#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "data/token_source.h"
#include "model/transformer.h"
#include "train/trainer.h"

namespace moe {
namespace {

struct Case {
  BalanceMethod method;
  int n_shared;
  bool bf16;
  std::string name() const {
    return std::string(method == BalanceMethod::AuxLoss ? "aux" : "loss_free") + "_shared" +
           std::to_string(n_shared) + (bf16 ? "_bf16" : "_fp32");
  }
};

std::vector<Case> cases() {
  std::vector<Case> all;
  for (BalanceMethod m : {BalanceMethod::LossFree, BalanceMethod::AuxLoss})
    for (int shared : {0, 1})
      for (bool bf : {false, true}) all.push_back({m, shared, bf});
  return all;
}

Config small_config(const Case& k, Recompute policy) {
  Config c;
  c.model = {.vocab_size = 48, .hidden = 32, .heads = 2, .layers = 3, .first_dense_layers = 1,
             .dense_intermediate = 40, .seq_len = 16, .rope_theta = 10000, .norm_eps = 1e-6,
             .init_std = 0.05};
  c.moe.n_shared = k.n_shared;
  c.moe.n_routed = 8;
  c.moe.top_k = 2;
  c.moe.expert_intermediate = 12;
  c.balance.method = k.method;
  c.balance.update_rate = 0.01;
  c.balance.aux_alpha = 0.01;
  c.train.steps = 4;
  c.train.global_batch = 6;
  c.train.micro_batch = 3;
  c.train.lr = 5e-3;
  c.train.warmup_steps = 1;
  c.train.min_lr = 5e-4;
  c.train.threads = 2;  // both sides of every comparison (header comment)
  c.train.precision = k.bf16 ? Precision::BFloat16 : Precision::Float32;
  c.train.recompute = policy;
  c.data.synthetic_branching = 3;
  return c;
}

// Bit equality (== would let -0 match +0).
template <typename U>
bool same_bits(const std::vector<U>& a, const std::vector<U>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(U)) == 0;
}
bool same_bits(double a, double b) { return std::memcmp(&a, &b, sizeof a) == 0; }

struct Pass {
  double loss = 0, aux = 0;
  std::vector<int64_t> counts;
  std::vector<float> grads;
  std::vector<int64_t> hand_counts;  // from the kept expert ids, after backward
};

// One forward + backward of 3 sequences, with a nonzero selection bias.
template <typename A>
Pass forward_backward(const Config& c) {
  auto be = make_cpu_backend<float, A>(c.train.threads);
  Transformer<float, A> model(c, *be, c.train.micro_batch);
  model.init_params(7);
  const int E = c.moe.n_routed, L = model.moe_layers();
  std::mt19937 rng(3);
  std::uniform_real_distribution<float> u(-0.02f, 0.02f);
  std::vector<float> bias(size_t(L) * E);
  for (float& b : bias) b = u(rng);
  Balancer balancer(c.balance, L, E, be.get());  // owns the bias the routers read
  balancer.set_bias(bias);
  model.use_router_bias(balancer.device_bias());
  const int B = c.train.micro_batch, N = B * c.model.seq_len;
  std::vector<int32_t> tokens(N), targets(N);
  for (int i = 0; i < N; ++i) tokens[i] = int32_t(rng() % c.model.vocab_size);
  for (int i = 0; i < N; ++i) targets[i] = tokens[(i + 1) % N];

  Pass p;
  p.counts.assign(size_t(L) * E, 0);
  ForwardOptions opt;
  opt.training = true;
  opt.ce_grad_scale = 1.0 / N;
  opt.aux_grad_scale = 0.5;
  opt.counts = p.counts.data();
  const ForwardResult r = model.forward(tokens.data(), targets.data(), B, opt);
  model.backward();
  p.loss = r.loss_sum;
  p.aux = r.aux_loss_sum;
  p.grads = model.params().grads_to_host();
  p.hand_counts.assign(size_t(L) * E, 0);
  for (int m = 0; m < L; ++m) {
    const int32_t* idx = model.router(m).expert_idx();
    for (int i = 0; i < N * c.moe.top_k; ++i) ++p.hand_counts[size_t(m) * E + idx[i]];
  }
  return p;
}

Pass forward_backward(const Config& c) {
  return c.train.precision == Precision::BFloat16 ? forward_backward<bf16>(c)
                                                  : forward_backward<float>(c);
}

TEST(Recompute, ForwardBackwardIsBitIdenticalToNone) {
  for (const Case& k : cases()) {
    SCOPED_TRACE(k.name());
    const Pass want = forward_backward(small_config(k, Recompute::None));
    EXPECT_GT(want.loss, 0.0);
    if (k.method == BalanceMethod::AuxLoss) {
      EXPECT_GT(want.aux, 0.0);
    }
    for (Recompute policy : {Recompute::Selective, Recompute::Full}) {
      SCOPED_TRACE(to_string(policy));
      const Pass got = forward_backward(small_config(k, policy));
      EXPECT_TRUE(same_bits(got.loss, want.loss)) << got.loss << " vs " << want.loss;
      EXPECT_TRUE(same_bits(got.aux, want.aux)) << got.aux << " vs " << want.aux;
      EXPECT_EQ(got.counts, want.counts);
      EXPECT_TRUE(same_bits(got.grads, want.grads));
    }
  }
}

// The recomputation reuses the routing: after backward the kept expert ids
// are still the training forward's, and the counts are their hand count
// (each once: backward, recomputing or not, adds nothing).
TEST(Recompute, CountsComeFromTheTrainingForwardOnly) {
  for (Recompute policy : {Recompute::None, Recompute::Selective, Recompute::Full}) {
    SCOPED_TRACE(to_string(policy));
    const Pass p = forward_backward(small_config({BalanceMethod::LossFree, 1, false}, policy));
    EXPECT_EQ(p.counts, p.hand_counts);
    int64_t total = 0;
    for (int64_t n : p.counts) total += n;
    const Config c = small_config({BalanceMethod::LossFree, 1, false}, policy);
    EXPECT_EQ(total, int64_t(c.model.moe_layers()) * c.train.micro_batch * c.model.seq_len *
                         c.moe.top_k);
  }
}

struct TrainRun {
  std::vector<StepStats> steps;
  std::vector<float> bias, params;
};

template <typename A>
TrainRun train(const Config& c) {
  auto be = make_cpu_backend<float, A>(c.train.threads);
  LocalComm comm;
  auto data = make_train_source(c);
  Trainer<float, A> t(c, *be, comm, *data);
  TrainRun r;
  for (int64_t s = 0; s < c.train.steps; ++s) r.steps.push_back(t.train_step(s));
  r.bias = t.balancer().bias();
  r.params = t.model().params().params_to_host();
  return r;
}

TrainRun train(const Config& c) {
  return c.train.precision == Precision::BFloat16 ? train<bf16>(c) : train<float>(c);
}

TEST(Recompute, TrainerStepsAreBitIdenticalToNone) {
  for (const Case& k : cases()) {
    SCOPED_TRACE(k.name());
    const TrainRun want = train(small_config(k, Recompute::None));
    for (Recompute policy : {Recompute::Selective, Recompute::Full}) {
      SCOPED_TRACE(to_string(policy));
      const TrainRun got = train(small_config(k, policy));
      ASSERT_EQ(got.steps.size(), want.steps.size());
      for (size_t s = 0; s < want.steps.size(); ++s) {
        const StepStats &g = got.steps[s], &w = want.steps[s];
        EXPECT_TRUE(same_bits(g.loss, w.loss)) << "step " << s;
        EXPECT_TRUE(same_bits(g.aux_loss, w.aux_loss)) << "step " << s;
        EXPECT_TRUE(same_bits(g.grad_norm, w.grad_norm)) << "step " << s;
        EXPECT_TRUE(same_bits(g.maxvio_batch, w.maxvio_batch)) << "step " << s;
        EXPECT_EQ(g.counts, w.counts) << "step " << s;
        EXPECT_TRUE(same_bits(g.bias, w.bias)) << "step " << s;
      }
      EXPECT_TRUE(same_bits(got.bias, want.bias));
      EXPECT_TRUE(same_bits(got.params, want.params));
      if (k.method == BalanceMethod::LossFree) {
        bool moved = false;  // the bias really was updated from the counts
        for (float b : want.bias) moved = moved || b != 0.0f;
        EXPECT_TRUE(moved);
      }
    }
  }
}

// An eval forward (no backward) under full gives the loss of none: the same
// model, input and shapes on one thread both times, so the same bits.
TEST(Recompute, EvalForwardIsUnchanged) {
  for (Recompute policy : {Recompute::Selective, Recompute::Full}) {
    SCOPED_TRACE(to_string(policy));
    auto run = [](const Config& c) {
      auto be = make_cpu_backend<float>(1);
      Transformer<float> model(c, *be, c.train.micro_batch);
      model.init_params(11);
      const int N = c.train.micro_batch * c.model.seq_len;
      std::vector<int32_t> tokens(N), targets(N);
      for (int i = 0; i < N; ++i) tokens[i] = i % c.model.vocab_size, targets[i] = (i * 7) % 5;
      return model.forward(tokens.data(), targets.data(), c.train.micro_batch, {}).loss_sum;
    };
    const Case k{BalanceMethod::LossFree, 1, false};
    EXPECT_TRUE(same_bits(run(small_config(k, policy)), run(small_config(k, Recompute::None))));
  }
}

}  // namespace
}  // namespace moe
