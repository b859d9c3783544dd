#include "backend/cuda/cuda_device.h"

#include <string>

#include "core/error.h"

namespace moe {

int cuda_device_count() noexcept {
  int n = 0;
  // Without a driver this returns cudaErrorNoDevice or
  // cudaErrorInsufficientDriver; either way "no usable device".
  const cudaError_t err = cudaGetDeviceCount(&n);
  if (err != cudaSuccess) {
    (void)cudaGetLastError();  // clear it so the next runtime call does not report it
    return 0;
  }
  return n > 0 ? n : 0;
}

void cublas_check(int status, const char* what) {
  if (status == 0) return;
  throw InternalError(std::string("cublas: ") + what + " failed with status " +
                      std::to_string(status));
}

}  // namespace moe
