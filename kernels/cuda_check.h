// The CUDA runtime error check, for kernels/*.cu and for host code alike.
//
// Here in kernels/ so that the kernels include nothing of the backend: the
// CUDA backend (src/backend/cuda/cuda_device.h) includes it from here. Plain
// C++ (no CUDA syntax); built only when MOE_WITH_CUDA (definition in
// cuda_check.cpp).
#pragma once

#include <cuda_runtime.h>

namespace moe {

// Throws moe::InternalError("file:line: expr: cudaErrorName: description")
// when err != cudaSuccess. Use through MOE_CUDA_CHECK.
void cuda_check(cudaError_t err, const char* expr, const char* file, int line);

}  // namespace moe

// Checks a CUDA runtime call (or the result of cudaGetLastError() after a
// kernel launch) and throws moe::InternalError naming the call and file:line.
#define MOE_CUDA_CHECK(expr) ::moe::cuda_check((expr), #expr, __FILE__, __LINE__)
