// Switches of the emulated device's cuBLAS and cuBLASLt shims
// (emu/src/cublas.cpp, emu/src/cublaslt.cpp) that tests may set.
#pragma once

namespace emu {

// When true, cublasLtMatmulAlgoGetHeuristic finds no algorithm (0 results,
// CUBLAS_STATUS_NOT_SUPPORTED), as for a problem the library cannot run, so
// a caller's fallback path runs. From EMU_CUBLASLT_NO_ALGO=0|1 (default 0).
bool& cublaslt_no_algo();

}  // namespace emu
