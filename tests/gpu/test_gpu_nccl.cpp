// NcclComm on one rank, ordered with the CUDA backend's own stream: its
// collectives must see what the backend's queued kernels wrote, and the
// backend's later work must see what NCCL wrote. The backend's stream is
// non-blocking, so an event on the legacy stream (the old default) ordered
// nothing. And ZeRO-1 on the GPU. Skips without a device.
#include <gtest/gtest.h>

#ifdef MOE_WITH_CUDA

#include <cstdint>
#include <memory>
#include <vector>

#include "backend/backend.h"
#include "comm/comm.h"
#include "comm/nccl_comm.h"
#include "data/token_source.h"
#include "support/gpu_test_util.h"
#include "train/trainer.h"

namespace {

// A peer that never comes fails the collective after this long. The
// emulated device runs these tests' 64 MiB kernels in tens of seconds (more
// under a loaded CI machine), which a hang bound must not count as a hang.
#ifdef MOE_CUDA_EMULATED
constexpr double kTimeoutSeconds = 1200.0;
#else
constexpr double kTimeoutSeconds = 60.0;
#endif

TEST(GpuNccl, CollectivesAreOrderedWithTheBackendStream) {
  SKIP_WITHOUT_DEVICE();
  auto be = moe::make_cuda_backend<float>(0);
  ASSERT_NE(be->native_stream(), nullptr);
  moe::LocalComm boot;
  moe::NcclComm nc(boot, 0, static_cast<cudaStream_t>(be->native_stream()), kTimeoutSeconds);
  EXPECT_EQ(nc.compute_stream(), be->native_stream());
  EXPECT_NE(nc.stream(), nc.compute_stream());
  const std::unique_ptr<moe::Comm> child = nc.split(0, 0);
  EXPECT_EQ(dynamic_cast<moe::NcclComm&>(*child).compute_stream(), be->native_stream());

  // 64 MiB written by `adds` kernels queued on the backend's stream and not
  // waited for by the host: milliseconds of GPU work still running when the
  // host reaches the collective, so an unordered NCCL copy would read a
  // partial sum.
  const size_t n = size_t(1) << 24;
  const int adds = 50;
  auto* send = static_cast<float*>(be->alloc_bytes(n * sizeof(float)));
  auto* recv = static_cast<float*>(be->alloc_bytes(n * sizeof(float)));
  auto* ones = static_cast<float*>(be->alloc_bytes(n * sizeof(float)));
  be->to_device(ones, std::vector<float>(n, 1.0f).data(), n * sizeof(float));
  for (int i = 0; i < adds; ++i) be->add_inplace(send, ones, n);

  // One rank: the all-to-all copies send to recv (NCCL send/recv to itself).
  const int64_t counts[1] = {int64_t(n)};
  nc.alltoallv(send, counts, recv, counts);
  be->scale_inplace(recv, 2.0, n);  // consumed on the backend's stream after NCCL wrote it

  std::vector<float> got(n);
  be->to_host(got.data(), recv, n * sizeof(float));
  // Exact: small integers (50 adds of 1, a copy, times 2) are exact in fp32.
  size_t wrong = 0;
  for (float v : got) wrong += v != 2.0f * adds;
  EXPECT_EQ(wrong, 0u) << "first value " << got[0] << ", want " << 2.0f * adds;

  nc.barrier();
  be->free_bytes(ones);
  be->free_bytes(recv);
  be->free_bytes(send);
}

// The ZeRO-1 collectives in place on device memory (one rank: the part is
// the whole buffer), after kernels queued on the backend's stream.
TEST(GpuNccl, ReduceScatterAndAllgatherInPlace) {
  SKIP_WITHOUT_DEVICE();
  auto be = moe::make_cuda_backend<float>(0);
  moe::LocalComm boot;
  moe::NcclComm nc(boot, 0, static_cast<cudaStream_t>(be->native_stream()), kTimeoutSeconds);
  const size_t n = size_t(1) << 22;
  auto* buf = static_cast<float*>(be->alloc_bytes(n * sizeof(float)));
  auto* ones = static_cast<float*>(be->alloc_bytes(n * sizeof(float)));
  be->to_device(ones, std::vector<float>(n, 1.0f).data(), n * sizeof(float));
  for (int i = 0; i < 20; ++i) be->add_inplace(buf, ones, n);
  const int64_t counts[1] = {int64_t(n)};
  nc.reduce_scatter_sum(buf, counts);
  nc.allgather(buf, counts);
  be->scale_inplace(buf, 0.5, n);
  std::vector<float> got(n);
  be->to_host(got.data(), buf, n * sizeof(float));
  // Exact: 20 adds of 1, a one-rank sum and gather (copies), times 0.5.
  size_t wrong = 0;
  for (float v : got) wrong += v != 10.0f;
  EXPECT_EQ(wrong, 0u) << "first value " << got[0];
  be->free_bytes(ones);
  be->free_bytes(buf);
}

// ZeRO-1 with the in-place (device) collectives on one GPU: the shards are
// whole regions, updated by one AdamW launch each at an unaligned offset
// (the dense region starts after the experts), so the run is the unsharded
// one bit for bit.
TEST(GpuNccl, ZeroOneOnOneGpuIsTheUnshardedRun) {
  SKIP_WITHOUT_DEVICE();
  moe::Config c;
  c.model = {.vocab_size = 64, .hidden = 32, .heads = 2, .layers = 3, .first_dense_layers = 1,
             .dense_intermediate = 48, .seq_len = 16, .rope_theta = 10000, .norm_eps = 1e-6,
             .init_std = 0.05};
  c.moe = {.n_shared = 1, .n_routed = 8, .top_k = 2, .expert_intermediate = 12};
  c.train.global_batch = 4;
  c.train.micro_batch = 2;
  c.train.warmup_steps = 1;
  c.train.lr = 3e-3;
  c.train.backend = moe::BackendKind::Cuda;
  auto run = [&](int zero) {
    moe::Config rc = c;
    rc.train.zero = zero;
    auto be = moe::make_cuda_backend<float>(0);
    moe::LocalComm world;
    moe::NcclComm device(world, 0, static_cast<cudaStream_t>(be->native_stream()), kTimeoutSeconds);
    auto data = moe::make_train_source(rc);
    moe::Trainer<float> t(rc, *be, world, *data);
    t.use_device_comms(&device);
    std::vector<moe::StepStats> out;
    for (int64_t s = 0; s < 4; ++s) out.push_back(t.train_step(s));
    return std::make_pair(out, t.model().params().params_to_host());
  };
  const auto [plain, plain_w] = run(0);
  const auto [zero, zero_w] = run(1);
  for (size_t s = 0; s < plain.size(); ++s) {
    EXPECT_EQ(zero[s].loss, plain[s].loss) << "step " << s;
    EXPECT_EQ(zero[s].grad_norm, plain[s].grad_norm) << "step " << s;
    EXPECT_EQ(zero[s].counts, plain[s].counts) << "step " << s;
    EXPECT_EQ(zero[s].bias, plain[s].bias) << "step " << s;
  }
  EXPECT_EQ(zero_w, plain_w);
}

}  // namespace

#else

TEST(GpuNccl, Skipped) { GTEST_SKIP() << "built without CUDA"; }

#endif
