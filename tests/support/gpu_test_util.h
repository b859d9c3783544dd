// Shared helpers of the gpu tests (tests/gpu/test_gpu_*.cpp): device buffers,
// random inputs, error measures against a reference, the CPU reference
// backend, and the skip when no device is visible.
//
// Where the tolerances of those tests come from (u = 2^-24 ~ 6e-8):
// - Exact (EXPECT_EQ, same_bits) only where both sides do the same IEEE
//   operations on bitwise-identical inputs: copies, integers, one fp32 add or
//   multiply per element, sums in a fixed order both sides share, top-K on
//   the same fp32 keys, the same kernel run twice (no float atomics anywhere).
// - fp32 against fp32 in another summation order (CPU: OpenBLAS, whose
//   kernel, OPENBLAS_CORETYPE, picks the order; GPU: cuBLAS's algorithm,
//   split-K or not, and the kernels' tiles; device expf within 2 ulp): a
//   K-term dot product or sum errs by sqrt(K) u relative to the sum of its
//   terms' magnitudes typically (7e-7 at K = 128), K u at worst. The op
//   tests' 1e-5 is >= 10x the typical error of both sides together for
//   K <= 128 and >= 4x up to K ~ 1000; the worst case K u would pass it only
//   for K <= 160, but random data does not come near it.
// - fp64 accumulation (sums, the loss, AdamW, the aux loss) rounded to fp32
//   once: within an fp32 ulp or two of each other.
// - bf16 outputs: see test_gpu_bf16.cpp (one bf16 ulp, 2^-8 .. 2^-7).
#pragma once

#ifdef MOE_WITH_CUDA

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
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

// Integers uniform in [lo, hi] (token ids, targets).
inline std::vector<int32_t> random_ints(size_t n, int lo, int hi, std::mt19937_64& rng) {
  std::uniform_int_distribution<int> d(lo, hi);
  std::vector<int32_t> v(n);
  for (auto& x : v) x = d(rng);
  return v;
}

// The reference the GPU results are compared with: the CPU backend, 1 thread
// (its results still depend on the OpenBLAS kernel; see the top of the file).
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
