// The GEMM that the cuBLAS and cuBLASLt shims (cublas.cpp, cublaslt.cpp)
// share: D = alpha * op(A) * op(B) + beta * C on the emulated device's
// memory, every product accumulated in fp32 in order of k, and the checks
// on the memory each operand spans. Internal to emu/src.
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>
#include <string>

#include "cublas_api.h"

namespace emu::blas {

// op(X) as the kernel reads it: element (r, c) lies at data + r *
// row_stride + c * col_stride elements. A column-major X with leading
// dimension ld read as op N has strides (1, ld), as op T (ld, 1).
struct Operand {
  const void* data = nullptr;
  cudaDataType_t type = CUDA_R_32F;
  int64_t row_stride = 1;
  int64_t col_stride = 1;
};

// How far a compute type lets the inputs lose precision before the
// products; the emulator takes the worst the documentation allows.
enum class InputRounding { None, Tf32, Bf16, Fp16 };

struct Problem {
  int64_t m = 0, n = 0, k = 0;
  float alpha = 1.0f, beta = 0.0f;
  Operand a, b;  // op(A): m x k, op(B): k x n
  Operand c;     // m x n, read only when beta != 0
  Operand d;     // m x n, written (cuBLAS: the same as c)
  InputRounding rounding = InputRounding::None;
};

// Bytes of one element of a type the GEMM stores (fp32, bf16), else 0.
size_t element_size(cudaDataType_t type);

// Whether the compute type, scale type and matrix types are a combination
// the documentation lists (cublasGemmEx's table; `grouped`: the narrower
// one of cublasGemmGroupedBatchedEx) that the emulator implements.
// kUnknown: a value that names no type at all (an invalid argument).
enum class TypeCheck { kOk, kUnknown, kUnsupported };
TypeCheck check_types(cublasComputeType_t compute, cudaDataType_t scale, cudaDataType_t a, cudaDataType_t b,
                      cudaDataType_t c, bool grouped);
const char* type_name(cudaDataType_t type);
const char* compute_name(cublasComputeType_t compute);
// The rounding of fp32 inputs a compute type (and a cuBLAS math mode) allows.
InputRounding rounding_for(cublasComputeType_t compute, cudaDataType_t input, cublasMath_t math);

// Runs on the stream (inside an emu::enqueue'd operation): checks that
// every operand the problem reads or writes lies in one live allocation
// and is aligned to its element, throwing emu::KernelError (a device
// fault) naming `where` and the operand otherwise, then computes it. A and
// B are not read when k == 0 or alpha == 0, C not when beta == 0.
void run(const Problem& p, const std::string& where);

}  // namespace emu::blas
