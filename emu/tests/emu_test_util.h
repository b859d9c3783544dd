// Copies between host vectors and emulated device memory for emu/'s own
// tests; a failed copy names the device's fault.
#pragma once

#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <cstddef>
#include <vector>

#include "emu/device.h"

namespace emu_test {

// Fresh device memory holding `host`.
template <class T>
T* device(const std::vector<T>& host) {
  T* p = nullptr;
  EXPECT_EQ(cudaMalloc(&p, host.size() * sizeof(T)), cudaSuccess);
  EXPECT_EQ(cudaMemcpy(p, host.data(), host.size() * sizeof(T), cudaMemcpyHostToDevice), cudaSuccess)
      << emu::fault_message();
  return p;
}

// n elements of device memory at p, after the work queued before.
template <class T>
std::vector<T> host(const T* p, size_t n) {
  std::vector<T> h(n);
  EXPECT_EQ(cudaMemcpy(h.data(), p, n * sizeof(T), cudaMemcpyDeviceToHost), cudaSuccess)
      << emu::fault_message();
  return h;
}

}  // namespace emu_test
