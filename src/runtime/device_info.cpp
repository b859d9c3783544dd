#include "runtime/device_info.h"

#include "core/error.h"

#ifdef MOE_WITH_CUDA
#include <cuda_runtime.h>

#include "backend/cuda/cuda_device.h"
#endif

namespace moe {

double peak_bf16_dense_tflops(const std::string& name) {
  auto has = [&](const char* s) { return name.find(s) != std::string::npos; };
  // NVL boards run at lower clocks than SXM: unknown rather than a wrong figure.
  if (has("NVL")) return 0;
  if (has("H100") || has("H800")) return has("PCIe") ? 756 : 989.4;
  if (has("H200")) return 989.4;  // H200 and GH200
  if (has("A100")) return 312;
  if (has("L40S")) return 362;
  return 0;
}

#ifdef MOE_WITH_CUDA

bool cuda_available() { return cuda_device_count() > 0; }

GpuInfo gpu_info(int device) {
  cudaDeviceProp prop{};
  MOE_CUDA_CHECK(cudaGetDeviceProperties(&prop, device));
  MOE_CUDA_CHECK(cudaSetDevice(device));
  size_t free_bytes = 0, total_bytes = 0;
  MOE_CUDA_CHECK(cudaMemGetInfo(&free_bytes, &total_bytes));
  GpuInfo g;
  g.name = prop.name;
  g.total_bytes = total_bytes;
  g.used_bytes = total_bytes - free_bytes;
  g.peak_bf16_tflops = peak_bf16_dense_tflops(g.name);
  return g;
}

#else

bool cuda_available() { return false; }

GpuInfo gpu_info(int) { throw InternalError("gpu_info: this build has no CUDA"); }

#endif

}  // namespace moe
