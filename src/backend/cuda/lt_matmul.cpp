#include "backend/cuda/lt_matmul.h"

#include <algorithm>
#include <string>

#include "backend/cuda/cuda_device.h"
#include "core/error.h"

namespace moe {
namespace {

constexpr size_t kWorkspaceBytes = size_t(32) << 20;  // split-K scratch; cuBLAS's own advice for Hopper

// Largest power of two (<= 256) dividing the address: what the heuristic may assume.
int alignment_of(const void* p) {
  const auto a = reinterpret_cast<uintptr_t>(p);
  int align = 256;
  while (align > 1 && a % align != 0) align /= 2;
  return align;
}

void check(cublasStatus_t st, const char* what) { cublas_check(int(st), what); }

}  // namespace

LtMatmul::LtMatmul(cudaStream_t stream) : stream_(stream) {
  check(cublasLtCreate(&handle_), "cublasLtCreate");
  MOE_CUDA_CHECK(cudaMalloc(&workspace_, kWorkspaceBytes));
}

LtMatmul::~LtMatmul() {
  for (auto& [key, p] : plans_) {
    cublasLtMatrixLayoutDestroy(p.a);
    cublasLtMatrixLayoutDestroy(p.b);
    cublasLtMatrixLayoutDestroy(p.c);
    cublasLtMatmulDescDestroy(p.desc);
  }
  cudaFree(workspace_);
  cublasLtDestroy(handle_);
}

const LtMatmul::Plan& LtMatmul::plan(const Key& key) {
  if (auto it = plans_.find(key); it != plans_.end()) return it->second;
  const auto [ta, tb, m, n, k, lda, ldb, ldc, c_align, c_type, a_align, b_align] = key;
  Plan p;
  check(cublasLtMatmulDescCreate(&p.desc, CUBLAS_COMPUTE_32F, CUDA_R_32F), "matmul desc");
  const int32_t opa = ta, opb = tb;
  check(cublasLtMatmulDescSetAttribute(p.desc, CUBLASLT_MATMUL_DESC_TRANSA, &opa, sizeof(opa)),
        "transa");
  check(cublasLtMatmulDescSetAttribute(p.desc, CUBLASLT_MATMUL_DESC_TRANSB, &opb, sizeof(opb)),
        "transb");
  // Layouts describe the stored matrices (before op).
  const bool na = ta == CUBLAS_OP_N, nb = tb == CUBLAS_OP_N;
  check(cublasLtMatrixLayoutCreate(&p.a, CUDA_R_16BF, na ? m : k, na ? k : m, lda), "layout A");
  check(cublasLtMatrixLayoutCreate(&p.b, CUDA_R_16BF, nb ? k : n, nb ? n : k, ldb), "layout B");
  check(cublasLtMatrixLayoutCreate(&p.c, cudaDataType_t(c_type), m, n, ldc), "layout C");

  cublasLtMatmulPreference_t pref = nullptr;
  check(cublasLtMatmulPreferenceCreate(&pref), "preference");
  const uint64_t ws = kWorkspaceBytes;
  const uint32_t a_min = uint32_t(a_align), b_min = uint32_t(b_align),
                 out_align = uint32_t(c_align);
  cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws,
                                       sizeof(ws));
  cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, &a_min,
                                       sizeof(a_min));
  cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, &b_min,
                                       sizeof(b_min));
  cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES,
                                       &out_align, sizeof(out_align));
  cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES,
                                       &out_align, sizeof(out_align));
  cublasLtMatmulHeuristicResult_t result{};
  int found = 0;
  const cublasStatus_t st = cublasLtMatmulAlgoGetHeuristic(handle_, p.desc, p.a, p.b, p.c, p.c,
                                                           pref, 1, &result, &found);
  cublasLtMatmulPreferenceDestroy(pref);
  p.found = st == CUBLAS_STATUS_SUCCESS && found > 0 && result.state == CUBLAS_STATUS_SUCCESS;
  if (p.found) p.algo = result.algo;
  return plans_.emplace(key, p).first->second;
}

bool LtMatmul::run(cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k,
                   const __nv_bfloat16* A, int lda, const __nv_bfloat16* B, int ldb, float beta,
                   void* C, cudaDataType_t c_type, int ldc) {
  if (m == 0 || n == 0) return true;
  if (k == 0) {  // empty sum: C = beta * C
    if (beta == 0.0f) {
      const size_t elem = c_type == CUDA_R_32F ? sizeof(float) : sizeof(__nv_bfloat16);
      MOE_CUDA_CHECK(cudaMemset2DAsync(C, size_t(ldc) * elem, 0, size_t(m) * elem, size_t(n),
                                       stream_));
    }
    return true;  // beta is 0 or 1 in this code base
  }
  // A and B at a row offset (the LM head's chunks, transformer.cpp) can be
  // less than 16-byte aligned; an algorithm chosen for 16 could then fault.
  const int a_align = std::min(16, alignment_of(A)), b_align = std::min(16, alignment_of(B));
  const Plan& p = plan({int(ta), int(tb), m, n, k, lda, ldb, ldc, alignment_of(C), int(c_type),
                        a_align, b_align});
  if (!p.found) return false;
  const float alpha = 1.0f;
  check(cublasLtMatmul(handle_, p.desc, &alpha, A, p.a, B, p.b, &beta, C, p.c, C, p.c, &p.algo,
                       workspace_, kWorkspaceBytes, stream_),
        "cublasLtMatmul (bf16)");
  return true;
}

}  // namespace moe
