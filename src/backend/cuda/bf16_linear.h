// The matmuls of bf16 training on the CUDA backend (train.precision:
// bfloat16): activations are bf16 in memory, weights fp32 masters.
// - weights: a bf16 copy per weight tensor, made on first use and remade only
//   after something writes to the fp32 master (the backend reports every such
//   write through invalidate(); in training that is the optimizer step), so a
//   step converts each weight once, not once per micro-batch;
// - dense layers: cuBLASLt, bf16 operands, fp32 accumulation, bf16 outputs
//   (activations and their gradients, rounded once) and fp32 weight
//   gradients accumulated in place (beta = 1);
// - routed experts: one cublasGemmGroupedBatchedEx per projection for the
//   outputs and the input gradients (experts with no tokens left out), and
//   one cublasGemmEx per expert for the weight gradients, which accumulate in
//   fp32 straight into the gradient buffer (never rounded to bf16).
// The router's matmul stays fp32 (CudaBackend, not here).
#pragma once

#include <cublas_v2.h>
#include <cuda_bf16.h>

#include <cstddef>
#include <cstdint>
#include <map>
#include <vector>

#include "backend/cuda/lt_matmul.h"

namespace moe {

class Bf16Linear {
 public:
  explicit Bf16Linear(cudaStream_t stream);
  ~Bf16Linear();
  Bf16Linear(const Bf16Linear&) = delete;
  Bf16Linear& operator=(const Bf16Linear&) = delete;

  // The Backend ops of the same names (see backend.h for the contracts).
  void forward(__nv_bfloat16* y, const __nv_bfloat16* x, const float* W, int N, int I, int O);
  void backward(__nv_bfloat16* dx, float* dW, const __nv_bfloat16* dy, const __nv_bfloat16* x,
                const float* W, int N, int I, int O, bool accumulate_dx);
  void grouped_forward(__nv_bfloat16* y, const __nv_bfloat16* x, const float* W,
                       const int64_t* offsets_host, int groups, int I, int O);
  void grouped_backward(__nv_bfloat16* dx, float* dW, const __nv_bfloat16* dy,
                        const __nv_bfloat16* x, const float* W, const int64_t* offsets_host,
                        int groups, int I, int O);

  // [p, p + bytes) of backend memory was (or is about to be) written: bf16
  // copies of weights overlapping it are stale.
  void invalidate(const void* p, size_t bytes);
  // [p, p + bytes) is being freed: forget copies of weights inside it.
  void forget(const void* p, size_t bytes);
  // Device bytes held by bf16 weight copies and the grouped calls' pointer arrays.
  size_t bytes_held() const;

 private:
  struct WeightCopy {
    size_t n = 0;
    __nv_bfloat16* bf16 = nullptr;
    bool fresh = false;
  };
  // One GEMM of a grouped call; pointers are device memory.
  struct Problem {
    int m, n, k;
    const __nv_bfloat16* A;
    const __nv_bfloat16* B;
    __nv_bfloat16* C;
  };

  const __nv_bfloat16* weight(const float* W, size_t n);
  // One dense bf16 x bf16 GEMM into C of c_type: cuBLASLt, or cublasGemmEx
  // for a shape cuBLASLt has no algorithm for.
  void gemm(cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k,
            const __nv_bfloat16* A, int lda, const __nv_bfloat16* B, int ldb, float beta, void* C,
            cudaDataType_t c_type, int ldc);
  // Every problem shares ta, tb, lda, ldb and ldc; alpha 1, beta 0, bf16 C.
  void grouped_gemm(cublasOperation_t ta, cublasOperation_t tb, int lda, int ldb, int ldc,
                    const std::vector<Problem>& problems);

  cudaStream_t stream_;
  LtMatmul lt_;
  cublasHandle_t blas_ = nullptr;  // default math: tensor cores for the grouped GEMMs
  std::map<const void*, WeightCopy> weights_;
  void** device_ptrs_ = nullptr;  // A, B, C pointer arrays of a grouped call
  size_t device_ptrs_capacity_ = 0;
};

}  // namespace moe
