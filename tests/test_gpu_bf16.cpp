// The bf16 matmul path of the CUDA backend (train.precision: bfloat16)
// against the fp32 CPU backend, op by op: dense and grouped linear layers
// (norm-wise relative error < 2e-2, experts without tokens included), the
// bf16 weight copies following every write to the fp32 master, and the
// router's matmul staying fp32, and the fp32 <-> bf16 conversions bit for
// bit. Whole-model bf16 training: test_gpu_backend.
// Skips without a device.
#include <gtest/gtest.h>

#ifdef MOE_WITH_CUDA

#include <algorithm>
#include <array>
#include <cmath>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "backend/backend.h"
#include "gpu_test_util.h"
#include "kernels.h"

namespace moe {
namespace {

using test::normal;

constexpr double kBf16Tol = 2e-2;

// ||a - b|| / ||b||
double rel_error(const std::vector<float>& a, const std::vector<float>& b) {
  double d = 0, n = 0;
  for (size_t i = 0; i < a.size(); ++i) d += double(a[i] - b[i]) * (a[i] - b[i]), n += double(b[i]) * b[i];
  return std::sqrt(d / std::max(n, 1e-300));
}

// A backend buffer holding `host`.
template <typename T>
T* upload(Backend<float>& be, const std::vector<T>& host) {
  T* p = alloc_array<T>(be, host.size());
  be.to_device(p, host.data(), host.size() * sizeof(T));
  return p;
}
std::vector<float> download(Backend<float>& be, const float* p, size_t n) {
  std::vector<float> h(n);
  be.to_host(h.data(), p, n * sizeof(float));
  return h;
}

// Runs one linear forward + backward on `be`; returns y, dx, dW (dW starts at dW0).
struct LinearResult {
  std::vector<float> y, dx, dW;
};
LinearResult run_linear(Backend<float>& be, const std::vector<float>& x, const std::vector<float>& W,
                        const std::vector<float>& dy, const std::vector<float>& dW0, int N, int I,
                        int O) {
  float *xd = upload(be, x), *Wd = upload(be, W), *dyd = upload(be, dy), *dWd = upload(be, dW0);
  float* yd = alloc_array<float>(be, size_t(N) * O);
  float* dxd = alloc_array<float>(be, size_t(N) * I);
  be.linear_forward(yd, xd, Wd, N, I, O);
  be.linear_backward(dxd, dWd, dyd, xd, Wd, N, I, O, false);
  LinearResult r{download(be, yd, size_t(N) * O), download(be, dxd, size_t(N) * I),
                 download(be, dWd, size_t(O) * I)};
  for (void* p : {(void*)xd, (void*)Wd, (void*)dyd, (void*)dWd, (void*)yd, (void*)dxd}) be.free_bytes(p);
  return r;
}

// fp32 -> bf16 bits, round to nearest even (finite inputs).
uint16_t bf16_bits_rne(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  u += 0x7FFFu + ((u >> 16) & 1u);
  return uint16_t(u >> 16);
}

TEST(GpuBf16, ConversionsRoundToNearestEvenAndAccumulate) {
  SKIP_WITHOUT_DEVICE();
  std::mt19937_64 rng(1);
  std::vector<float> x = normal(4099, rng, 0.0, 10.0);  // not a multiple of 4
  // Exact ties (halfway between two bf16 values, both parities), signs, tiny values.
  const float ties[] = {1.0f + 1.0f / 256, 1.0f + 3.0f / 256, -(1.0f + 1.0f / 256), 1e-30f, -0.0f};
  std::copy(std::begin(ties), std::end(ties), x.begin());
  test::DeviceBuffer<float> xd(x);
  test::DeviceBuffer<__nv_bfloat16> bd(x.size());
  for (size_t offset : {size_t{0}, size_t{1}}) {  // aligned (vector path) and not
    const size_t n = x.size() - offset;
    kernels::float_to_bf16(bd.get() + offset, xd.get() + offset, n, nullptr);
    const auto b = bd.download();
    for (size_t i = offset; i < x.size(); ++i) {
      uint16_t got;
      std::memcpy(&got, &b[i], 2);
      ASSERT_EQ(got, bf16_bits_rne(x[i])) << "x=" << x[i] << " offset " << offset;
    }
  }
  // Back to fp32: exact (overwrite), then added onto y (accumulate).
  test::DeviceBuffer<float> yd(std::vector<float>(x.size(), 0.5f));
  kernels::bf16_to_float(yd.get(), bd.get(), x.size(), true, nullptr);
  const auto y = yd.download();
  kernels::bf16_to_float(yd.get(), bd.get(), x.size(), false, nullptr);
  const auto z = yd.download();
  for (size_t i = 0; i < x.size(); ++i) {
    const uint32_t u = uint32_t(bf16_bits_rne(x[i])) << 16;
    float want;
    std::memcpy(&want, &u, 4);
    ASSERT_EQ(z[i], want);
    ASSERT_EQ(y[i], 0.5f + want);
  }
}

TEST(GpuBf16, LinearMatchesCpu) {
  SKIP_WITHOUT_DEVICE();
  auto cpu = test::cpu();
  auto gpu = make_cuda_backend(0, Precision::BFloat16);
  EXPECT_EQ(gpu->name(), "cuda-bf16");
  std::mt19937_64 rng(3);
  // Aligned and odd shapes (odd ones leave cuBLASLt unaligned rows).
  for (auto [N, I, O] : {std::array{64, 128, 96}, std::array{37, 72, 40}, std::array{5, 3, 7}}) {
    const auto x = normal(size_t(N) * I, rng), W = normal(size_t(O) * I, rng, 0, 0.05),
               dy = normal(size_t(N) * O, rng), dW0 = normal(size_t(O) * I, rng);
    const auto ref = run_linear(*cpu, x, W, dy, dW0, N, I, O);
    const auto got = run_linear(*gpu, x, W, dy, dW0, N, I, O);
    EXPECT_LT(rel_error(got.y, ref.y), kBf16Tol) << N << "x" << I << "x" << O;
    EXPECT_LT(rel_error(got.dx, ref.dx), kBf16Tol);
    EXPECT_LT(rel_error(got.dW, ref.dW), kBf16Tol);  // includes the += onto dW0
    EXPECT_GT(rel_error(got.y, ref.y), 0.0);         // it really ran in bf16
  }
}

TEST(GpuBf16, GroupedLinearMatchesCpuWithEmptyExperts) {
  SKIP_WITHOUT_DEVICE();
  auto cpu = test::cpu();
  auto gpu = make_cuda_backend(0, Precision::BFloat16);
  std::mt19937_64 rng(5);
  struct Case {
    int I, O;
    std::vector<int64_t> offsets;  // G + 1 entries
  };
  // I, O multiples of 8 (the one grouped GEMM), then I = 36, O = 20: experts
  // at odd rows are not 16-byte aligned in bf16 and take the per-expert path
  // (expert 2 has 8 rows from row 3, expert 3 has 16 from row 11).
  const Case cases[] = {{64, 48, {0, 7, 7, 40, 41, 41, 90}}, {36, 20, {0, 3, 3, 11, 27, 27, 44}}};
  for (const Case& c : cases) {
    SCOPED_TRACE("I=" + std::to_string(c.I) + " O=" + std::to_string(c.O));
    const int G = int(c.offsets.size()) - 1, I = c.I, O = c.O;
    const std::vector<int64_t>& offsets = c.offsets;  // experts 1 and 4 get no rows
    const int R = int(offsets.back());
    const auto x = normal(size_t(R) * I, rng), W = normal(size_t(G) * O * I, rng, 0, 0.05),
               dy = normal(size_t(R) * O, rng), dW0 = normal(size_t(G) * O * I, rng);
    auto run = [&](Backend<float>& be) {
      float *xd = upload(be, x), *Wd = upload(be, W), *dyd = upload(be, dy),
            *dWd = upload(be, dW0);
      float* yd = alloc_array<float>(be, size_t(R) * O);
      float* dxd = alloc_array<float>(be, size_t(R) * I);
      be.grouped_linear_forward(yd, xd, Wd, offsets.data(), G, I, O);
      be.grouped_linear_backward(dxd, dWd, dyd, xd, Wd, offsets.data(), G, I, O);
      LinearResult r{download(be, yd, size_t(R) * O), download(be, dxd, size_t(R) * I),
                     download(be, dWd, size_t(G) * O * I)};
      for (void* p : {(void*)xd, (void*)Wd, (void*)dyd, (void*)dWd, (void*)yd, (void*)dxd})
        be.free_bytes(p);
      return r;
    };
    const auto ref = run(*cpu), got = run(*gpu);
    EXPECT_LT(rel_error(got.y, ref.y), kBf16Tol);
    EXPECT_LT(rel_error(got.dx, ref.dx), kBf16Tol);
    EXPECT_LT(rel_error(got.dW, ref.dW), kBf16Tol);
    // Experts without tokens: their weight gradient is exactly what it was.
    for (int g : {1, 4})
      for (size_t i = size_t(g) * O * I; i < size_t(g + 1) * O * I; ++i)
        ASSERT_EQ(got.dW[i], dW0[i]) << "expert " << g;
  }
}

TEST(GpuBf16, WeightCopiesFollowWritesToTheMaster) {
  SKIP_WITHOUT_DEVICE();
  auto gpu = make_cuda_backend(0, Precision::BFloat16);
  auto cpu = test::cpu();
  std::mt19937_64 rng(7);
  const int N = 16, I = 32, O = 24;
  const auto x = normal(size_t(N) * I, rng), W1 = normal(size_t(O) * I, rng),
             W2 = normal(size_t(O) * I, rng), g = normal(size_t(O) * I, rng);
  auto y_of = [&](Backend<float>& be, float* Wd, float* xd) {
    float* yd = alloc_array<float>(be, size_t(N) * O);
    be.linear_forward(yd, xd, Wd, N, I, O);
    auto y = download(be, yd, size_t(N) * O);
    be.free_bytes(yd);
    return y;
  };
  float *xg = upload(*gpu, x), *Wg = upload(*gpu, W1);
  float *xc = upload(*cpu, x), *Wc = upload(*cpu, W1);
  EXPECT_LT(rel_error(y_of(*gpu, Wg, xg), y_of(*cpu, Wc, xc)), kBf16Tol);
  // A new master through to_device (init, checkpoint load).
  gpu->to_device(Wg, W2.data(), W2.size() * sizeof(float));
  cpu->to_device(Wc, W2.data(), W2.size() * sizeof(float));
  EXPECT_LT(rel_error(y_of(*gpu, Wg, xg), y_of(*cpu, Wc, xc)), kBf16Tol);
  // An optimizer step.
  float *gg = upload(*gpu, g), *gc = upload(*cpu, g);
  float *mg = alloc_array<float>(*gpu, g.size()), *vg = alloc_array<float>(*gpu, g.size());
  float *mc = alloc_array<float>(*cpu, g.size()), *vc = alloc_array<float>(*cpu, g.size());
  AdamWParams p;
  p.lr = 0.5;  // a big step, so a stale copy would be far off
  gpu->adamw_step(Wg, gg, mg, vg, g.size(), p);
  cpu->adamw_step(Wc, gc, mc, vc, g.size(), p);
  EXPECT_LT(rel_error(y_of(*gpu, Wg, xg), y_of(*cpu, Wc, xc)), kBf16Tol);
  // In-place arithmetic on the master.
  gpu->scale_inplace(Wg, -2.0, g.size());
  cpu->scale_inplace(Wc, -2.0, g.size());
  EXPECT_LT(rel_error(y_of(*gpu, Wg, xg), y_of(*cpu, Wc, xc)), kBf16Tol);
  // Freed and reallocated (possibly at the same address) with new values.
  gpu->free_bytes(Wg);
  Wg = upload(*gpu, W1);
  cpu->to_device(Wc, W1.data(), W1.size() * sizeof(float));
  EXPECT_LT(rel_error(y_of(*gpu, Wg, xg), y_of(*cpu, Wc, xc)), kBf16Tol);
}

TEST(GpuBf16, RouterLinearStaysFp32) {
  SKIP_WITHOUT_DEVICE();
  auto gpu = make_cuda_backend(0, Precision::BFloat16);
  auto cpu = test::cpu();
  std::mt19937_64 rng(9);
  const int N = 33, I = 64, E = 16;
  const auto x = normal(size_t(N) * I, rng), W = normal(size_t(E) * I, rng);
  auto logits = [&](Backend<float>& be) {
    float *xd = upload(be, x), *Wd = upload(be, W), *yd = alloc_array<float>(be, size_t(N) * E);
    be.linear_forward_fp32(yd, xd, Wd, N, I, E);
    return download(be, yd, size_t(N) * E);
  };
  EXPECT_LT(rel_error(logits(*gpu), logits(*cpu)), 1e-5);
}

}  // namespace
}  // namespace moe

#else

TEST(GpuBf16, Skipped) { GTEST_SKIP() << "built without CUDA"; }

#endif
