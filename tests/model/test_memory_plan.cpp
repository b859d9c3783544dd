// The memory plan (moe-train --plan, src/plan/memory_plan.h): it is what the
// CPU backend really allocates, byte for byte, in fp32, fp64 and bf16; it
// shards the experts under expert parallelism as the hand count says; and at
// the 1B preset with micro-batch 16 it is under the 40 GiB per GPU target
// (issue 10), activations scaling linearly with the micro-batch; and
// train.recompute really saves memory: activations(none) > (selective) > (full).
#include <gtest/gtest.h>

#include <cmath>

#include "plan/memory_plan.h"
#include "backend/backend.h"
#include "config/config.h"
#include "model/flops.h"
#include "model/transformer.h"
#include "moe/balancer.h"
#include "train/optimizer.h"

namespace moe {
namespace {

Config small_config() {
  Config c;
  c.model = {.vocab_size = 300, .hidden = 32, .heads = 2, .layers = 3, .first_dense_layers = 1,
             .dense_intermediate = 48, .seq_len = 24, .rope_theta = 10000, .norm_eps = 1e-6,
             .init_std = 0.02};
  c.moe.n_shared = 1;
  c.moe.n_routed = 8;
  c.moe.top_k = 2;
  c.moe.expert_intermediate = 16;
  c.train.global_batch = 6;
  c.train.micro_batch = 3;
  c.train.backend = BackendKind::Cpu;
  return c;
}

template <typename T, typename A>
size_t allocated(const Config& c) {
  auto be = make_cpu_backend<T, A>(1);
  LocalComm local;
  Transformer<T, A> model(c, *be, c.train.micro_batch);
  Balancer balancer(c.balance, model.moe_layers(), c.moe.n_routed, be.get());
  Optimizer<T, A> optimizer(*be, model.params(), c.train.zero, local, local, nullptr);
  return be->current_bytes();
}

TEST(MemoryPlan, IsWhatTheCpuBackendAllocates) {
  Config c = small_config();
  for (Precision p : {Precision::Float32, Precision::Float64, Precision::BFloat16}) {
    c.train.precision = p;
    const MemoryPlan plan = plan_memory(c, BackendKind::Cpu, 1);
    const size_t real = p == Precision::Float64    ? allocated<double, double>(c)
                        : p == Precision::BFloat16 ? allocated<float, bf16>(c)
                                                   : allocated<float, float>(c);
    EXPECT_EQ(plan.total(), real) << to_string(p);
    EXPECT_EQ(plan.workspace, 0u);
    EXPECT_EQ(plan.weight_copies, 0u);  // the CPU reads weights rounded on the fly
    const size_t elem = p == Precision::Float64 ? 8 : 4;
    EXPECT_EQ(plan.weights, size_t(total_parameters(c.model, c.moe)) * elem);
    EXPECT_EQ(plan.optimizer, 2 * plan.weights);
  }
  // The loss chunk decides the scratch when the vocabulary is large.
  c.train.precision = Precision::Float32;
  c.model.vocab_size = 5000;
  c.train.loss_chunk_tokens = 10;
  const MemoryPlan chunked = plan_memory(c, BackendKind::Cpu, 1);
  EXPECT_EQ(chunked.loss_chunk_rows, 10);
  EXPECT_EQ(chunked.scratch, (size_t(10) * 5000 * 4 + 255) / 256 * 256);
  EXPECT_EQ(chunked.total(), (allocated<float, float>(c)));
}

// Each policy's plan is still the real allocation (the shared region of the
// redone buffers included), and each saves over the one before it, with and
// without expert parallelism, in fp32 and bf16.
TEST(MemoryPlan, RecomputeSavesActivations) {
  for (Precision p : {Precision::Float32, Precision::BFloat16}) {
    for (int ep : {1, 2}) {
      SCOPED_TRACE(std::string(to_string(p)) + " ep_size " + std::to_string(ep));
      Config c = small_config();
      c.train.precision = p;
      c.parallel.ep_size = ep;
      size_t act[3] = {};
      for (Recompute r : {Recompute::None, Recompute::Selective, Recompute::Full}) {
        c.train.recompute = r;
        const MemoryPlan plan = plan_memory(c, BackendKind::Cpu, ep, ep - 1);
        EXPECT_EQ(plan.recompute, to_string(r));
        EXPECT_EQ(plan_to_json(plan)["recompute"], to_string(r));
        if (ep == 1) {
          const size_t real = p == Precision::BFloat16 ? allocated<float, bf16>(c)
                                                       : allocated<float, float>(c);
          EXPECT_EQ(plan.total(), real);
        }
        act[int(r)] = plan.activations;
      }
      EXPECT_GT(act[0], act[1]);
      EXPECT_GT(act[1], act[2]);
    }
  }
  // Deeper models save more: the redone buffers are one layer's, not per layer.
  Config c = small_config();
  c.model.layers = 6;
  c.train.recompute = Recompute::Full;
  const MemoryPlan deep = plan_memory(c, BackendKind::Cpu, 1);
  c.train.recompute = Recompute::None;
  const MemoryPlan deep_none = plan_memory(c, BackendKind::Cpu, 1);
  EXPECT_LT(double(deep.activations), 0.5 * double(deep_none.activations));
}

// moe-eval's plan: the model of its batch and the bias, what it allocates
// (no optimizer), byte for byte, in each precision.
TEST(MemoryPlan, EvalPlanIsWhatEvaluationAllocates) {
  Config c = small_config();
  for (Precision p : {Precision::Float32, Precision::Float64}) {
    c.train.precision = p;
    for (int batch : {1, 5}) {
      auto real = [&]<typename T>() {
        auto be = make_cpu_backend<T, T>(1);
        Transformer<T, T> model(c, *be, batch);
        Balancer balancer(c.balance, model.moe_layers(), c.moe.n_routed, be.get());
        return be->current_bytes();
      };
      const MemoryPlan plan = plan_eval_memory(c, BackendKind::Cpu, batch);
      EXPECT_EQ(plan.total(), p == Precision::Float64 ? real.operator()<double>()
                                                      : real.operator()<float>())
          << to_string(p) << " batch " << batch;
      EXPECT_EQ(plan.optimizer, 0u);
      EXPECT_EQ(plan.micro_batch, batch);
    }
  }
  // It is the training plan less the moments, at the same batch.
  c.train.precision = Precision::Float32;
  const MemoryPlan train = plan_memory(c, BackendKind::Cpu, 1);
  const MemoryPlan eval = plan_eval_memory(c, BackendKind::Cpu, c.train.micro_batch);
  EXPECT_EQ(eval.total(), train.total() - train.optimizer);
}

TEST(MemoryPlan, ExpertParallelismShardsTheExperts) {
  Config c = small_config();
  c.parallel.ep_size = 2;
  const MemoryPlan one = plan_memory(small_config(), BackendKind::Cpu, 1);
  const MemoryPlan half = plan_memory(c, BackendKind::Cpu, 2, 1);
  // Routed experts: 2 MoE layers x 8 experts x (w13 [32, 32] + w2 [32, 16]).
  const size_t experts = 2 * 8 * (2 * 16 * 32 + 32 * 16);
  EXPECT_EQ(one.local_params - half.local_params, experts / 2);
  EXPECT_EQ(half.total_params, one.total_params);
  EXPECT_THROW(plan_memory(c, BackendKind::Cpu, 3), ConfigError);  // 2 does not divide 3
}

// ZeRO-1: each rank's AdamW moments are its shards, 1/W of the dense
// parameters and 1/(W/ep_size) of its experts (shards of 64 elements, the
// last one shorter); nothing else changes.
TEST(MemoryPlan, ZeroOneShardsTheOptimizerState) {
  for (int ep : {1, 2}) {
    Config c = small_config();
    c.parallel.ep_size = ep;
    c.train.global_batch = 12;
    c.train.micro_batch = 1;
    for (int W : {2, 4}) {
      if (W % ep != 0) continue;
      c.train.zero = 0;
      const MemoryPlan full = plan_memory(c, BackendKind::Cpu, W);
      c.train.zero = 1;
      size_t summed = 0;
      for (int r = 0; r < W; ++r) {
        const MemoryPlan z = plan_memory(c, BackendKind::Cpu, W, r);
        EXPECT_EQ(z.zero, 1);
        EXPECT_EQ(z.total() - z.optimizer, full.total() - full.optimizer);
        // Routed experts: 2 MoE layers x 8 x (w13 [32, 32] + w2 [32, 16]),
        // n_routed / ep of them on a rank, split over its W / ep replicas.
        const size_t experts = 2 * 8 * (2 * 16 * 32 + 32 * 16);
        const size_t dense = size_t(full.total_params) - experts;
        const size_t share = experts / ep / (W / ep) + dense / W;
        EXPECT_LE(z.optimizer, 2 * sizeof(float) * (share + 2 * 64))
            << "W " << W << " ep " << ep << " rank " << r;
        EXPECT_GE(z.optimizer, 2 * sizeof(float) * (share - 2 * 64))
            << "W " << W << " ep " << ep << " rank " << r;
        summed += z.optimizer;
      }
      // Every expert is held by one EP rank of each of the W/ep groups:
      // summed over the world, the shards are the whole model's state once.
      const size_t whole = 2 * size_t(full.total_params) * sizeof(float);
      EXPECT_EQ(summed, whole) << "W " << W << " ep " << ep;
      EXPECT_EQ(full.optimizer, 2 * full.local_params * sizeof(float));
    }
  }
}

TEST(MemoryPlan, OneBillionPresetAtMicroBatch16FitsUnder40GiB) {
  Config c = load_config(std::string(MOE_SOURCE_DIR) + "/configs/bench/1b.yaml",
                         {"train.micro_batch=16"}, 1);
  const MemoryPlan p16 = plan_memory(c, BackendKind::Cuda, 1);
  std::fputs(format_plan(p16).c_str(), stdout);
  const double gib = double(size_t(1) << 30);
  EXPECT_LT(double(p16.total()) / gib, 40.0);
  // fp32 masters, gradients, two moments; bf16 copies of the matmul weights.
  EXPECT_EQ(p16.weights, size_t(p16.total_params) * 4);
  // Copies: every parameter but the embedding table, the routers and the
  // norm weights, 2 bytes each.
  const int64_t D = c.model.hidden, not_copied = int64_t(c.model.vocab_size) * D +
                                                 int64_t(c.model.moe_layers()) * c.moe.n_routed * D +
                                                 int64_t(2 * c.model.layers + 1) * D;
  EXPECT_EQ(p16.weight_copies, size_t(p16.total_params - not_copied) * 2);
  // Activations are per token: twice the micro-batch, twice the bytes (to 0.1%).
  c.train.micro_batch = 8;
  const MemoryPlan p8 = plan_memory(c, BackendKind::Cuda, 1);
  EXPECT_NEAR(double(p16.activations) / double(p8.activations), 2.0, 2e-3);
  EXPECT_EQ(p16.weights, p8.weights);
}

}  // namespace
}  // namespace moe
