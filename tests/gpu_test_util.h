// Shared helpers of the gpu tests (tests/test_gpu_*.cpp): device buffers,
// random inputs, error measures against a reference, the CPU reference
// backend, and the skip when no device is visible.
#pragma once

#ifdef MOE_WITH_CUDA

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <memory>
#include <random>
#include <vector>

#include "backend/backend.h"
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

// The reference the GPU results are compared with: the CPU backend, 1 thread.
inline std::unique_ptr<Backend<float>> cpu() { return make_cpu_backend<float>(1); }

// max_i |got_i - ref_i| / max_i |ref_i|: the normwise relative error, for
// results that are differences or sums of mixed signs (element-wise relative
// error is meaningless near cancellation). Ref is float (CPU backend) or
// double (fp64 host reference).
template <typename Ref>
double normwise_rel_err(const std::vector<float>& got, const std::vector<Ref>& ref) {
  EXPECT_EQ(got.size(), ref.size());
  double err = 0.0, scale = 0.0;
  for (size_t i = 0; i < ref.size() && i < got.size(); ++i) {
    err = std::max(err, std::abs(static_cast<double>(got[i]) - static_cast<double>(ref[i])));
    scale = std::max(scale, std::abs(static_cast<double>(ref[i])));
  }
  return scale > 0.0 ? err / scale : err;
}

// max_i |got_i - ref_i| / |ref_i|: for products with no cancellation.
template <typename Ref>
double elementwise_rel_err(const std::vector<float>& got, const std::vector<Ref>& ref) {
  EXPECT_EQ(got.size(), ref.size());
  double err = 0.0;
  for (size_t i = 0; i < ref.size() && i < got.size(); ++i) {
    const double r = static_cast<double>(ref[i]);
    const double d = std::abs(static_cast<double>(got[i]) - r);
    err = std::max(err, r != 0.0 ? d / std::abs(r) : d);
  }
  return err;
}

// The same bits (determinism checks).
inline bool same_bits(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

}  // namespace moe::test

#endif  // MOE_WITH_CUDA
