// The CPU backend (OpenBLAS + OpenMP): Backend<T, A> for (float, float),
// (double, double) and (float, bf16), the bf16 mode that is the exact-
// semantics reference of the CUDA backend's mixed precision. Host memory is
// device memory.
//
// The ops are declared here from backend.h's lists and defined out of class
// in one file per op family (llm.c style), named after its CUDA twin in
// kernels/ (router.cpp and router.cu, ...); each file ends by instantiating
// its own family's list for the three type pairs (MOE_CPU_INSTANTIATE). Every
// parallel region runs nt_ threads.
#pragma once

#include <omp.h>

#include <string>

#include "backend/backend.h"
#include "backend/cpu/cpu_common.h"

namespace moe::cpu {

template <typename T, typename A>
class CpuBackend final : public Backend<T, A> {
 public:
  using Param = T;
  using Act = A;

  explicit CpuBackend(int threads) : nt_(threads > 0 ? threads : omp_get_max_threads()) {
    if (nt_ < 1) nt_ = 1;
  }
  std::string name() const override {
    return is_bf16_v<A> ? "cpu-bf16" : sizeof(T) == 8 ? "cpu-fp64" : "cpu-fp32";
  }

  // ---- memory ----
  // Counted for peak_bytes() (moe-bench); allocations happen at model
  // construction only, so the bookkeeping costs nothing per step.
  void* alloc_bytes(size_t bytes) override {
    void* p = cpu::alloc_bytes(bytes);
    this->count_alloc(p, bytes);
    return p;
  }
  void free_bytes(void* p) override {
    this->count_free(p);
    cpu::free_bytes(p);
  }
  void to_device(void* dst, const void* src_host, size_t bytes) override {
    copy_bytes(dst, src_host, bytes);
  }
  void to_host(void* dst_host, const void* src, size_t bytes) override {
    copy_bytes(dst_host, src, bytes);
  }
  void copy(void* dst, const void* src, size_t bytes) override { copy_bytes(dst, src, bytes); }
  void zero(void* p, size_t bytes) override { zero_bytes(p, bytes); }

  // ---- the ops (backend.h), defined in the family files ----
  MOE_BACKEND_OPS(MOE_DECLARE_OVERRIDE)

 private:
  int nt_;
};

// Explicit instantiation of one op for the three type pairs; a family file
// ends with MOE_OPS_<FAMILY>(MOE_CPU_INSTANTIATE). The parameters after the
// qualified name are looked up in CpuBackend's scope (Param, Act).
#define MOE_CPU_INSTANTIATE(ret, name, params)         \
  template ret CpuBackend<float, float>::name params;   \
  template ret CpuBackend<double, double>::name params; \
  template ret CpuBackend<float, bf16>::name params;

}  // namespace moe::cpu
