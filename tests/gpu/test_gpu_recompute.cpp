// train.recompute on the CUDA backend: selective and full against none, fp32
// and bf16, Loss-Free and aux loss, with and without shared experts. Every
// redone value is computed by the same kernel on the same inputs as in the
// training forward (the norm outputs by rmsnorm_forward, whose per-row
// arithmetic is residual_rmsnorm_forward's on the stored sum; kernels/rmsnorm.cu),
// and the backend is deterministic (test_gpu_backend: bit-identical reruns),
// so losses and gradients are expected bit-identical, and counts and biases
// exact. cuBLAS could pick another algorithm for other pointer alignments,
// but every activation buffer is its own cudaMalloc (layers/arena.h), so the
// redone GEMMs see the alignment of the original ones. On a mismatch the
// largest relative difference is printed. Skips without a device.
#include <gtest/gtest.h>

#ifdef MOE_WITH_CUDA

#include <algorithm>
#include <cmath>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "backend/cuda/cuda_device.h"
#include "data/token_source.h"
#include "model/transformer.h"
#include "train/trainer.h"

namespace moe {
namespace {

#define SKIP_WITHOUT_GPU() \
  if (cuda_device_count() == 0) GTEST_SKIP() << "no CUDA device visible"

Config small_config(BalanceMethod method, int n_shared, Recompute policy) {
  Config c;
  c.model = {.vocab_size = 96, .hidden = 64, .heads = 4, .layers = 3, .first_dense_layers = 1,
             .dense_intermediate = 96, .seq_len = 37, .rope_theta = 10000, .norm_eps = 1e-6,
             .init_std = 0.02};
  c.moe.n_shared = n_shared;
  c.moe.n_routed = 8;
  c.moe.top_k = 2;
  c.moe.expert_intermediate = 16;
  c.balance.method = method;
  c.balance.update_rate = 0.01;
  c.balance.aux_alpha = 0.01;
  c.train.steps = 3;
  c.train.global_batch = 4;
  c.train.micro_batch = 2;
  c.train.lr = 3e-3;
  c.train.warmup_steps = 1;
  c.train.min_lr = 3e-4;
  c.train.threads = 1;
  c.train.recompute = policy;
  return c;
}

template <typename U>
double max_rel_diff(const std::vector<U>& a, const std::vector<U>& b) {
  double m = 0;
  for (size_t i = 0; i < std::min(a.size(), b.size()); ++i)
    m = std::max(m, std::abs(double(a[i]) - double(b[i])) /
                        std::max(std::abs(double(b[i])), 1e-30));
  return m;
}

template <typename U>
void expect_bits(const std::vector<U>& got, const std::vector<U>& want, const char* what) {
  ASSERT_EQ(got.size(), want.size()) << what;
  EXPECT_EQ(std::memcmp(got.data(), want.data(), got.size() * sizeof(U)), 0)
      << what << ": largest relative difference " << max_rel_diff(got, want);
}

struct Run {
  std::vector<double> loss, aux, grad_norm;
  std::vector<std::vector<int64_t>> counts;
  std::vector<float> bias, grads, params;
};

template <typename A>
Run run(const Config& c) {
  auto be = make_cuda_backend<A>(0);
  Run r;
  {  // one forward + backward: the gradients
    Transformer<float, A> model(c, *be, c.train.micro_batch);
    model.init_params(5);
    const int N = c.train.micro_batch * c.model.seq_len;
    std::mt19937 rng(2);
    std::vector<int32_t> tokens(N), targets(N);
    for (int i = 0; i < N; ++i) tokens[i] = int32_t(rng() % c.model.vocab_size);
    for (int i = 0; i < N; ++i) targets[i] = tokens[(i + 1) % N];
    ForwardOptions opt;
    opt.training = true;
    opt.ce_grad_scale = 1.0 / N;
    opt.aux_grad_scale = 0.5;
    model.forward(tokens.data(), targets.data(), c.train.micro_batch, opt);
    model.backward();
    r.grads = model.params().grads_to_host();
  }
  LocalComm comm;
  auto data = make_train_source(c);
  Trainer<float, A> t(c, *be, comm, *data);
  for (int64_t s = 0; s < c.train.steps; ++s) {
    const StepStats st = t.train_step(s);
    r.loss.push_back(st.loss);
    r.aux.push_back(st.aux_loss);
    r.grad_norm.push_back(st.grad_norm);
    r.counts.push_back(st.counts);
  }
  r.bias = t.balancer().bias();
  r.params = t.model().params().params_to_host();
  return r;
}

template <typename A>
void check() {
  for (BalanceMethod m : {BalanceMethod::LossFree, BalanceMethod::AuxLoss})
    for (int shared : {0, 1}) {
      SCOPED_TRACE(std::string(m == BalanceMethod::AuxLoss ? "aux" : "loss_free") + " shared " +
                   std::to_string(shared));
      const Run want = run<A>(small_config(m, shared, Recompute::None));
      for (Recompute policy : {Recompute::Selective, Recompute::Full}) {
        SCOPED_TRACE(to_string(policy));
        const Run got = run<A>(small_config(m, shared, policy));
        expect_bits(got.grads, want.grads, "gradients");
        expect_bits(got.loss, want.loss, "losses");
        expect_bits(got.aux, want.aux, "aux losses");
        expect_bits(got.grad_norm, want.grad_norm, "grad norms");
        EXPECT_EQ(got.counts, want.counts);
        expect_bits(got.bias, want.bias, "biases");
        expect_bits(got.params, want.params, "parameters");
      }
    }
}

TEST(GpuRecompute, Fp32MatchesNoneBitForBit) {
  SKIP_WITHOUT_GPU();
  check<float>();
}

TEST(GpuRecompute, Bf16MatchesNoneBitForBit) {
  SKIP_WITHOUT_GPU();
  check<bf16>();
}

}  // namespace
}  // namespace moe

#else

TEST(GpuRecompute, Skipped) { GTEST_SKIP() << "built without CUDA"; }

#endif
