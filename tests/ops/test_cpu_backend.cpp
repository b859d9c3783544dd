// The CPU backend as a whole: memory, no stream of its own, fp32 against
// fp64, and bit-identical results for any thread count.
// Helpers and tolerances: support/cpu_test_util.h.
#include <gtest/gtest.h>

#include <cstring>

#include "support/cpu_test_util.h"

namespace moe {
namespace {

using namespace test;

// ---------------------------------------------------------------- memory ----

TEST_F(CpuOps, MemoryZeroedAlignedAndCopies) {
  for (size_t bytes : {size_t(0), size_t(1), size_t(100), size_t(4096)}) {
    auto* p = static_cast<unsigned char*>(be->alloc_bytes(bytes));
    ASSERT_NE(p, nullptr);
    EXPECT_EQ(reinterpret_cast<uintptr_t>(p) % 64, 0u);
    for (size_t i = 0; i < bytes; i++) ASSERT_EQ(p[i], 0) << i;
    be->free_bytes(p);
  }
  double* d = alloc_array<double>(*be, 5);
  double src[5] = {1, 2, 3, 4, 5}, dst[5] = {};
  be->to_device(d, src, sizeof(src));
  double* d2 = alloc_array<double>(*be, 5);
  be->copy(d2, d, sizeof(src));
  be->to_host(dst, d2, sizeof(dst));
  for (int i = 0; i < 5; i++) EXPECT_EQ(dst[i], src[i]);
  be->zero(d2, sizeof(src));
  for (int i = 0; i < 5; i++) EXPECT_EQ(d2[i], 0.0);
  be->free_bytes(d);
  be->free_bytes(d2);
}

// Synchronous: nothing for a communicator to order after (NcclComm takes the
// CUDA backend's stream from here).
TEST(CpuBackend, HasNoNativeStream) {
  EXPECT_EQ(make_cpu_backend<float>(1)->native_stream(), nullptr);
  EXPECT_EQ(make_cpu_backend<double>(1)->native_stream(), nullptr);
}

// ------------------------------------------- precision and determinism ----

// fp32 (inputs rounded to float, sgemm) against fp64 on the same values,
// normwise. All roundings aligned would give at most 1.7e-5 (attention out),
// 3.5e-6 (lse) and 7.7e-6 (linear, K = 32); a normwise error over 512 and 768
// outputs sits near the typical ~sqrt(K) u instead: 8.6e-8 (out) and 3.7e-8
// (lse) emulated in fp32 for sequential sums, ~1e-7 (linear). 1e-5 is ~100x
// that for any BLAS kernel or thread count; a bf16-sized error (4e-3) fails.
TEST(CpuOpsPrecision, FloatMatchesDouble) {
  auto bd = make_cpu_backend<double>(2);
  auto bf = make_cpu_backend<float>(2);
  const int B = 2, S = 16, H = 2, hd = 8, W = 3 * H * hd, N = B * S, OW = H * hd;
  Vec qkv = randn(N * W, 29);
  std::vector<float> qkvf(qkv.begin(), qkv.end());
  Vec out(N * OW), lse(B * H * S);
  std::vector<float> outf(N * OW), lsef(B * H * S);
  bd->rope_forward(qkv.data(), B, S, H, hd, 10000.0);
  bf->rope_forward(qkvf.data(), B, S, H, hd, 10000.0);
  bd->attention_forward(out.data(), lse.data(), qkv.data(), B, S, H, hd);
  bf->attention_forward(outf.data(), lsef.data(), qkvf.data(), B, S, H, hd);
  EXPECT_LT(rel_err(out, Vec(outf.begin(), outf.end())), 1e-5);
  EXPECT_LT(rel_err(lse, Vec(lsef.begin(), lsef.end())), 1e-5);

  const int I = 32, O = 24;
  Vec x = randn(N * I, 30), Wt = randn(O * I, 31), y(N * O);
  std::vector<float> xf(x.begin(), x.end()), Wf(Wt.begin(), Wt.end()), yf(N * O);
  bd->linear_forward(y.data(), x.data(), Wt.data(), N, I, O);
  bf->linear_forward(yf.data(), xf.data(), Wf.data(), N, I, O);
  EXPECT_LT(rel_err(y, Vec(yf.begin(), yf.end())), 1e-5);
}

// Thread counts 1 and 2 must give bit-identical results, exact by
// construction: attention runs one (batch, head) tile per OpenMP iteration
// with BLAS set to one thread inside (attention.cpp), so nt only changes
// which thread computes a tile, never how; rmsnorm works by rows and by
// fixed column blocks, sum_squares by fixed chunks of 4096. (Multi-threaded
// GEMMs, e.g. linear_forward, are not compared across thread counts:
// OpenBLAS's Haswell/Zen sgemm rounds differently with 1 and 2 threads.)
template <typename T>
void check_thread_independence() {
  auto b1 = make_cpu_backend<T>(1);
  auto b2 = make_cpu_backend<T>(2);
  auto cast = [](const Vec& v) { return std::vector<T>(v.begin(), v.end()); };
  for (const int S : {33, 137}) {  // one and several row blocks of the attention kernel
    const int B = 2, H = 3, hd = 8, W = 3 * H * hd, N = B * S, OW = H * hd;
    const std::vector<T> qkv = cast(randn(N * W, 32)), dout = cast(randn(N * OW, 33));
    std::vector<T> out1(N * OW), out2(N * OW), lse1(B * H * S), lse2(B * H * S);
    std::vector<T> dq1(N * W), dq2(N * W);
    b1->attention_forward(out1.data(), lse1.data(), qkv.data(), B, S, H, hd);
    b2->attention_forward(out2.data(), lse2.data(), qkv.data(), B, S, H, hd);
    b1->attention_backward(dq1.data(), dout.data(), out1.data(), lse1.data(), qkv.data(), B, S,
                           H, hd);
    b2->attention_backward(dq2.data(), dout.data(), out2.data(), lse2.data(), qkv.data(), B, S,
                           H, hd);
    EXPECT_EQ(0, std::memcmp(out1.data(), out2.data(), out1.size() * sizeof(T))) << "S=" << S;
    EXPECT_EQ(0, std::memcmp(lse1.data(), lse2.data(), lse1.size() * sizeof(T))) << "S=" << S;
    EXPECT_EQ(0, std::memcmp(dq1.data(), dq2.data(), dq1.size() * sizeof(T))) << "S=" << S;
  }

  const int R = 97, D = 200;  // several column blocks for dw
  const std::vector<T> x = cast(randn(R * D, 34)), w = cast(randn(D, 35)),
                       dy = cast(randn(R * D, 36));
  std::vector<T> y(R * D), rstd(R), dx1(R * D), dx2(R * D), dw1(D), dw2(D);
  b1->rmsnorm_forward(y.data(), rstd.data(), x.data(), w.data(), R, D, 1e-6);
  b1->rmsnorm_backward(dx1.data(), nullptr, dw1.data(), dy.data(), x.data(), w.data(), rstd.data(), R, D);
  b2->rmsnorm_backward(dx2.data(), nullptr, dw2.data(), dy.data(), x.data(), w.data(), rstd.data(), R, D);
  EXPECT_EQ(0, std::memcmp(dx1.data(), dx2.data(), dx1.size() * sizeof(T)));
  EXPECT_EQ(0, std::memcmp(dw1.data(), dw2.data(), dw1.size() * sizeof(T)));

  const std::vector<T> big = cast(randn(50000, 37));
  EXPECT_EQ(b1->sum_squares(big.data(), big.size()), b2->sum_squares(big.data(), big.size()));
}

TEST(CpuOpsDeterminism, ThreadCountIndependentDouble) { check_thread_independence<double>(); }
TEST(CpuOpsDeterminism, ThreadCountIndependentFloat) { check_thread_independence<float>(); }

}  // namespace
}  // namespace moe
