// CUDA device discovery and error checking for host code.
//
// Plain C++ (no CUDA syntax): compiled by the host compiler and included by
// tests and host glue. Everything here is only built when MOE_WITH_CUDA.
// The CUDA runtime check (cuda_check, MOE_CUDA_CHECK) is the kernels' own,
// kernels/cuda_check.h, included here so host code keeps one include.
#pragma once

#include <cuda_runtime.h>

#include "cuda_check.h"

namespace moe {

// Number of CUDA devices this process can use; 0 when no driver, no device or
// any other runtime error (respects CUDA_VISIBLE_DEVICES). Never throws. Tests
// use it to skip cleanly on machines without a GPU.
int cuda_device_count() noexcept;

// Throws moe::InternalError("cublas: <what> failed with status N") unless
// status is CUBLAS_STATUS_SUCCESS (0). Takes the status as int so this header
// needs no cuBLAS include.
void cublas_check(int status, const char* what);

}  // namespace moe
