#include "backend/cuda/bf16_linear.h"

#include <cstdint>
#include <string>

#include "backend/cuda/cuda_device.h"
#include "core/error.h"
#include "kernels.h"

namespace moe {
namespace {

void check(cublasStatus_t st, const char* what) { cublas_check(int(st), what); }

bool overlaps(const void* a, size_t a_bytes, const void* b, size_t b_bytes) {
  const auto a0 = reinterpret_cast<uintptr_t>(a), b0 = reinterpret_cast<uintptr_t>(b);
  return a0 < b0 + b_bytes && b0 < a0 + a_bytes;
}

}  // namespace

Bf16Linear::Bf16Linear(cudaStream_t stream) : stream_(stream), lt_(stream) {
  check(cublasCreate(&blas_), "create");
  check(cublasSetStream(blas_, stream_), "set stream");
}

Bf16Linear::~Bf16Linear() {
  for (auto& [w, c] : weights_) cudaFree(c.bf16);
  cudaFree(device_ptrs_);
  cublasDestroy(blas_);
}

size_t Bf16Linear::bytes_held() const {
  size_t b = device_ptrs_capacity_ * sizeof(void*);
  for (const auto& [w, c] : weights_) b += c.n * sizeof(__nv_bfloat16);
  return b;
}

void Bf16Linear::invalidate(const void* p, size_t bytes) {
  for (auto& [w, c] : weights_)
    if (c.fresh && overlaps(w, c.n * sizeof(float), p, bytes)) c.fresh = false;
}

void Bf16Linear::forget(const void* p, size_t bytes) {
  for (auto it = weights_.begin(); it != weights_.end();) {
    if (overlaps(it->first, it->second.n * sizeof(float), p, bytes)) {
      MOE_CUDA_CHECK(cudaStreamSynchronize(stream_));  // a queued matmul may still read it
      MOE_CUDA_CHECK(cudaFree(it->second.bf16));
      it = weights_.erase(it);
    } else {
      ++it;
    }
  }
}

const __nv_bfloat16* Bf16Linear::weight(const float* W, size_t n) {
  WeightCopy& c = weights_[W];
  if (c.n != n) {  // first use (or the same address now holds a tensor of another size)
    if (c.bf16) {
      MOE_CUDA_CHECK(cudaStreamSynchronize(stream_));
      MOE_CUDA_CHECK(cudaFree(c.bf16));
      c = WeightCopy{};  // no dangling copy if the allocation below fails
    }
    MOE_CUDA_CHECK(cudaMalloc(&c.bf16, n * sizeof(__nv_bfloat16)));
    c.n = n;
    c.fresh = false;
  }
  if (!c.fresh) {
    kernels::float_to_bf16(c.bf16, W, n, stream_);
    c.fresh = true;
  }
  return c.bf16;
}

void Bf16Linear::gemm(cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k,
                      const __nv_bfloat16* A, int lda, const __nv_bfloat16* B, int ldb, float beta,
                      void* C, cudaDataType_t c_type, int ldc) {
  if (lt_.run(ta, tb, m, n, k, A, lda, B, ldb, beta, C, c_type, ldc)) return;
  const float alpha = 1.0f;
  check(cublasGemmEx(blas_, ta, tb, m, n, k, &alpha, A, CUDA_R_16BF, lda, B, CUDA_R_16BF, ldb,
                     &beta, C, c_type, ldc, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT),
        "cublasGemmEx (bf16, fallback)");
}

// ---- dense: row-major y = x W^T mapped onto column-major cuBLASLt ----

void Bf16Linear::forward(__nv_bfloat16* y, const __nv_bfloat16* x, const float* W, int N, int I,
                         int O) {
  const __nv_bfloat16* w = weight(W, size_t(O) * I);
  gemm(CUBLAS_OP_T, CUBLAS_OP_N, O, N, I, w, I, x, I, 0.0f, y, CUDA_R_16BF, O);
}

void Bf16Linear::backward(__nv_bfloat16* dx, float* dW, const __nv_bfloat16* dy,
                          const __nv_bfloat16* x, const float* W, int N, int I, int O,
                          bool accumulate_dx) {
  if (dx) {
    const __nv_bfloat16* w = weight(W, size_t(O) * I);
    gemm(CUBLAS_OP_N, CUBLAS_OP_N, I, N, O, w, I, dy, O, accumulate_dx ? 1.0f : 0.0f, dx,
         CUDA_R_16BF, I);
  }
  gemm(CUBLAS_OP_N, CUBLAS_OP_T, I, O, N, x, I, dy, O, 1.0f, dW, CUDA_R_32F, I);
}

// ---- routed experts: one grouped GEMM per projection and pass ----

void Bf16Linear::grouped_gemm(cublasOperation_t ta, cublasOperation_t tb, int lda, int ldb,
                              int ldc, const std::vector<Problem>& problems) {
  const int count = int(problems.size());
  if (count == 0) return;
  // The grouped call cannot see the pointers in its device arrays, and the
  // cuBLAS docs require bf16 matrices there to be aligned (16 bytes when
  // k % 8 == 0), else a misaligned-address fault. Experts start at arbitrary
  // token rows, so that holds only when I and O are multiples of 8; other
  // shapes run one cublasGemmEx per expert, which sees its pointers.
  bool aligned = true;
  for (const Problem& p : problems)
    for (const void* q : {(const void*)p.A, (const void*)p.B, (const void*)p.C})
      aligned = aligned && reinterpret_cast<uintptr_t>(q) % 16 == 0;
  if (!aligned) {
    const float one = 1.0f, zero = 0.0f;
    for (const Problem& p : problems)
      check(cublasGemmEx(blas_, ta, tb, p.m, p.n, p.k, &one, p.A, CUDA_R_16BF, lda, p.B,
                         CUDA_R_16BF, ldb, &zero, p.C, CUDA_R_16BF, ldc, CUBLAS_COMPUTE_32F,
                         CUBLAS_GEMM_DEFAULT),
            "cublasGemmEx (bf16, unaligned experts)");
    return;
  }
  std::vector<cublasOperation_t> tas(count, ta), tbs(count, tb);
  std::vector<int> ms(count), ns(count), ks(count), ldas(count, lda), ldbs(count, ldb),
      ldcs(count, ldc), sizes(count, 1);
  std::vector<float> alphas(count, 1.0f), betas(count, 0.0f);
  std::vector<const void*> ptrs(3 * size_t(count));
  for (int i = 0; i < count; ++i) {
    const Problem& p = problems[i];
    ms[i] = p.m, ns[i] = p.n, ks[i] = p.k;
    ptrs[i] = p.A, ptrs[count + i] = p.B, ptrs[2 * count + i] = p.C;
  }
  if (ptrs.size() > device_ptrs_capacity_) {
    MOE_CUDA_CHECK(cudaStreamSynchronize(stream_));
    if (device_ptrs_) MOE_CUDA_CHECK(cudaFree(device_ptrs_));
    MOE_CUDA_CHECK(cudaMalloc(&device_ptrs_, ptrs.size() * sizeof(void*)));
    device_ptrs_capacity_ = ptrs.size();
  }
  // Pageable source: the call returns once `ptrs` is staged, and stream order
  // keeps the previous grouped GEMM's reads of device_ptrs_ ahead of this copy.
  MOE_CUDA_CHECK(cudaMemcpyAsync(device_ptrs_, ptrs.data(), ptrs.size() * sizeof(void*),
                                 cudaMemcpyHostToDevice, stream_));
  const void* const* A = const_cast<const void* const*>(device_ptrs_);
  const void* const* B = A + count;
  void* const* C = device_ptrs_ + 2 * count;
  check(cublasGemmGroupedBatchedEx(blas_, tas.data(), tbs.data(), ms.data(), ns.data(), ks.data(),
                                   alphas.data(), A, CUDA_R_16BF, ldas.data(), B, CUDA_R_16BF,
                                   ldbs.data(), betas.data(), C, CUDA_R_16BF, ldcs.data(), count,
                                   sizes.data(), CUBLAS_COMPUTE_32F),
        "cublasGemmGroupedBatchedEx (bf16)");
}

void Bf16Linear::grouped_forward(__nv_bfloat16* y, const __nv_bfloat16* x, const float* W,
                                 const int64_t* offsets_host, int groups, int I, int O) {
  const int64_t r_begin = offsets_host[0], rows = offsets_host[groups] - r_begin;
  if (rows == 0) return;
  const __nv_bfloat16* w = weight(W, size_t(groups) * O * I);
  std::vector<Problem> problems;
  for (int g = 0; g < groups; ++g) {
    const int64_t r0 = offsets_host[g], n = offsets_host[g + 1] - r0;
    if (n > 0)  // y_g^T (O x n) = W_g (read as I x O, transposed) x_g^T (I x n)
      problems.push_back({O, int(n), I, w + size_t(g) * O * I, x + r0 * I, y + r0 * O});
  }
  grouped_gemm(CUBLAS_OP_T, CUBLAS_OP_N, I, I, O, problems);
}

void Bf16Linear::grouped_backward(__nv_bfloat16* dx, float* dW, const __nv_bfloat16* dy,
                                  const __nv_bfloat16* x, const float* W,
                                  const int64_t* offsets_host, int groups, int I, int O) {
  const int64_t r_begin = offsets_host[0], rows = offsets_host[groups] - r_begin;
  if (rows == 0) return;
  if (dx) {
    const __nv_bfloat16* w = weight(W, size_t(groups) * O * I);
    std::vector<Problem> problems;
    for (int g = 0; g < groups; ++g) {
      const int64_t r0 = offsets_host[g], n = offsets_host[g + 1] - r0;
      if (n > 0)  // dx_g^T (I x n) = W_g (I x O) dy_g^T (O x n)
        problems.push_back({I, int(n), O, w + size_t(g) * O * I, dy + r0 * O, dx + r0 * I});
    }
    grouped_gemm(CUBLAS_OP_N, CUBLAS_OP_N, I, O, I, problems);
  }
  // dW_g^T (I x O) += x_g^T (I x n) dy_g (n x O), in fp32 into the gradient
  // itself: one cublasGemmEx per expert with tokens (the grouped API has no
  // fp32 output for bf16 inputs). Experts without tokens add nothing.
  const float one = 1.0f;
  for (int g = 0; g < groups; ++g) {
    const int64_t r0 = offsets_host[g], n = offsets_host[g + 1] - r0;
    if (n == 0) continue;
    check(cublasGemmEx(blas_, CUBLAS_OP_N, CUBLAS_OP_T, I, O, int(n), &one, x + r0 * I,
                       CUDA_R_16BF, I, dy + r0 * O, CUDA_R_16BF, O, &one, dW + size_t(g) * O * I,
                       CUDA_R_32F, I, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT),
          "cublasGemmEx (expert dW, bf16 -> fp32)");
  }
}

}  // namespace moe
