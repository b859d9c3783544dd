// NcclComm on one rank, ordered with the CUDA backend's own stream: its
// collectives must see what the backend's queued kernels wrote, and the
// backend's later work must see what NCCL wrote. The backend's stream is
// non-blocking, so an event on the legacy stream (the old default) ordered
// nothing. Skips without a device.
#include <gtest/gtest.h>

#ifdef MOE_WITH_CUDA

#include <cstdint>
#include <memory>
#include <vector>

#include "backend/backend.h"
#include "dist/comm.h"
#include "dist/nccl_comm.h"
#include "gpu_test_util.h"

namespace {

TEST(GpuNccl, CollectivesAreOrderedWithTheBackendStream) {
  SKIP_WITHOUT_DEVICE();
  auto be = moe::make_cuda_backend<float>(0);
  ASSERT_NE(be->native_stream(), nullptr);
  moe::LocalComm boot;
  moe::NcclComm nc(boot, 0, static_cast<cudaStream_t>(be->native_stream()), 60.0);
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
  size_t wrong = 0;
  for (float v : got) wrong += v != 2.0f * adds;
  EXPECT_EQ(wrong, 0u) << "first value " << got[0] << ", want " << 2.0f * adds;

  nc.barrier();
  be->free_bytes(ones);
  be->free_bytes(recv);
  be->free_bytes(send);
}

}  // namespace

#else

TEST(GpuNccl, Skipped) { GTEST_SKIP() << "built without CUDA"; }

#endif
