// The emulated device's cuBLAS and cuBLASLt shims against the cuBLAS
// documentation, with products worked out by hand: column-major storage,
// op(A) and op(B), leading dimensions, alpha and beta (beta == 0 never
// reads C, k == 0 gives beta * C), the documented statuses, stream order,
// device faults, and cuBLASLt's heuristic and alignment promises.
#include <gtest/gtest.h>

#include <cublasLt.h>
#include <cublas_v2.h>
#include <cuda_bf16.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "emu_test_util.h"
#include "emu/blas.h"
#include "emu/device.h"

namespace {

using emu_test::device;
using emu_test::host;

const float kNaN = std::numeric_limits<float>::quiet_NaN();

// The worked example most tests use (row-major on paper, column-major in memory):
//   A (2x3) = | 1 2 3 |   B (3x2) = |  7  8 |   A*B = | 1*7+2*9+3*11  1*8+2*10+3*12 | = |  58  64 |
//             | 4 5 6 |             |  9 10 |         | 4*7+5*9+6*11  4*8+5*10+6*12 |   | 139 154 |
//                                   | 11 12 |
const std::vector<float> kA = {1, 4, 2, 5, 3, 6};      // lda = 2
const std::vector<float> kAt = {1, 2, 3, 4, 5, 6};     // A^T (3x2), lda = 3
const std::vector<float> kB = {7, 9, 11, 8, 10, 12};   // ldb = 3
const std::vector<float> kBt = {7, 8, 9, 10, 11, 12};  // B^T (2x3), ldb = 2
const std::vector<float> kAB = {58, 139, 64, 154};     // ldc = 2

class Blas : public ::testing::Test {
 protected:
  void SetUp() override {
    emu::reset_device();
    emu::stream_mode() = emu::StreamMode::InOrder;
    emu::cublaslt_no_algo() = false;
    ASSERT_EQ(cublasCreate(&handle), CUBLAS_STATUS_SUCCESS);
  }
  void TearDown() override {
    EXPECT_EQ(cublasDestroy(handle), CUBLAS_STATUS_SUCCESS);
    emu::cublaslt_no_algo() = false;
    emu::reset_device();
  }

  // Fresh device memory: every byte 0xFF, so every float NaN.
  float* poisoned(size_t n) {
    float* p = nullptr;
    EXPECT_EQ(cudaMalloc(&p, n * sizeof(float)), cudaSuccess);
    return p;
  }
  cublasStatus_t sgemm(cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k, float alpha,
                       const float* a, int lda, const float* b, int ldb, float beta, float* c, int ldc) {
    return cublasSgemm(handle, ta, tb, m, n, k, &alpha, a, lda, b, ldb, &beta, c, ldc);
  }

  cublasHandle_t handle = nullptr;
};

TEST_F(Blas, HandComputedProductWithEveryTranspose) {
  float* a = device(kA);
  float* at = device(kAt);
  float* b = device(kB);
  float* bt = device(kBt);
  for (int ops = 0; ops < 4; ++ops) {
    const bool ta = ops & 1, tb = ops & 2;
    float* c = poisoned(4);
    ASSERT_EQ(sgemm(ta ? CUBLAS_OP_T : CUBLAS_OP_N, tb ? CUBLAS_OP_T : CUBLAS_OP_N, 2, 2, 3, 1.0f,
                    ta ? at : a, ta ? 3 : 2, tb ? bt : b, tb ? 2 : 3, 0.0f, c, 2),
              CUBLAS_STATUS_SUCCESS);
    EXPECT_EQ(host(c, 4), kAB) << "op(A) " << (ta ? "T" : "N") << ", op(B) " << (tb ? "T" : "N");
  }
  // CUBLAS_OP_C of a real matrix is its transpose.
  float* c = poisoned(4);
  ASSERT_EQ(sgemm(CUBLAS_OP_C, CUBLAS_OP_N, 2, 2, 3, 1.0f, at, 3, b, 3, 0.0f, c, 2), CUBLAS_STATUS_SUCCESS);
  EXPECT_EQ(host(c, 4), kAB);
}

// lda = 4 > m: rows 2 and 3 of each column are padding (NaN) that must not
// be read; A spans lda * (k - 1) + m = 10 floats exactly, no more. C's
// padding (ldc = 3) keeps its sentinel.
TEST_F(Blas, LeadingDimensionsSkipPadding) {
  float* a = device(std::vector<float>{1, 4, kNaN, kNaN, 2, 5, kNaN, kNaN, 3, 6});
  float* b = device(std::vector<float>{7, 9, 11, kNaN, 8, 10, 12});   // ldb = 4, spans 4 + 3 floats
  float* c = device(std::vector<float>{kNaN, kNaN, -7, kNaN, kNaN});  // ldc = 3, spans 3 + 2 floats
  ASSERT_EQ(sgemm(CUBLAS_OP_N, CUBLAS_OP_N, 2, 2, 3, 1.0f, a, 4, b, 4, 0.0f, c, 3), CUBLAS_STATUS_SUCCESS);
  EXPECT_EQ(host(c, 5), (std::vector<float>{58, 139, -7, 64, 154}));
  EXPECT_EQ(cudaDeviceSynchronize(), cudaSuccess) << emu::fault_message();
}

// beta == 0: C is output only, so its NaN never reaches the result.
// General alpha, beta: 2 * AB + 0.5 * C, every value exact in fp32.
TEST_F(Blas, AlphaAndBeta) {
  float* a = device(kA);
  float* b = device(kB);
  float* c = poisoned(4);
  ASSERT_EQ(sgemm(CUBLAS_OP_N, CUBLAS_OP_N, 2, 2, 3, 1.0f, a, 2, b, 3, 0.0f, c, 2), CUBLAS_STATUS_SUCCESS);
  EXPECT_EQ(host(c, 4), kAB);

  float* c2 = device(std::vector<float>{1, 2, 3, 4});
  ASSERT_EQ(sgemm(CUBLAS_OP_N, CUBLAS_OP_N, 2, 2, 3, 2.0f, a, 2, b, 3, 0.5f, c2, 2), CUBLAS_STATUS_SUCCESS);
  // 2*58 + 0.5*1, 2*139 + 0.5*2, 2*64 + 0.5*3, 2*154 + 0.5*4
  EXPECT_EQ(host(c2, 4), (std::vector<float>{116.5f, 279, 129.5f, 310}));

  // The same with alpha and beta in device memory (CUBLAS_POINTER_MODE_DEVICE).
  float* scalars = device(std::vector<float>{2.0f, 0.5f});
  float* c3 = device(std::vector<float>{1, 2, 3, 4});
  ASSERT_EQ(cublasSetPointerMode(handle, CUBLAS_POINTER_MODE_DEVICE), CUBLAS_STATUS_SUCCESS);
  ASSERT_EQ(cublasSgemm(handle, CUBLAS_OP_N, CUBLAS_OP_N, 2, 2, 3, scalars, a, 2, b, 3, scalars + 1, c3, 2),
            CUBLAS_STATUS_SUCCESS);
  EXPECT_EQ(host(c3, 4), (std::vector<float>{116.5f, 279, 129.5f, 310}));
}

// k == 0, or alpha == 0: A and B are not referenced, C = beta * C.
TEST_F(Blas, KZeroAndAlphaZeroScaleC) {
  float* c = device(std::vector<float>{1, 2, 3, 4});
  ASSERT_EQ(sgemm(CUBLAS_OP_N, CUBLAS_OP_N, 2, 2, 0, 1.0f, nullptr, 2, nullptr, 1, 3.0f, c, 2),
            CUBLAS_STATUS_SUCCESS);
  EXPECT_EQ(host(c, 4), (std::vector<float>{3, 6, 9, 12}));
  float* nan_a = poisoned(6);
  float* b = device(kB);
  ASSERT_EQ(sgemm(CUBLAS_OP_N, CUBLAS_OP_N, 2, 2, 3, 0.0f, nan_a, 2, b, 3, -1.0f, c, 2),
            CUBLAS_STATUS_SUCCESS);
  EXPECT_EQ(host(c, 4), (std::vector<float>{-3, -6, -9, -12}));
  // m == 0: nothing to do, nothing touched.
  ASSERT_EQ(sgemm(CUBLAS_OP_N, CUBLAS_OP_N, 0, 2, 3, 1.0f, nullptr, 1, nullptr, 3, 0.0f, nullptr, 1),
            CUBLAS_STATUS_SUCCESS);
  EXPECT_EQ(cudaDeviceSynchronize(), cudaSuccess);
}

// Two batches: A, then A2 = | 1 0 0 | (A2 * B = the first two rows of B),
//                           | 0 1 0 |
// B shared through strideB = 0.
TEST_F(Blas, StridedAndPointerArrayBatches) {
  std::vector<float> a2 = kA;
  const std::vector<float> a2_only = {1, 0, 0, 1, 0, 0};
  a2.insert(a2.end(), a2_only.begin(), a2_only.end());
  float* a = device(a2);
  float* b = device(kB);
  float* c = poisoned(8);
  const float one = 1.0f, zero = 0.0f;
  ASSERT_EQ(cublasGemmStridedBatchedEx(handle, CUBLAS_OP_N, CUBLAS_OP_N, 2, 2, 3, &one, a, CUDA_R_32F, 2, 6,
                                       b, CUDA_R_32F, 3, 0, &zero, c, CUDA_R_32F, 2, 4, 2, CUBLAS_COMPUTE_32F,
                                       CUBLAS_GEMM_DEFAULT),
            CUBLAS_STATUS_SUCCESS);
  EXPECT_EQ(host(c, 8), (std::vector<float>{58, 139, 64, 154, 7, 9, 8, 10}));

  // The same through device arrays of pointers, second problem first.
  float* c2 = poisoned(8);
  const std::vector<const void*> as = {a + 6, a}, bs = {b, b};
  const std::vector<void*> cs = {c2 + 4, c2};
  const void** d_as = device(as);
  const void** d_bs = device(bs);
  void** d_cs = device(cs);
  ASSERT_EQ(cublasGemmBatchedEx(handle, CUBLAS_OP_N, CUBLAS_OP_N, 2, 2, 3, &one, d_as, CUDA_R_32F, 2, d_bs,
                                CUDA_R_32F, 3, &zero, d_cs, CUDA_R_32F, 2, 2, CUBLAS_COMPUTE_32F,
                                CUBLAS_GEMM_DEFAULT_TENSOR_OP),
            CUBLAS_STATUS_SUCCESS);
  EXPECT_EQ(host(c2, 8), (std::vector<float>{58, 139, 64, 154, 7, 9, 8, 10}));
}

// Group 0: two 2x3 * 3x2 problems (A * B and A2 * B), alpha 1, beta 0.
// Group 1: one 1x2 * 2x1 problem with op(A) = T: A stored 2x1 = (3, 4),
// B = (5, 6), alpha 2, beta 1, C = 10: 2 * (3*5 + 4*6) + 10 = 88.
TEST_F(Blas, GroupedBatchesOfTwoShapes) {
  float* a0 = device(kA);
  float* a1 = device(std::vector<float>{1, 0, 0, 1, 0, 0});
  float* b = device(kB);
  float* a_g1 = device(std::vector<float>{3, 4});
  float* b_g1 = device(std::vector<float>{5, 6});
  float* c0 = poisoned(4);
  float* c1 = poisoned(4);
  float* c_g1 = device(std::vector<float>{10});
  std::vector<const void*> as = {a0, a1, a_g1}, bs = {b, b, b_g1};
  std::vector<void*> cs = {c0, c1, c_g1};
  const void** d_as = device(as);
  const void** d_bs = device(bs);
  void** d_cs = device(cs);
  {
    // Host arrays that die with this scope: the call must have copied them.
    const cublasOperation_t ta[2] = {CUBLAS_OP_N, CUBLAS_OP_T}, tb[2] = {CUBLAS_OP_N, CUBLAS_OP_N};
    const int m[2] = {2, 1}, n[2] = {2, 1}, k[2] = {3, 2}, lda[2] = {2, 2}, ldb[2] = {3, 2}, ldc[2] = {2, 1};
    const int sizes[2] = {2, 1};
    const float alpha[2] = {1, 2}, beta[2] = {0, 1};
    ASSERT_EQ(
        cublasGemmGroupedBatchedEx(handle, ta, tb, m, n, k, alpha, d_as, CUDA_R_32F, lda, d_bs, CUDA_R_32F,
                                   ldb, beta, d_cs, CUDA_R_32F, ldc, 2, sizes, CUBLAS_COMPUTE_32F),
        CUBLAS_STATUS_SUCCESS);
  }
  EXPECT_EQ(host(c0, 4), kAB);
  EXPECT_EQ(host(c1, 4), (std::vector<float>{7, 9, 8, 10}));
  EXPECT_EQ(host(c_g1, 1), std::vector<float>{88});
}

// bf16 inputs, exactly representable (small integers, halves, quarters):
//   A = | 1.5 2 -1 |   B = |   2     1 |   A*B = | 3+1-4     1.5-4-0.25 | = |  0   -2.75 |
//       | 0.5 4  3 |       | 0.5    -2 |         | 1+2+12    0.5-8+0.75 |   | 15   -6.75 |
//                          |   4  0.25 |
// Output rounding to nearest even (bf16 steps by 2 in [256, 512)): 257 is
// a tie -> 256 (even), 259 a tie -> 260 (even), 257.5 -> 258.
TEST_F(Blas, Bf16InputsWithFp32AndBf16Outputs) {
  auto bf = [](std::vector<float> v) {
    std::vector<__nv_bfloat16> out(v.begin(), v.end());
    return out;
  };
  const float one = 1.0f, zero = 0.0f;
  __nv_bfloat16* a = device(bf({1.5f, 0.5f, 2, 4, -1, 3}));
  __nv_bfloat16* b = device(bf({2, 0.5f, 4, 1, -2, 0.25f}));
  float* c32 = poisoned(4);
  ASSERT_EQ(cublasGemmEx(handle, CUBLAS_OP_N, CUBLAS_OP_N, 2, 2, 3, &one, a, CUDA_R_16BF, 2, b, CUDA_R_16BF,
                         3, &zero, c32, CUDA_R_32F, 2, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT),
            CUBLAS_STATUS_SUCCESS);
  EXPECT_EQ(host(c32, 4), (std::vector<float>{0, 15, -2.75f, -6.75f}));
  __nv_bfloat16* c16 = device(bf({kNaN, kNaN, kNaN, kNaN}));
  ASSERT_EQ(cublasGemmEx(handle, CUBLAS_OP_N, CUBLAS_OP_N, 2, 2, 3, &one, a, CUDA_R_16BF, 2, b, CUDA_R_16BF,
                         3, &zero, c16, CUDA_R_16BF, 2, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT),
            CUBLAS_STATUS_SUCCESS);
  const std::vector<__nv_bfloat16> got16 = host(c16, 4);
  EXPECT_EQ(std::vector<float>(got16.begin(), got16.end()), (std::vector<float>{0, 15, -2.75f, -6.75f}));

  __nv_bfloat16* a_tie = device(bf({256, 1}));               // 1 x 2
  __nv_bfloat16* b_tie = device(bf({1, 1, 1, 3, 1, 1.5f}));  // 2 x 3
  __nv_bfloat16* c_tie = device(bf({0, 0, 0}));
  float* c_tie32 = poisoned(3);
  ASSERT_EQ(
      cublasGemmEx(handle, CUBLAS_OP_N, CUBLAS_OP_N, 1, 3, 2, &one, a_tie, CUDA_R_16BF, 1, b_tie, CUDA_R_16BF,
                   2, &zero, c_tie32, CUDA_R_32F, 1, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT),
      CUBLAS_STATUS_SUCCESS);
  EXPECT_EQ(host(c_tie32, 3), (std::vector<float>{257, 259, 257.5f}));
  ASSERT_EQ(
      cublasGemmEx(handle, CUBLAS_OP_N, CUBLAS_OP_N, 1, 3, 2, &one, a_tie, CUDA_R_16BF, 1, b_tie, CUDA_R_16BF,
                   2, &zero, c_tie, CUDA_R_16BF, 1, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT),
      CUBLAS_STATUS_SUCCESS);
  const std::vector<__nv_bfloat16> ties = host(c_tie, 3);
  EXPECT_EQ(std::vector<float>(ties.begin(), ties.end()), (std::vector<float>{256, 260, 258}));
}

// 1 + 2^-12 needs 13 significand bits: TF32 (10) and bf16 (7) round it to
// 1, fp32 keeps it. The fast compute types and the TF32 math mode may
// round inputs so; the emulator does, the pedantic ones may not.
TEST_F(Blas, FastComputeTypesRoundTheirInputs) {
  const float x = 1.0f + std::ldexp(1.0f, -12);
  float* a = device(std::vector<float>{x});
  float* b = device(std::vector<float>{1.0f});
  float* c = poisoned(1);
  const float one = 1.0f, zero = 0.0f;
  auto product = [&](cublasComputeType_t compute) {
    EXPECT_EQ(cublasGemmEx(handle, CUBLAS_OP_N, CUBLAS_OP_N, 1, 1, 1, &one, a, CUDA_R_32F, 1, b, CUDA_R_32F,
                           1, &zero, c, CUDA_R_32F, 1, compute, CUBLAS_GEMM_DEFAULT),
              CUBLAS_STATUS_SUCCESS);
    return host(c, 1)[0];
  };
  EXPECT_EQ(product(CUBLAS_COMPUTE_32F), x);
  EXPECT_EQ(product(CUBLAS_COMPUTE_32F_FAST_TF32), 1.0f);
  EXPECT_EQ(product(CUBLAS_COMPUTE_32F_FAST_16BF), 1.0f);
  ASSERT_EQ(cublasSetMathMode(handle, CUBLAS_TF32_TENSOR_OP_MATH), CUBLAS_STATUS_SUCCESS);
  EXPECT_EQ(product(CUBLAS_COMPUTE_32F), 1.0f);
  EXPECT_EQ(product(CUBLAS_COMPUTE_32F_PEDANTIC), x);
}

TEST_F(Blas, DocumentedErrorStatuses) {
  float* a = device(kA);
  float* b = device(kB);
  float* c = poisoned(4);
  const float one = 1.0f;
  EXPECT_EQ(sgemm(CUBLAS_OP_N, CUBLAS_OP_N, -1, 2, 3, 1.0f, a, 2, b, 3, 0.0f, c, 2),
            CUBLAS_STATUS_INVALID_VALUE);
  EXPECT_EQ(sgemm(CUBLAS_OP_N, CUBLAS_OP_N, 2, 2, -3, 1.0f, a, 2, b, 3, 0.0f, c, 2),
            CUBLAS_STATUS_INVALID_VALUE);
  EXPECT_EQ(sgemm(CUBLAS_OP_N, CUBLAS_OP_N, 2, 2, 3, 1.0f, a, 1, b, 3, 0.0f, c, 2),
            CUBLAS_STATUS_INVALID_VALUE);
  EXPECT_EQ(sgemm(CUBLAS_OP_T, CUBLAS_OP_N, 2, 2, 3, 1.0f, a, 2, b, 3, 0.0f, c, 2),
            CUBLAS_STATUS_INVALID_VALUE)
      << "op(A) = T needs lda >= k = 3";
  EXPECT_EQ(sgemm(CUBLAS_OP_N, CUBLAS_OP_N, 2, 2, 3, 1.0f, a, 2, b, 2, 0.0f, c, 2),
            CUBLAS_STATUS_INVALID_VALUE);
  EXPECT_EQ(sgemm(CUBLAS_OP_N, CUBLAS_OP_N, 2, 2, 3, 1.0f, a, 2, b, 3, 0.0f, c, 1),
            CUBLAS_STATUS_INVALID_VALUE);
  EXPECT_EQ(sgemm(CUBLAS_OP_CONJG, CUBLAS_OP_N, 2, 2, 3, 1.0f, a, 2, b, 3, 0.0f, c, 2),
            CUBLAS_STATUS_INVALID_VALUE);
  EXPECT_EQ(cublasSgemm(handle, CUBLAS_OP_N, CUBLAS_OP_N, 2, 2, 3, nullptr, a, 2, b, 3, &one, c, 2),
            CUBLAS_STATUS_INVALID_VALUE);
  EXPECT_EQ(cublasSgemm(nullptr, CUBLAS_OP_N, CUBLAS_OP_N, 2, 2, 3, &one, a, 2, b, 3, &one, c, 2),
            CUBLAS_STATUS_NOT_INITIALIZED);
  cublasHandle_t gone = nullptr;
  ASSERT_EQ(cublasCreate(&gone), CUBLAS_STATUS_SUCCESS);
  ASSERT_EQ(cublasDestroy(gone), CUBLAS_STATUS_SUCCESS);
  EXPECT_EQ(cublasSetStream(gone, nullptr), CUBLAS_STATUS_NOT_INITIALIZED);
  // fp64 is a valid type but not emulated; 99 names no type at all.
  EXPECT_EQ(cublasGemmEx(handle, CUBLAS_OP_N, CUBLAS_OP_N, 2, 2, 3, &one, a, CUDA_R_64F, 2, b, CUDA_R_64F, 3,
                         &one, c, CUDA_R_64F, 2, CUBLAS_COMPUTE_64F, CUBLAS_GEMM_DEFAULT),
            CUBLAS_STATUS_NOT_SUPPORTED);
  EXPECT_EQ(cublasGemmEx(handle, CUBLAS_OP_N, CUBLAS_OP_N, 2, 2, 3, &one, a, CUDA_R_32F, 2, b, CUDA_R_16BF, 3,
                         &one, c, CUDA_R_32F, 2, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT),
            CUBLAS_STATUS_NOT_SUPPORTED);
  EXPECT_EQ(cublasGemmEx(handle, CUBLAS_OP_N, CUBLAS_OP_N, 2, 2, 3, &one, a, cudaDataType(99), 2, b,
                         CUDA_R_32F, 3, &one, c, CUDA_R_32F, 2, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT),
            CUBLAS_STATUS_INVALID_VALUE);
  EXPECT_EQ(cublasGemmStridedBatchedEx(handle, CUBLAS_OP_N, CUBLAS_OP_N, 2, 2, 3, &one, a, CUDA_R_32F, 2, 6,
                                       b, CUDA_R_32F, 3, 6, &one, c, CUDA_R_32F, 2, 4, -1, CUBLAS_COMPUTE_32F,
                                       CUBLAS_GEMM_DEFAULT),
            CUBLAS_STATUS_INVALID_VALUE);
  const cublasOperation_t op = CUBLAS_OP_N;
  const int two = 2, size = 1;
  EXPECT_EQ(cublasGemmGroupedBatchedEx(handle, &op, &op, &two, &two, &two, &one, nullptr, CUDA_R_32F, &two,
                                       nullptr, CUDA_R_32F, &two, &one, nullptr, CUDA_R_32F, &two, -1, &size,
                                       CUBLAS_COMPUTE_32F),
            CUBLAS_STATUS_INVALID_VALUE);
  EXPECT_EQ(cublasSetMathMode(handle, cublasMath_t(5)), CUBLAS_STATUS_INVALID_VALUE);
  EXPECT_STREQ(cublasGetStatusName(CUBLAS_STATUS_INVALID_VALUE), "CUBLAS_STATUS_INVALID_VALUE");
  // Nothing was queued by a refused call.
  EXPECT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  EXPECT_TRUE(std::isnan(host(c, 1)[0]));
}

// The GEMM runs where the stream reaches it: after the copy queued before
// it, and its result is in C only once the stream is synchronised.
TEST_F(Blas, RunsInStreamOrder) {
  cudaStream_t s = nullptr;
  ASSERT_EQ(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking), cudaSuccess);
  ASSERT_EQ(cublasSetStream(handle, s), CUBLAS_STATUS_SUCCESS);
  cudaStream_t got = nullptr;
  ASSERT_EQ(cublasGetStream(handle, &got), CUBLAS_STATUS_SUCCESS);
  EXPECT_EQ(got, s);
  float* pinned_a = nullptr;
  ASSERT_EQ(cudaMallocHost(&pinned_a, kA.size() * sizeof(float)), cudaSuccess);
  std::memcpy(pinned_a, kA.data(), kA.size() * sizeof(float));
  float* a = poisoned(6);
  float* b = device(kB);
  float* c = poisoned(4);
  ASSERT_EQ(cudaMemcpyAsync(a, pinned_a, 6 * sizeof(float), cudaMemcpyHostToDevice, s), cudaSuccess);
  ASSERT_EQ(sgemm(CUBLAS_OP_N, CUBLAS_OP_N, 2, 2, 3, 1.0f, a, 2, b, 3, 0.0f, c, 2), CUBLAS_STATUS_SUCCESS);
  EXPECT_TRUE(std::isnan(c[0])) << "the GEMM ran before its stream was synchronised";
  ASSERT_EQ(cudaStreamSynchronize(s), cudaSuccess);
  EXPECT_EQ(std::vector<float>(c, c + 4), kAB);
  EXPECT_EQ(cudaFreeHost(pinned_a), cudaSuccess);
}

// A matrix that runs off its allocation (A needs lda * (k - 1) + m = 6
// floats, it has 5), or a pointer array in host memory, is a device fault
// when the GEMM runs, as a bad address is on a GPU.
TEST_F(Blas, BadDeviceMemoryIsAFault) {
  float* a = device(std::vector<float>{1, 4, 2, 5, 3});
  float* b = device(kB);
  float* c = poisoned(4);
  ASSERT_EQ(sgemm(CUBLAS_OP_N, CUBLAS_OP_N, 2, 2, 3, 1.0f, a, 2, b, 3, 0.0f, c, 2), CUBLAS_STATUS_SUCCESS);
  EXPECT_EQ(cudaDeviceSynchronize(), cudaErrorLaunchFailure);
  EXPECT_NE(emu::fault_message().find("cublasSgemm A"), std::string::npos) << emu::fault_message();
  EXPECT_NE(emu::fault_message().find("past the end"), std::string::npos) << emu::fault_message();

  emu::reset_device();
  float* a2 = device(kA);
  float* b2 = device(kB);
  float* c2 = poisoned(4);
  const void* host_as[1] = {a2};
  const void** d_bs = device(std::vector<const void*>{b2});
  void** d_cs = device(std::vector<void*>{c2});
  const cublasOperation_t op = CUBLAS_OP_N;
  const int m = 2, n = 2, k = 3, lda = 2, ldb = 3, ldc = 2, size = 1;
  const float one = 1.0f, zero = 0.0f;
  ASSERT_EQ(cublasGemmGroupedBatchedEx(handle, &op, &op, &m, &n, &k, &one, host_as, CUDA_R_32F, &lda, d_bs,
                                       CUDA_R_32F, &ldb, &zero, d_cs, CUDA_R_32F, &ldc, 1, &size,
                                       CUBLAS_COMPUTE_32F),
            CUBLAS_STATUS_SUCCESS);
  EXPECT_EQ(cudaDeviceSynchronize(), cudaErrorLaunchFailure);
  EXPECT_NE(emu::fault_message().find("Aarray"), std::string::npos) << emu::fault_message();
  EXPECT_NE(emu::fault_message().find("not device memory"), std::string::npos) << emu::fault_message();
}

// ----------------------------------------------------------------- cuBLASLt --

class BlasLt : public Blas {
 protected:
  void SetUp() override {
    Blas::SetUp();
    ASSERT_EQ(cublasLtCreate(&lt), CUBLAS_STATUS_SUCCESS);
    ASSERT_EQ(cublasLtMatmulDescCreate(&desc, CUBLAS_COMPUTE_32F, CUDA_R_32F), CUBLAS_STATUS_SUCCESS);
    ASSERT_EQ(cublasLtMatmulPreferenceCreate(&pref), CUBLAS_STATUS_SUCCESS);
  }
  void TearDown() override {
    for (cublasLtMatrixLayout_t l : layouts) cublasLtMatrixLayoutDestroy(l);
    cublasLtMatmulPreferenceDestroy(pref);
    cublasLtMatmulDescDestroy(desc);
    EXPECT_EQ(cublasLtDestroy(lt), CUBLAS_STATUS_SUCCESS);
    Blas::TearDown();
  }
  cublasLtMatrixLayout_t layout(uint64_t rows, uint64_t cols, int64_t ld, cudaDataType type = CUDA_R_32F) {
    cublasLtMatrixLayout_t l = nullptr;
    EXPECT_EQ(cublasLtMatrixLayoutCreate(&l, type, rows, cols, ld), CUBLAS_STATUS_SUCCESS);
    layouts.push_back(l);
    return l;
  }
  void set_ops(cublasOperation_t ta, cublasOperation_t tb) {
    ASSERT_EQ(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof ta),
              CUBLAS_STATUS_SUCCESS);
    ASSERT_EQ(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof tb),
              CUBLAS_STATUS_SUCCESS);
  }
  void set_alignment(uint32_t bytes) {
    for (auto attr : {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES,
                      CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES})
      ASSERT_EQ(cublasLtMatmulPreferenceSetAttribute(pref, attr, &bytes, sizeof bytes),
                CUBLAS_STATUS_SUCCESS);
  }
  // The heuristic's one algorithm for (a, b, c, c), or 0 results.
  int heuristic(cublasLtMatrixLayout_t a, cublasLtMatrixLayout_t b, cublasLtMatrixLayout_t c,
                cublasLtMatmulHeuristicResult_t* out, cublasStatus_t* status = nullptr) {
    int count = -1;
    const cublasStatus_t s = cublasLtMatmulAlgoGetHeuristic(lt, desc, a, b, c, c, pref, 1, out, &count);
    if (status) *status = s;
    return count;
  }
  cublasStatus_t matmul(const void* a, cublasLtMatrixLayout_t la, const void* b, cublasLtMatrixLayout_t lb,
                        float* c, cublasLtMatrixLayout_t lc, const cublasLtMatmulAlgo_t* algo) {
    const float one = 1.0f, zero = 0.0f;
    return cublasLtMatmul(lt, desc, &one, a, la, b, lb, &zero, c, lc, c, lc, algo, nullptr, 0, nullptr);
  }

  cublasLtHandle_t lt = nullptr;
  cublasLtMatmulDesc_t desc = nullptr;
  cublasLtMatmulPreference_t pref = nullptr;
  std::vector<cublasLtMatrixLayout_t> layouts;
};

TEST_F(BlasLt, HandComputedProductThroughTheHeuristic) {
  float* a = device(kA);
  float* at = device(kAt);
  float* b = device(kB);
  cublasLtMatmulHeuristicResult_t r{};
  const auto la = layout(2, 3, 2), lat = layout(3, 2, 3), lb = layout(3, 2, 3), lc = layout(2, 2, 2);
  ASSERT_EQ(heuristic(la, lb, lc, &r), 1);
  EXPECT_EQ(r.state, CUBLAS_STATUS_SUCCESS);
  EXPECT_EQ(r.workspaceSize, 0u);
  float* c = poisoned(4);
  ASSERT_EQ(matmul(a, la, b, lb, c, lc, &r.algo), CUBLAS_STATUS_SUCCESS);
  EXPECT_EQ(host(c, 4), kAB);
  // op(A) = T through the descriptor; A's layout is the stored A^T (3 x 2).
  set_ops(CUBLAS_OP_T, CUBLAS_OP_N);
  ASSERT_EQ(heuristic(lat, lb, lc, &r), 1);
  float* c2 = poisoned(4);
  ASSERT_EQ(matmul(at, lat, b, lb, c2, lc, &r.algo), CUBLAS_STATUS_SUCCESS);
  EXPECT_EQ(host(c2, 4), kAB);
  // Shapes that do not fit: op(A) 2 x 3 against this B is not.
  cublasStatus_t status;
  EXPECT_EQ(heuristic(la, lb, lc, &r, &status), 0);
  EXPECT_EQ(status, CUBLAS_STATUS_INVALID_VALUE);
  int32_t got = -1;
  size_t written = 0;
  ASSERT_EQ(cublasLtMatmulDescGetAttribute(desc, CUBLASLT_MATMUL_DESC_TRANSA, &got, sizeof got, &written),
            CUBLAS_STATUS_SUCCESS);
  EXPECT_EQ(got, CUBLAS_OP_T);
  EXPECT_EQ(written, sizeof got);
}

// A plan made for 16-byte alignment takes A 16 bytes into its buffer, not
// 20 (4 bytes off); the default preference promises 256 bytes (the
// documented default), so without an algo neither offset is taken.
TEST_F(BlasLt, AlignmentPromiseIsEnforced) {
  std::vector<float> at16(4, 0.0f), at20(5, 0.0f);
  at16.insert(at16.end(), kA.begin(), kA.end());
  at20.insert(at20.end(), kA.begin(), kA.end());
  const float* a16 = device(at16) + 4;
  const float* a20 = device(at20) + 5;
  float* b = device(kB);
  float* c = poisoned(4);
  const auto la = layout(2, 3, 2), lb = layout(3, 2, 3), lc = layout(2, 2, 2);
  cublasLtMatmulHeuristicResult_t r{};
  set_alignment(16);
  ASSERT_EQ(heuristic(la, lb, lc, &r), 1);
  ASSERT_EQ(matmul(a16, la, b, lb, c, lc, &r.algo), CUBLAS_STATUS_SUCCESS);
  EXPECT_EQ(host(c, 4), kAB);
  EXPECT_EQ(matmul(a20, la, b, lb, c, lc, &r.algo), CUBLAS_STATUS_INVALID_VALUE);
  EXPECT_EQ(matmul(a16, la, b, lb, c, lc, nullptr), CUBLAS_STATUS_INVALID_VALUE);
  set_alignment(4);
  ASSERT_EQ(heuristic(la, lb, lc, &r), 1);
  float* c2 = poisoned(4);
  ASSERT_EQ(matmul(a20, la, b, lb, c2, lc, &r.algo), CUBLAS_STATUS_SUCCESS);
  EXPECT_EQ(host(c2, 4), kAB);
}

TEST_F(BlasLt, NoAlgorithmModeFindsNothing) {
  const auto la = layout(2, 3, 2), lb = layout(3, 2, 3), lc = layout(2, 2, 2);
  cublasLtMatmulHeuristicResult_t r{};
  emu::cublaslt_no_algo() = true;
  cublasStatus_t status;
  EXPECT_EQ(heuristic(la, lb, lc, &r, &status), 0);
  EXPECT_EQ(status, CUBLAS_STATUS_NOT_SUPPORTED);
  float* c = poisoned(4);
  EXPECT_EQ(matmul(device(kA), la, device(kB), lb, c, lc, nullptr), CUBLAS_STATUS_NOT_SUPPORTED);
  emu::cublaslt_no_algo() = false;
  EXPECT_EQ(heuristic(la, lb, lc, &r), 1);
  // A type the emulator does not run is refused the same way.
  const auto l64 = layout(2, 3, 2, CUDA_R_64F);
  EXPECT_EQ(heuristic(l64, lb, lc, &r, &status), 0);
  EXPECT_EQ(status, CUBLAS_STATUS_NOT_SUPPORTED);
}

// Row-major layouts hold A^T's and B^T's column-major bytes (kAt, kBt);
// a batch of two (the second with A2 = rows 0 and 1 of the identity, B
// shared by a 0 stride); alpha and beta in device memory.
TEST_F(BlasLt, RowOrderBatchesAndDeviceScalars) {
  std::vector<float> a_rows = kAt;
  const std::vector<float> a2_rows = {1, 0, 0, 0, 1, 0};
  a_rows.insert(a_rows.end(), a2_rows.begin(), a2_rows.end());
  const float* a = device(a_rows);
  const float* b = device(kBt);
  float* c = poisoned(8);
  const float* scalars = device(std::vector<float>{1.0f, 0.0f});
  const auto la = layout(2, 3, 3), lb = layout(3, 2, 2), lc = layout(2, 2, 2);
  const int32_t row = CUBLASLT_ORDER_ROW, batch = 2;
  const int64_t strides[3] = {6, 0, 4};
  const cublasLtMatrixLayout_t ls[3] = {la, lb, lc};
  for (int i = 0; i < 3; ++i) {
    ASSERT_EQ(cublasLtMatrixLayoutSetAttribute(ls[i], CUBLASLT_MATRIX_LAYOUT_ORDER, &row, sizeof row),
              CUBLAS_STATUS_SUCCESS);
    ASSERT_EQ(
        cublasLtMatrixLayoutSetAttribute(ls[i], CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT, &batch, sizeof batch),
        CUBLAS_STATUS_SUCCESS);
    ASSERT_EQ(cublasLtMatrixLayoutSetAttribute(ls[i], CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET,
                                               &strides[i], sizeof strides[i]),
              CUBLAS_STATUS_SUCCESS);
  }
  const int32_t device_mode = CUBLASLT_POINTER_MODE_DEVICE;
  ASSERT_EQ(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_POINTER_MODE, &device_mode,
                                           sizeof device_mode),
            CUBLAS_STATUS_SUCCESS);
  EXPECT_EQ(cublasLtMatrixLayoutSetAttribute(la, CUBLASLT_MATRIX_LAYOUT_ORDER, &row, 8),
            CUBLAS_STATUS_INVALID_VALUE)
      << "the attribute is an int32_t";
  cublasLtMatmulHeuristicResult_t r{};
  ASSERT_EQ(heuristic(la, lb, lc, &r), 1);
  ASSERT_EQ(cublasLtMatmul(lt, desc, scalars, a, la, b, lb, scalars + 1, c, lc, c, lc, &r.algo, nullptr, 0,
                           nullptr),
            CUBLAS_STATUS_SUCCESS);
  EXPECT_EQ(host(c, 8), (std::vector<float>{58, 64, 139, 154, 7, 8, 9, 10}));
}

// Random shapes and transposes against an fp64 loop. A dot product of
// length k summed in fp32 is within gamma_k * sum |a_il| |b_lj| of the
// exact one (Higham, Accuracy and Stability, 3.1), gamma_k = k u / (1 - k
// u) with u = 2^-24; the fp64 loop's own error is far below that.
TEST_F(BlasLt, RandomShapesWithinTheFp32ErrorBound) {
  std::mt19937 rng(12345);
  std::uniform_int_distribution<int> dim(1, 70);
  std::uniform_real_distribution<float> value(-1.0f, 1.0f);
  const double u = std::ldexp(1.0, -24);
  for (int trial = 0; trial < 20; ++trial) {
    const int m = dim(rng), n = dim(rng), k = dim(rng);
    const bool ta = rng() & 1, tb = rng() & 1;
    const int lda = (ta ? k : m) + int(rng() % 3), ldb = (tb ? n : k) + int(rng() % 3),
              ldc = m + int(rng() % 3);
    std::vector<float> a(size_t(lda) * (ta ? m : k)), b(size_t(ldb) * (tb ? k : n));
    for (float& x : a) x = value(rng);
    for (float& x : b) x = value(rng);
    set_ops(ta ? CUBLAS_OP_T : CUBLAS_OP_N, tb ? CUBLAS_OP_T : CUBLAS_OP_N);
    const auto la = layout(ta ? k : m, ta ? m : k, lda), lb = layout(tb ? n : k, tb ? k : n, ldb),
               lc = layout(m, n, ldc);
    cublasLtMatmulHeuristicResult_t r{};
    ASSERT_EQ(heuristic(la, lb, lc, &r), 1);
    float* d_c = poisoned(size_t(ldc) * n);
    ASSERT_EQ(matmul(device(a), la, device(b), lb, d_c, lc, &r.algo), CUBLAS_STATUS_SUCCESS);
    const std::vector<float> c = host(d_c, size_t(ldc) * n);
    const double gamma = k * u / (1 - k * u);
    for (int i = 0; i < m; ++i)
      for (int j = 0; j < n; ++j) {
        double exact = 0, magnitude = 0;
        for (int l = 0; l < k; ++l) {
          const double x = ta ? a[size_t(i) * lda + l] : a[size_t(l) * lda + i];
          const double y = tb ? b[size_t(l) * ldb + j] : b[size_t(j) * ldb + l];
          exact += x * y;
          magnitude += std::fabs(x * y);
        }
        ASSERT_LE(std::fabs(c[size_t(j) * ldc + i] - exact), gamma * magnitude)
            << "trial " << trial << " (" << m << "x" << n << "x" << k << ") at " << i << "," << j;
      }
  }
}

}  // namespace
