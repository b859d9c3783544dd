// Memory (64-byte aligned, zeroed) and the BLAS thread count.
#include <cblas.h>  // OpenBLAS's also declares openblas_set_num_threads

#include <cstdlib>
#include <cstring>
#include <new>

#include "backend/cpu/cpu_blas.h"
#include "backend/cpu/cpu_common.h"

namespace moe::cpu {

void blas_set_threads(int nt) {
#ifdef OPENBLAS_VERSION
  // openblas_set_num_threads is process-global; only call it on a change.
  static int current = -1;
  if (nt != current) {
    openblas_set_num_threads(nt);
    current = nt;
  }
#else
  (void)nt;
#endif
}

void* alloc_bytes(size_t bytes) {
  // aligned_alloc needs a size that is a multiple of the alignment (and > 0
  // so that every allocation is a distinct, freeable pointer).
  size_t padded = (bytes + 63) / 64 * 64;
  if (padded == 0) padded = 64;
  void* p = std::aligned_alloc(64, padded);
  if (!p) throw std::bad_alloc();
  std::memset(p, 0, padded);
  return p;
}

void free_bytes(void* p) { std::free(p); }

void copy_bytes(void* dst, const void* src, size_t bytes) {
  if (bytes > 0) std::memcpy(dst, src, bytes);
}

void zero_bytes(void* p, size_t bytes) {
  if (bytes > 0) std::memset(p, 0, bytes);
}

}  // namespace moe::cpu
