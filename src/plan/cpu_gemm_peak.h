// The CPU's GEMM peak as moe-bench measures it: the fastest of repeated
// square OpenBLAS GEMMs (sgemm, or dgemm in fp64 mode) of n = 1024 on the
// training's thread count, so that a CPU step's FLOP rate can be read as a
// share of what the BLAS reaches on this machine (docs/bench.md, "MFU").
#pragma once

#include <string>

namespace moe {

struct CpuGemmPeak {
  double gflops = 0;    // 2 n^3 / the fastest call's seconds, / 1e9
  std::string library;  // "OpenBLAS", or "BLAS" for another cblas
  std::string routine;  // "sgemm" or "dgemm"
  int n = 0;
  int threads = 0;
  int calls = 0;        // timed calls (after one untimed)
};

// Times n x n x n GEMMs on `threads` OpenBLAS threads for about `seconds`
// (at least 3 calls after one warm-up call).
CpuGemmPeak measure_cpu_gemm_peak(bool fp64, int threads, double seconds = 1.0, int n = 1024);

}  // namespace moe
