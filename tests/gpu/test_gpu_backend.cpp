// The CUDA backend against the CPU reference, whole-model: fp32 against the
// CPU's fp32, bf16 (bf16 activations) against the CPU's bf16 mode, the same
// semantics (each with its own tolerances): one training step (loss, every
// gradient), a 50-step loss curve, determinism (bit-identical reruns), and
// bit-exact resume on the GPU. Skips without a device.
#include <gtest/gtest.h>

#ifdef MOE_WITH_CUDA

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <limits>
#include <string>
#include <filesystem>
#include <vector>

#include "backend/cuda/cuda_device.h"
#include "support/nonfinite_routing.h"
#include "config/config.h"
#include "data/token_source.h"
#include "train/checkpoint.h"
#include "train/trainer.h"

namespace moe {
namespace {

#define SKIP_WITHOUT_GPU() \
  if (cuda_device_count() == 0) GTEST_SKIP() << "no CUDA device visible"

Config small_config() {
  Config c;
  c.model = {.vocab_size = 96, .hidden = 64, .heads = 4, .layers = 3, .first_dense_layers = 1,
             .dense_intermediate = 96, .seq_len = 37, .rope_theta = 10000, .norm_eps = 1e-6,
             .init_std = 0.02};
  c.moe.n_shared = 1;
  c.moe.n_routed = 8;
  c.moe.top_k = 2;
  c.moe.expert_intermediate = 16;
  c.balance.update_rate = 0.01;
  c.train.steps = 20;
  c.train.global_batch = 4;
  c.train.micro_batch = 2;
  c.train.lr = 3e-3;
  c.train.warmup_steps = 2;
  c.train.min_lr = 3e-4;
  c.train.threads = 1;
  return c;
}

template <typename A>
std::vector<double> curve(Backend<float, A>& be, const Config& c, int64_t steps) {
  LocalComm comm;
  auto data = make_train_source(c);
  Trainer<float, A> t(c, be, comm, *data);
  std::vector<double> out;
  for (int64_t s = 0; s < steps; ++s) out.push_back(t.train_step(s).loss);
  return out;
}

// Tolerances against the CPU run of the same precision.
struct Tolerance {
  double loss_rel;      // one step's loss
  double grad_cosine;   // minimum cosine of the whole gradient vector
  double curve_rel;     // each step of a 50-step loss curve
};
// fp32 (u = 2^-24; small_config: 148 tokens a step, P = 136,640 parameters):
// - one step: every op differs from the CPU only by summation order (dots of
//   K <= 96 terms, gradient sums over <= 148 tokens: sqrt(K) u ~ 7e-7
//   relative), so the loss agrees to ~1e-6 and the gradient's normwise
//   relative difference r is ~1e-6 (1 - cos = r^2 / 2 ~ 1e-12). The top-K's
//   inputs are NOT bitwise identical (router logits from different GEMMs,
//   scores ~1e-8 apart): a near-tie flips with probability ~2e-4 over the
//   148 token-layers (score spread 0.04 at init_std 0.02). A flip moves ~1e-6
//   of the loss, but one token's share (~1/sqrt(37)) of two experts'
//   gradients: 1 - cos ~ f / 37 if each expert holds a fraction f of the
//   squared gradient norm, over 1e-5 unless f < 4e-4. So 0.99999 (r <=
//   4.5e-3) assumes no flip; one would fail on every run on that GPU, and
//   the per-layer counts of the two backends would then differ by one.
// - 50-step curve, first order (as in test_cli_mpi): a gradient element errs
//   by delta <= 148 u = 8.8e-6; AdamW's normalised update moves by <= lr delta
//   per element, and lr sums to ~0.08 over the 50 steps; so a step's loss
//   moves by <= |g|_1 0.08 delta <= sqrt(P) |g|_2 0.08 delta = 2.6e-4 |g|_2
//   absolute: at |g|_2 ~ 1, <= 1.9e-4 relative even at the data's entropy
//   (ln 4), with a worst-case delta (sqrt(148) u, 12x smaller, typically).
//   1e-3 is >= 5x that. Not covered by the bound: a routing flip whose count
//   turns a Loss-Free bias (u = 0.01) puts the runs on different routing
//   trajectories; for scale, the CPU's bf16 and fp32 runs (every activation
//   2^-9 apart, many flips) stay within 9e-4 over 30 steps
//   (test_bf16 Bf16Model.TrainingFollowsFp32, measured).
const Tolerance kFp32{1e-5, 0.99999, 1e-3};
// bf16: the same rounding points (head_dim 16 here: both run fp32 attention
// on widened copies and round its outputs once), but a different fp32
// summation order moves a value across a bf16 rounding boundary (one bf16
// ulp, 2^-8 relative) now and then. That is a fraction of the whole bf16
// error, whose size test_bf16 measures on the CPU: one step against fp64,
// loss 2.6e-5 relative and cosine 0.99952 (OneStepAgainstFp64); 30 steps
// against fp32, 9e-4 (TrainingFollowsFp32). So 1e-2 (loss) is loose, 0.999
// allows twice the whole bf16 gradient deficit (1 - 0.99952), and 2e-2 is
// >= 20x the measured bf16-vs-fp32 curve spread.
const Tolerance kBf16{1e-2, 0.999, 2e-2};

template <typename A>
void expect_one_step_matches_cpu(const Tolerance& tol) {
  const Config c = small_config();
  auto cpu = make_cpu_backend<float, A>(1);
  auto gpu = make_cuda_backend<A>(0);
  std::vector<int32_t> tok(2 * 37), tgt(tok.size());
  for (size_t i = 0; i < tok.size(); ++i) tok[i] = int32_t((i * 7 + 3) % 96), tgt[i] = int32_t((i * 5 + 1) % 96);
  auto grads = [&](Backend<float, A>& be, double* loss) {
    Transformer<float, A> m(c, be, 2);
    m.init_params(11);
    m.params().zero_grads();
    ForwardOptions opt;
    opt.training = true;
    opt.ce_grad_scale = 1.0 / double(tok.size());
    *loss = m.forward(tok.data(), tgt.data(), 2, opt).loss_sum / double(tok.size());
    m.backward();
    return m.params().grads_to_host();
  };
  double lc = 0, lg = 0;
  const auto gc = grads(*cpu, &lc), gg = grads(*gpu, &lg);
  EXPECT_NEAR(lg, lc, tol.loss_rel * lc);
  double dot = 0, nc = 0, ng = 0;
  for (size_t i = 0; i < gc.size(); ++i) dot += gc[i] * gg[i], nc += gc[i] * gc[i], ng += gg[i] * gg[i];
  EXPECT_GT(dot / std::sqrt(nc * ng), tol.grad_cosine);
}

template <typename A>
void expect_curve_matches_cpu_and_repeats(const Tolerance& tol) {
  Config c = small_config();
  c.train.steps = 50;
  auto cpu = make_cpu_backend<float, A>(1);
  auto gpu = make_cuda_backend<A>(0);
  const auto a = curve(*cpu, c, 50), b = curve(*gpu, c, 50), b2 = curve(*gpu, c, 50);
  for (size_t s = 0; s < a.size(); ++s) EXPECT_NEAR(b[s], a[s], tol.curve_rel * a[s]) << "step " << s;
  EXPECT_LT(b.back(), 0.8 * b.front());  // it trains
  // Same config and seed on the same backend object: the same kernels (no
  // float atomics) and the same cuBLAS algorithms (plans per shape; every
  // buffer its own cudaMalloc, so the same alignment) on the same inputs.
  EXPECT_EQ(b, b2);
}

// Group-limited routing (8 experts in 4 groups of 2, 2 groups kept, top-3)
// through the whole model: the first step's per-expert counts are the CPU's
// exactly (the same routing of the same init; a near-tie flip has the odds
// given above), and an 8-step Loss-Free curve follows the CPU's within the
// fp32 curve tolerance.
TEST(GpuBackend, GroupLimitedRoutingFollowsCpu) {
  SKIP_WITHOUT_GPU();
  Config c = small_config();
  c.moe.top_k = 3;
  c.moe.n_group = 4;
  c.moe.topk_group = 2;
  c.train.steps = 8;
  auto cpu = make_cpu_backend<float>(1);
  auto gpu = make_cuda_backend<float>(0);
  auto run = [&](Backend<float>& be) {
    LocalComm comm;
    auto data = make_train_source(c);
    Trainer<float> t(c, be, comm, *data);
    std::vector<StepStats> out;
    for (int64_t s = 0; s < c.train.steps; ++s) out.push_back(t.train_step(s));
    return out;
  };
  const auto a = run(*cpu), b = run(*gpu);
  EXPECT_EQ(b[0].counts, a[0].counts);
  for (size_t s = 0; s < a.size(); ++s)
    EXPECT_NEAR(b[s].loss, a[s].loss, kFp32.curve_rel * a[s].loss) << "step " << s;
}

TEST(GpuBackend, OneStepLossAndGradientsMatchCpu) {
  SKIP_WITHOUT_GPU();
  expect_one_step_matches_cpu<float>(kFp32);
}

TEST(GpuBackend, Bf16OneStepLossAndGradientsFollowCpu) {
  SKIP_WITHOUT_GPU();
  expect_one_step_matches_cpu<bf16>(kBf16);
}

TEST(GpuBackend, FiftyStepLossCurveMatchesCpuAndIsDeterministic) {
  SKIP_WITHOUT_GPU();
  expect_curve_matches_cpu_and_repeats<float>(kFp32);
}

TEST(GpuBackend, Bf16FiftyStepLossCurveFollowsCpuAndIsDeterministic) {
  SKIP_WITHOUT_GPU();
  expect_curve_matches_cpu_and_repeats<bf16>(kBf16);
}

// The 1B preset (configs/bench/1b.yaml) at micro-batch 1, one training step
// on the same batch and parameters: the GPU's bf16 against the CPU's bf16
// mode (issue 10: a finite loss within 2e-2). The CPU side takes a minute on
// a 16-core host. Loose on purpose, a check for gross errors: at head_dim
// 128 the GPU's tensor-core attention also rounds P and dS to bf16 (the CPU
// does not; 1.5e-3 .. 7e-3 normwise against fp64, docs/cuda.md), the CPU runs all
// its threads (another OpenBLAS order), and 9 layers x 2048 tokens x top-6
// of 64 make some routing flips likely. The loss at init is ~ln(32064) =
// 10.4 on both sides whatever the precision (2e-2 = 0.2 absolute); 0.99
// allows a normwise gradient difference of 14%.
TEST(GpuBackend, OneBillionPresetStepFollowsCpuBf16) {
  SKIP_WITHOUT_GPU();
  const Config c = load_config(std::string(MOE_SOURCE_DIR) + "/configs/bench/1b.yaml",
                               {"train.micro_batch=1", "train.global_batch=1", "train.threads=0"},
                               1);
  const int S = c.model.seq_len, V = c.model.vocab_size;
  std::vector<int32_t> tok(S), tgt(S);
  for (int i = 0; i < S; ++i) tok[i] = int32_t((i * 7919 + 13) % V), tgt[i] = int32_t((i * 104729 + 7) % V);
  ForwardOptions opt;
  opt.training = true;
  opt.ce_grad_scale = 1.0 / S;
  auto step = [&](Backend<float, bf16>& be, const std::vector<float>* params, double* loss,
                  std::vector<float>* host_params) {
    Transformer<float, bf16> m(c, be, 1);
    if (params)
      m.params().params_from_host(*params);
    else
      m.init_params(c.train.seed);
    if (host_params) *host_params = m.params().params_to_host();
    m.params().zero_grads();
    *loss = m.forward(tok.data(), tgt.data(), 1, opt).loss_sum / S;
    m.backward();
    return m.params().grads_to_host();
  };
  auto cpu = make_cpu_backend<float, bf16>(0);
  auto gpu = make_cuda_backend<bf16>(0);
  std::vector<float> params;
  double lc = 0, lg = 0;
  const auto gc = step(*cpu, nullptr, &lc, &params);
  const auto gg = step(*gpu, &params, &lg, nullptr);
  std::printf("  1B step: loss cpu-bf16 %.6f cuda-bf16 %.6f\n", lc, lg);
  ASSERT_TRUE(std::isfinite(lg));
  EXPECT_NEAR(lg, lc, 2e-2 * lc);
  double dot = 0, nc = 0, ng = 0;
  for (size_t i = 0; i < gc.size(); ++i) dot += double(gc[i]) * gg[i], nc += double(gc[i]) * gc[i], ng += double(gg[i]) * gg[i];
  std::printf("  1B step: gradient cosine %.6f, norm ratio %.4f\n", dot / std::sqrt(nc * ng),
              std::sqrt(ng / nc));
  EXPECT_GT(dot / std::sqrt(nc * ng), 0.99);
}

TEST(GpuBackend, ResumeIsBitExact) {
  SKIP_WITHOUT_GPU();
  Config c = small_config();
  const auto dir = std::filesystem::temp_directory_path() / "moe_gpu_resume";
  std::filesystem::remove_all(dir);
  c.checkpoint.dir = dir.string();
  auto gpu = make_cuda_backend<float>(0);
  const auto all = curve(*gpu, c, 8);
  LocalComm comm;
  auto data = make_train_source(c);
  std::vector<double> resumed;
  {
    Trainer<float> t(c, *gpu, comm, *data);
    for (int64_t s = 0; s < 4; ++s) resumed.push_back(t.train_step(s).loss);
    t.save_checkpoint();
  }
  Trainer<float> t(c, *gpu, comm, *data);
  t.resume_from(find_latest_checkpoint(c.checkpoint.dir));
  for (int64_t s = 4; s < 8; ++s) resumed.push_back(t.train_step(s).loss);
  // Exact: the checkpoint holds the fp32 state bit for bit and the same GPU
  // reruns the same deterministic kernels on it.
  EXPECT_EQ(resumed, all);
  std::filesystem::remove_all(dir);
}

// NaN or Inf where routing reads it, on the CUDA backend (the CPU twin, with
// a gradient-skipped reference, is test_checkpoint's
// NonFinite.NonFiniteRoutingIsASkippedStepAndTheRunGoesOn): the MoE input,
// a router row, the bias. Step k is skipped, every token goes to K valid
// experts (the kernel's top-K order, core/topk_order.h), nothing changes;
// with the value put back every case ends bit-identical to the others.
// The embedding kernels index the table unchecked: an id outside the
// vocabulary is refused on the host before any kernel runs, so the device
// stays usable (on the emulated device an out-of-bounds read would be a
// sticky fault) and the next valid forward gives the loss of a fresh model.
TEST(GpuBackend, OutOfVocabularyTokenIsRefusedBeforeAnyKernel) {
  SKIP_WITHOUT_GPU();
  const Config c = small_config();
  auto gpu = make_cuda_backend<float>(0);
  LocalComm comm;
  auto data = make_train_source(c);
  Trainer<float> t(c, *gpu, comm, *data);
  const int B = 1, N = B * c.model.seq_len;
  std::vector<int32_t> tokens(N), targets(N);
  for (int n = 0; n < N; ++n) tokens[n] = targets[n] = n % c.model.vocab_size;
  const double good = t.model().forward(tokens.data(), targets.data(), B, ForwardOptions{}).loss_sum;
  for (const int32_t bad : {c.model.vocab_size, -1}) {
    tokens[5] = bad;
    try {
      t.model().forward(tokens.data(), targets.data(), B, ForwardOptions{});
      ADD_FAILURE() << "token " << bad << " was accepted";
    } catch (const DataError& e) {
      EXPECT_NE(std::string(e.what()).find("token id " + std::to_string(bad) + " at position 5"),
                std::string::npos)
          << e.what();
    }
  }
  tokens[5] = 5;
  EXPECT_EQ(t.model().forward(tokens.data(), targets.data(), B, ForwardOptions{}).loss_sum, good);
}

TEST(GpuBackend, NonFiniteRoutingIsASkippedStep) {
  SKIP_WITHOUT_GPU();
  const Config c = small_config();
  constexpr int64_t k = 2, n = 5;
  constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();
  constexpr float kInf = std::numeric_limits<float>::infinity();
  const test::NonFiniteCase cases[] = {{"NaN MoE input", "layers.1.ln2", 5, 1, kNaN},
                                       {"+inf MoE input", "layers.2.ln2", 0, 64, kInf},
                                       {"+inf router row", "layers.1.moe.router", 64, 64, kInf},
                                       {"NaN router", "layers.2.moe.router", 0, 512, kNaN},
                                       {"NaN bias", "", 3, 1, kNaN},
                                       {"-inf biases", "", 8, 8, -kInf}};
  std::vector<float> first_params, first_bias;
  for (const test::NonFiniteCase& cs : cases) {
    SCOPED_TRACE(cs.what);
    auto gpu = make_cuda_backend<float>(0);
    LocalComm comm;
    auto data = make_train_source(c);
    Trainer<float> t(c, *gpu, comm, *data);
    for (int64_t s = 0; s < k; ++s) t.train_step(s);
    test::expect_skipped_step(t, k, cs, 4 * 37 * 2);  // 4 sequences x 37 tokens x top-2
    for (int64_t s = k + 1; s < n; ++s) EXPECT_FALSE(t.train_step(s).skipped);
    if (first_params.empty()) {
      first_params = t.model().params().params_to_host();
      first_bias = t.balancer().bias();
    } else {
      EXPECT_EQ(t.model().params().params_to_host(), first_params);
      EXPECT_EQ(t.balancer().bias(), first_bias);
    }
  }
}

}  // namespace
}  // namespace moe

#else

TEST(GpuBackend, Skipped) { GTEST_SKIP() << "built without CUDA"; }

#endif
