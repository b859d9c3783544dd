// CUDA device discovery and error checking for host code.
//
// Plain C++ (no CUDA syntax): compiled by the host compiler and included by
// tests and host glue. Everything here is only built when MOE_WITH_CUDA.
#pragma once

#include <cuda_runtime.h>

namespace moe {

// Number of CUDA devices this process can use; 0 when no driver, no device or
// any other runtime error (respects CUDA_VISIBLE_DEVICES). Never throws. Tests
// use it to skip cleanly on machines without a GPU.
int cuda_device_count() noexcept;

// Throws moe::InternalError("file:line: expr: cudaErrorName: description")
// when err != cudaSuccess. Use through MOE_CUDA_CHECK.
void cuda_check(cudaError_t err, const char* expr, const char* file, int line);

// Throws moe::InternalError("cublas: <what> failed with status N") unless
// status is CUBLAS_STATUS_SUCCESS (0). Takes the status as int so this header
// needs no cuBLAS include.
void cublas_check(int status, const char* what);

}  // namespace moe

// Checks a CUDA runtime call (or the result of cudaGetLastError() after a
// kernel launch) and throws moe::InternalError naming the call and file:line.
#define MOE_CUDA_CHECK(expr) ::moe::cuda_check((expr), #expr, __FILE__, __LINE__)
