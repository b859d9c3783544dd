// Shared helpers of the gpu tests (tests/test_gpu_*.cpp): device buffers,
// random inputs, and the skip when no device is visible.
#pragma once

#ifdef MOE_WITH_CUDA

#include <gtest/gtest.h>

#include <random>
#include <vector>

#include "backend/cuda/cuda_device.h"

#define SKIP_WITHOUT_DEVICE() \
  if (moe::cuda_device_count() == 0) GTEST_SKIP() << "no CUDA device visible"

namespace moe::test {

// Device memory of n elements, freed with the object.
template <typename T>
class DeviceBuffer {
 public:
  explicit DeviceBuffer(size_t n) : n_(n) {
    if (n_ > 0) MOE_CUDA_CHECK(cudaMalloc(&p_, n_ * sizeof(T)));
  }
  explicit DeviceBuffer(const std::vector<T>& host) : DeviceBuffer(host.size()) { upload(host); }
  ~DeviceBuffer() { cudaFree(p_); }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;

  T* get() const { return p_; }
  size_t size() const { return n_; }
  void upload(const std::vector<T>& host) {
    ASSERT_EQ(host.size(), n_);
    if (n_ > 0)
      MOE_CUDA_CHECK(cudaMemcpy(p_, host.data(), n_ * sizeof(T), cudaMemcpyHostToDevice));
  }
  std::vector<T> download() const {
    std::vector<T> host(n_);
    MOE_CUDA_CHECK(cudaDeviceSynchronize());
    if (n_ > 0)
      MOE_CUDA_CHECK(cudaMemcpy(host.data(), p_, n_ * sizeof(T), cudaMemcpyDeviceToHost));
    return host;
  }

 private:
  T* p_ = nullptr;
  size_t n_ = 0;
};

inline std::vector<float> normal(size_t n, std::mt19937_64& rng, double mean = 0.0,
                                 double sd = 1.0) {
  std::normal_distribution<double> d(mean, sd);
  std::vector<float> v(n);
  for (auto& x : v) x = static_cast<float>(d(rng));
  return v;
}

inline std::vector<float> uniform(size_t n, std::mt19937_64& rng, double lo, double hi) {
  std::uniform_real_distribution<double> d(lo, hi);
  std::vector<float> v(n);
  for (auto& x : v) x = static_cast<float>(d(rng));
  return v;
}

}  // namespace moe::test

#endif  // MOE_WITH_CUDA
