// The emulated device against the CUDA programming guide's rules, by hand:
// what correct kernels compute under every schedule, and that each broken
// kernel, launch, copy or stream order is reported instead of run.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#include "emu_test_util.h"
#include "emu/device.h"
#include "emu_test_kernels.h"
#include "rmsnorm.h"

namespace {

using emu_test::device;
using emu_test::host;

// Each test starts from a fresh device and the default schedule.
class Emu : public ::testing::Test {
 protected:
  void SetUp() override {
    emu::reset_device();
    emu::schedule() = emu::Schedule{};
    emu::stream_mode() = emu::StreamMode::InOrder;
  }
  void TearDown() override { emu::reset_device(); }

};

std::vector<emu::Schedule> all_schedules() {
  std::vector<emu::Schedule> v;
  for (emu::Order o : {emu::Order::Forward, emu::Order::Reverse, emu::Order::Random})
    for (bool greedy : {false, true}) v.push_back(emu::Schedule{o, greedy, 7});
  return v;
}

TEST_F(Emu, BlockSumsUnderEverySchedule) {
  const int blocks = 3, n = 128;
  std::vector<float> in(blocks * n);
  for (size_t i = 0; i < in.size(); ++i) in[i] = float(i % 7);  // small integers: exact sums
  for (const emu::Schedule& s : all_schedules()) {
    emu::schedule() = s;
    float* d_in = device(in);
    float* d_out = device(std::vector<float>(blocks, -1.0f));
    emu_test::block_sums(d_out, d_in, blocks, n, 0);
    const std::vector<float> out = host(d_out, blocks);
    for (int b = 0; b < blocks; ++b) {
      float want = 0;
      for (int i = 0; i < n; ++i) want += in[b * n + i];
      EXPECT_EQ(out[b], want) << "block " << b << ", order " << int(s.order) << " greedy " << s.warp_greedy;
    }
    cudaFree(d_in);
    cudaFree(d_out);
  }
}

// Without the barrier thread 0 may read a partial that its warp has not
// written yet: the first thread runs to its end before the others start
// under the forward schedule, and reads the poison (NaN) there.
TEST_F(Emu, AMissingSyncthreadsChangesTheResult) {
  const int n = 64;
  std::vector<float> in(n, 1.0f);
  int wrong = 0;
  for (const emu::Schedule& s : all_schedules()) {
    emu::reset_device();
    emu::schedule() = s;
    float* d_in = device(in);
    float* d_out = device(std::vector<float>(1, 0.0f));
    emu_test::block_sums_racy(d_out, d_in, 1, n, 0);
    const float got = host(d_out, 1)[0];
    wrong += !(got == float(n));
  }
  EXPECT_GT(wrong, 0) << "no schedule exposed the race";
}

TEST_F(Emu, DivergentBarrierIsAnErrorNotAHang) {
  float* d = device(std::vector<float>(32, 0.0f));
  emu_test::divergent_barrier(d, 0);
  EXPECT_EQ(cudaDeviceSynchronize(), cudaErrorLaunchFailure);
  EXPECT_NE(emu::fault_message().find("__syncthreads"), std::string::npos) << emu::fault_message();
  EXPECT_NE(emu::fault_message().find("divergent_barrier_kernel"), std::string::npos);
  // Sticky, as a faulted context is.
  EXPECT_EQ(cudaMemcpy(d, d, 4, cudaMemcpyDeviceToDevice), cudaErrorLaunchFailure);
}

TEST_F(Emu, WarpCollectiveWithMissingLanesIsAnError) {
  float* d = device(std::vector<float>(32, 0.0f));
  emu_test::shuffle_missing_lanes(d, 0);
  EXPECT_EQ(cudaDeviceSynchronize(), cudaErrorLaunchFailure);
  EXPECT_NE(emu::fault_message().find("__shfl_xor_sync"), std::string::npos) << emu::fault_message();
  EXPECT_NE(emu::fault_message().find("exited"), std::string::npos) << emu::fault_message();
}

// The programming guide's definitions, lane by lane (width 16 segments).
TEST_F(Emu, ShufflesAndMatchFollowTheirDefinitions) {
  for (const emu::Schedule& s : all_schedules()) {
    emu::schedule() = s;
    unsigned* d = device(std::vector<unsigned>(128, 0));
    emu_test::warp_ops(d, 0);
    const std::vector<unsigned> out = host(d, 128);
    for (unsigned L = 0; L < 32; ++L) {
      const unsigned seg = L / 16 * 16;
      EXPECT_EQ(out[L * 4 + 0], L >= seg + 3 ? L - 3 : L) << "shfl_up lane " << L;
      EXPECT_EQ(out[L * 4 + 1], L + 3 < seg + 16 ? L + 3 : L) << "shfl_down lane " << L;
      EXPECT_EQ(out[L * 4 + 2], seg + 5) << "shfl idx 21 % 16 lane " << L;
      EXPECT_EQ(out[L * 4 + 3], 0xFu << (L / 4 * 4)) << "match_any lane " << L;
    }
    cudaFree(d);
  }
}

TEST_F(Emu, WarpRulesOfTheGuide) {
  for (const emu::Schedule& s : all_schedules()) {
    emu::schedule() = s;
    unsigned* d = device(std::vector<unsigned>(96, 0));
    emu_test::warp_rules(d, 0);
    ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess) << emu::fault_message();
    const std::vector<unsigned> out = host(d, 96);
    for (unsigned L = 0; L < 32; ++L) {
      EXPECT_EQ(out[L * 3 + 0], L < 16 ? L : L - 16) << "xor 16 in width 16, lane " << L;
      EXPECT_EQ(out[L * 3 + 1], L ^ 1u) << "lane " << L;
    }
    EXPECT_EQ(out[2], 0u + 8u);
    EXPECT_EQ(out[15 * 3 + 2], 15u + 0xffffffffu) << "lane 23 is outside the mask: all ones";
    cudaFree(d);
  }
}

TEST_F(Emu, StaticSharedIsTheBlocksInEveryLaunch) {
  unsigned* d = device(std::vector<unsigned>(64, 0));
  for (unsigned launch = 0; launch < 3; ++launch) {
    emu_test::static_shared(d, launch, 0);
    const std::vector<unsigned> out = host(d, 64);
    for (unsigned t = 0; t < 64; ++t) ASSERT_EQ(out[t], t + launch) << "launch " << launch;
  }
}

TEST_F(Emu, SharedMemoryStartsPoisoned) {
  float* d = device(std::vector<float>(64, 0.0f));
  emu_test::read_unwritten_shared(d, 0);
  for (float v : host(d, 64)) EXPECT_TRUE(std::isnan(v));
}

TEST_F(Emu, DynamicSharedMemoryOverrunIsAFault) {
  emu_test::overrun_dynamic_shared(256, 0);
  EXPECT_EQ(cudaDeviceSynchronize(), cudaErrorLaunchFailure);
  EXPECT_NE(emu::fault_message().find("past the end"), std::string::npos) << emu::fault_message();
}

TEST_F(Emu, LaunchLimitsAreChecked) {
  std::vector<float> x(100, 2.0f);
  float* dx = device(x);
  float* dy = device(std::vector<float>(100, 0.0f));
  emu_test::scale(dy, dx, 3.0f, 100, 1025, 0, 0);  // > 1024 threads per block
  EXPECT_EQ(cudaGetLastError(), cudaErrorInvalidConfiguration);
  EXPECT_EQ(cudaGetLastError(), cudaSuccess);  // not sticky
  emu_test::scale(dy, dx, 3.0f, 100, 64, 64 * 1024, 0);  // > 48 KiB dynamic without opting in
  EXPECT_EQ(cudaGetLastError(), cudaErrorInvalidValue);
  EXPECT_EQ(cudaFuncSetAttribute(emu_test::scale_kernel_address(),
                                 cudaFuncAttributeMaxDynamicSharedMemorySize, 300 * 1024),
            cudaErrorInvalidValue);  // above every architecture's opt-in limit
  cudaGetLastError();
  ASSERT_EQ(cudaFuncSetAttribute(emu_test::scale_kernel_address(),
                                 cudaFuncAttributeMaxDynamicSharedMemorySize, 64 * 1024),
            cudaSuccess);
  emu_test::scale(dy, dx, 3.0f, 100, 64, 64 * 1024, 0);
  EXPECT_EQ(cudaGetLastError(), cudaSuccess);
  for (float v : host(dy, 100)) EXPECT_EQ(v, 6.0f);
}

TEST_F(Emu, WritePastAnAllocationIsAFault) {
  float* dx = device(std::vector<float>(100, 1.0f));
  float* dy = device(std::vector<float>(100, 0.0f));
#if defined(__SANITIZE_ADDRESS__)
  // Under AddressSanitizer the red zones are poisoned: the store itself
  // faults, naming the kernel's source line.
  EXPECT_DEATH(
      {
        emu_test::add_one_past_end(dy, dx, 100, 0);
        cudaDeviceSynchronize();
      },
      "use-after-poison");
#else
  // Otherwise the red zone's pattern is checked after every kernel.
  emu_test::add_one_past_end(dy, dx, 100, 0);
  EXPECT_EQ(cudaDeviceSynchronize(), cudaErrorIllegalAddress);
  EXPECT_NE(emu::fault_message().find("past the end of the 400-byte allocation"), std::string::npos)
      << emu::fault_message();
#endif
}

TEST_F(Emu, CopiesAreCheckedAgainstTheAllocationTable) {
  float* d = device(std::vector<float>(8, 0.0f));
  std::vector<float> h(8, 1.0f);
  EXPECT_EQ(cudaMemcpy(h.data(), h.data(), 32, cudaMemcpyHostToDevice), cudaErrorInvalidValue);
  EXPECT_EQ(cudaMemcpy(d, h.data(), 36, cudaMemcpyHostToDevice), cudaErrorInvalidValue);  // 4 past the end
  EXPECT_EQ(cudaMemcpy(d, h.data(), 32, cudaMemcpyDeviceToHost), cudaErrorInvalidValue);  // kinds swapped
  EXPECT_EQ(cudaMemcpy(d, h.data(), 32, cudaMemcpyHostToDevice), cudaSuccess);
  EXPECT_EQ(cudaFree(d), cudaSuccess);
  EXPECT_EQ(cudaFree(d), cudaErrorInvalidValue);  // twice
  EXPECT_EQ(cudaMemcpy(h.data(), d, 32, cudaMemcpyDeviceToHost), cudaErrorInvalidValue);  // freed
}

TEST_F(Emu, FreshDeviceMemoryIsPoisoned) {
  float* d = nullptr;
  ASSERT_EQ(cudaMalloc(&d, 16 * sizeof(float)), cudaSuccess);
  EXPECT_EQ(reinterpret_cast<uintptr_t>(d) % 256, 0u);
  for (float v : host(d, 16)) EXPECT_TRUE(std::isnan(v));
}

// Two non-blocking streams: a reader that does not wait for the writer's
// event reads stale data when the newest work runs first; with the event it
// reads the written values in either mode.
TEST_F(Emu, AMissingEventWaitShowsUpInAdversarialMode) {
  for (bool wait : {false, true}) {
    for (emu::StreamMode mode : {emu::StreamMode::InOrder, emu::StreamMode::Adversarial}) {
      emu::reset_device();
      emu::stream_mode() = mode;
      cudaStream_t a, b;
      cudaEvent_t written;
      ASSERT_EQ(cudaStreamCreateWithFlags(&a, cudaStreamNonBlocking), cudaSuccess);
      ASSERT_EQ(cudaStreamCreateWithFlags(&b, cudaStreamNonBlocking), cudaSuccess);
      ASSERT_EQ(cudaEventCreateWithFlags(&written, cudaEventDisableTiming), cudaSuccess);
      float* x = device(std::vector<float>(64, 1.0f));
      float* y = device(std::vector<float>(64, 0.0f));
      float* z = device(std::vector<float>(64, 0.0f));
      emu_test::scale(y, x, 2.0f, 64, 64, 0, a);  // y = 2
      ASSERT_EQ(cudaEventRecord(written, a), cudaSuccess);
      if (wait) {
        ASSERT_EQ(cudaStreamWaitEvent(b, written, 0), cudaSuccess);
      }
      emu_test::scale(z, y, 5.0f, 64, 64, 0, b);  // z = 10 once y is written
      ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
      const float got = host(z, 64)[0];
      const bool stale = mode == emu::StreamMode::Adversarial && !wait;
      EXPECT_EQ(got, stale ? 0.0f : 10.0f) << "wait " << wait << " adversarial " << int(mode);
    }
  }
}

// The legacy default stream waits for blocking streams' earlier work (and
// they for its), so no event is needed there even in adversarial mode; a
// non-blocking stream has no such barrier.
TEST_F(Emu, LegacyDefaultStreamOrdersBlockingStreamsOnly) {
  for (unsigned flags : {unsigned(cudaStreamDefault), unsigned(cudaStreamNonBlocking)}) {
    emu::reset_device();
    emu::stream_mode() = emu::StreamMode::Adversarial;
    cudaStream_t s;
    ASSERT_EQ(cudaStreamCreateWithFlags(&s, flags), cudaSuccess);
    float* x = device(std::vector<float>(64, 1.0f));
    float* y = device(std::vector<float>(64, 0.0f));
    float* z = device(std::vector<float>(64, 0.0f));
    emu_test::scale(y, x, 2.0f, 64, 64, 0, s);
    emu_test::scale(z, y, 5.0f, 64, 64, 0, 0);  // legacy stream
    ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
    EXPECT_EQ(host(z, 64)[0], flags == cudaStreamDefault ? 10.0f : 0.0f) << "flags " << flags;
  }
}

// A copy from pageable host memory is staged when it is queued: changing
// the buffer afterwards does not change what lands.
TEST_F(Emu, PageableCopiesAreStagedAtTheCall) {
  cudaStream_t s;
  ASSERT_EQ(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking), cudaSuccess);
  float* d = device(std::vector<float>(4, 0.0f));
  std::vector<float> h(4, 3.0f);
  ASSERT_EQ(cudaMemcpyAsync(d, h.data(), 16, cudaMemcpyHostToDevice, s), cudaSuccess);
  h.assign(4, 9.0f);
  ASSERT_EQ(cudaStreamSynchronize(s), cudaSuccess);
  EXPECT_EQ(host(d, 4)[0], 3.0f);
}

TEST_F(Emu, StreamOrderedAllocation) {
  cudaStream_t s;
  ASSERT_EQ(cudaStreamCreate(&s), cudaSuccess);
  float* d = nullptr;
  ASSERT_EQ(cudaMallocAsync(&d, 64, s), cudaSuccess);
  ASSERT_EQ(cudaMemsetAsync(d, 0, 64, s), cudaSuccess);
  ASSERT_EQ(cudaFreeAsync(d, s), cudaSuccess);
  EXPECT_TRUE(emu::is_device_pointer(d));  // freed when the stream gets there
  ASSERT_EQ(cudaStreamSynchronize(s), cudaSuccess);
  EXPECT_FALSE(emu::is_device_pointer(d));
}

// A kernel of moe-lfb itself, rewritten from kernels/rmsnorm.cu: shared
// memory, warp shuffles and barriers give fp64's RMSNorm to fp32 rounding,
// and the same bits under every schedule (the kernel sums in a fixed order).
TEST_F(Emu, ProjectRmsnormKernelRunsUnchanged) {
  const int N = 3, D = 200;
  std::vector<float> x(N * D), w(D);
  for (int i = 0; i < N * D; ++i) x[i] = std::sin(0.37f * float(i)) * (1.0f + float(i % 5));
  for (int d = 0; d < D; ++d) w[d] = 0.5f + 0.01f * float(d);
  std::vector<float> first;
  for (const emu::Schedule& s : all_schedules()) {
    emu::schedule() = s;
    float* dx = device(x);
    float* dw = device(w);
    float* dy = device(std::vector<float>(N * D, 0.0f));
    float* drstd = device(std::vector<float>(N, 0.0f));
    moe::kernels::rmsnorm_forward<float>(dy, drstd, dx, dw, N, D, 1e-6f, 0);
    const std::vector<float> y = host(dy, N * D);
    for (int n = 0; n < N; ++n) {
      double ms = 0;
      for (int d = 0; d < D; ++d) ms += double(x[n * D + d]) * x[n * D + d];
      const double rstd = 1.0 / std::sqrt(ms / D + 1e-6);
      for (int d = 0; d < D; ++d) {
        const double want = x[n * D + d] * rstd * w[d];
        // fp32: the sum of D squares (<= D u relative, halved by the square
        // root), the division, rsqrt and two products: (D / 2 + 5) u.
        EXPECT_NEAR(y[n * D + d], want, (D / 2 + 5) * 0x1p-24 * std::fabs(want) + 1e-30)
            << "row " << n << " column " << d;
      }
    }
    if (first.empty()) first = y;
    EXPECT_EQ(std::memcmp(first.data(), y.data(), y.size() * sizeof(float)), 0)
        << "order " << int(s.order) << " greedy " << s.warp_greedy;
    for (float* p : {dx, dw, dy, drstd}) cudaFree(p);
  }
}

}  // namespace

namespace {
// cuda_bf16.h's host conversions by hand: 0x3F818000 lies halfway between
// the bf16 values 0x3F81 and 0x3F82; _rn takes the even one, _rz the one
// toward zero; negative values truncate toward zero too; NaN stays NaN.
TEST(EmuBf16, ConversionsRoundAsDocumented) {
  auto bits = [](float f) {
    uint32_t u;
    std::memcpy(&u, &f, sizeof u);
    return u;
  };
  auto from = [](uint32_t u) {
    float f;
    std::memcpy(&f, &u, sizeof f);
    return f;
  };
  EXPECT_EQ(__float2bfloat16_rn(from(0x3F818000u)).__x, 0x3F82);
  EXPECT_EQ(__float2bfloat16_rz(from(0x3F818000u)).__x, 0x3F81);
  EXPECT_EQ(__float2bfloat16_rz(from(0xBF81FFFFu)).__x, 0xBF81);
  EXPECT_EQ(__float2bfloat16_rn(from(0xBF81FFFFu)).__x, 0xBF82);
  EXPECT_TRUE(std::isnan(__bfloat162float(__float2bfloat16_rz(from(0x7FC00001u)))));
  EXPECT_EQ(bits(__bfloat162float(__float2bfloat16_rz(1.0f))), 0x3F800000u);
}
}  // namespace
