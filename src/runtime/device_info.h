// What moe-bench needs to know about the GPU: whether one is visible, its
// name, memory in use, and its dense bf16 tensor-core peak (the MFU
// denominator). Builds without CUDA report no device.
#pragma once

#include <cstddef>
#include <string>

namespace moe {

struct GpuInfo {
  std::string name;            // cudaDeviceProp::name, e.g. "NVIDIA H100 80GB HBM3"
  size_t total_bytes = 0;      // device memory
  size_t used_bytes = 0;       // total - free (cudaMemGetInfo): every process on the device
  double peak_bf16_tflops = 0; // dense; 0 = not in the table
};

// True when this build has CUDA (MOE_WITH_CUDA) and a device is visible.
bool cuda_available();

// The device's name, memory and peak. Throws InternalError on a CUDA error
// and in a build without CUDA.
GpuInfo gpu_info(int device);

// Dense bf16 peak in TFLOP/s by device name (the datasheets' figures without
// sparsity): H100 SXM / H800 / H200 / GH200 989.4, H100 / H800 PCIe 756,
// A100 312, L40S 362; 0 for any other name (NVL boards included).
double peak_bf16_dense_tflops(const std::string& device_name);

}  // namespace moe
