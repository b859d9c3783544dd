#include "plan/cpu_gemm_peak.h"

#include <algorithm>
#include <chrono>
#include <vector>

#include "backend/cpu/cpu_blas.h"

namespace moe {

namespace {

template <typename T>
CpuGemmPeak time_gemm(int threads, double seconds, int n) {
  const size_t nn = static_cast<size_t>(n) * n;
  // Values of order 1, no denormals; their pattern does not matter to the speed.
  std::vector<T> a(nn), b(nn), c(nn);
  for (size_t i = 0; i < nn; i++) {
    a[i] = T(0.5) + T(i % 7) * T(0.01);
    b[i] = T(0.25) + T(i % 5) * T(0.02);
  }
  cpu::blas_set_threads(threads);
  using clock = std::chrono::steady_clock;
  auto call = [&] {
    const auto t0 = clock::now();
    cpu::gemm<T>(false, false, n, n, n, T(1), a.data(), n, b.data(), n, T(0), c.data(), n);
    return std::chrono::duration<double>(clock::now() - t0).count();
  };
  call();  // untimed: thread start-up, first touch of the buffers
  double best = 1e300, total = 0;
  int calls = 0;
  while (calls < 3 || total < seconds) {
    const double s = call();
    best = std::min(best, s);
    total += s;
    ++calls;
  }
  CpuGemmPeak p;
  p.gflops = 2.0 * double(n) * n * n / best / 1e9;
#ifdef OPENBLAS_VERSION
  p.library = "OpenBLAS";
#else
  p.library = "BLAS";
#endif
  p.routine = sizeof(T) == sizeof(double) ? "dgemm" : "sgemm";
  p.n = n;
  p.threads = threads;
  p.calls = calls;
  return p;
}

}  // namespace

CpuGemmPeak measure_cpu_gemm_peak(bool fp64, int threads, double seconds, int n) {
  return fp64 ? time_gemm<double>(threads, seconds, n) : time_gemm<float>(threads, seconds, n);
}

}  // namespace moe
