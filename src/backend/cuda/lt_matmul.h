// bf16 x bf16 matmuls through cuBLASLt: tensor cores, fp32 accumulation, and
// an fp32 output (weight gradients, accumulated with beta = 1) or a bf16 one
// (activations, rounded once from the fp32 accumulator).
//
// Column-major like BLAS (the backend maps its row-major ops onto it). One
// plan (descriptors + the heuristic's algorithm) per shape and output
// alignment, made on first use and reused: the same shape always runs the
// same algorithm, so results are bit-identical from run to run.
#pragma once

#include <cublasLt.h>
#include <cuda_bf16.h>

#include <cstdint>
#include <map>
#include <tuple>

namespace moe {

class LtMatmul {
 public:
  explicit LtMatmul(cudaStream_t stream);
  ~LtMatmul();
  LtMatmul(const LtMatmul&) = delete;
  LtMatmul& operator=(const LtMatmul&) = delete;

  // C[m,n] = op(A) op(B) + beta * C; op(A) is m x k, op(B) k x n; C of type
  // c_type (CUDA_R_32F or CUDA_R_16BF). Any A, B and C alignment: the plan
  // promises the heuristic only what the pointers have (A and B capped at 16
  // bytes).
  // Returns false, having done nothing, when cuBLASLt has no algorithm for
  // this shape (odd leading dimensions can have none); the caller falls back.
  bool run(cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k,
           const __nv_bfloat16* A, int lda, const __nv_bfloat16* B, int ldb, float beta, void* C,
           cudaDataType_t c_type, int ldc);

 private:
  struct Plan {
    cublasLtMatmulDesc_t desc = nullptr;
    cublasLtMatrixLayout_t a = nullptr, b = nullptr, c = nullptr;
    cublasLtMatmulAlgo_t algo{};
    bool found = false;  // the heuristic returned an algorithm
  };
  // (ta, tb, m, n, k, lda, ldb, ldc, alignment of C in bytes, C type,
  // alignment of A, of B in bytes, at most 16)
  using Key = std::tuple<int, int, int, int, int, int, int, int, int, int, int, int>;
  const Plan& plan(const Key& key);

  cudaStream_t stream_;
  cublasLtHandle_t handle_ = nullptr;
  void* workspace_ = nullptr;
  std::map<Key, Plan> plans_;
};

}  // namespace moe
