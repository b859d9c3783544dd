#include "backend/cuda/bf16_linear.h"

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
  for (auto& s : scratch_) cudaFree(s.p);
  cudaFree(device_ptrs_);
  cublasDestroy(blas_);
}

size_t Bf16Linear::bytes_held() const {
  size_t b = device_ptrs_capacity_ * sizeof(void*);
  for (const auto& [w, c] : weights_) b += c.n * sizeof(__nv_bfloat16);
  for (const auto& s : scratch_) b += s.bytes;
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

// Grown on demand with a synchronize first (queued work may still use the old
// buffer); sizes settle after the first step, so the step loop does not allocate.
__nv_bfloat16* Bf16Linear::scratch(int slot, size_t n) {
  Scratch& s = scratch_[slot];
  const size_t bytes = n * sizeof(__nv_bfloat16);
  if (bytes > s.bytes) {
    MOE_CUDA_CHECK(cudaStreamSynchronize(stream_));
    if (s.p) MOE_CUDA_CHECK(cudaFree(s.p));
    MOE_CUDA_CHECK(cudaMalloc(&s.p, bytes));
    s.bytes = bytes;
  }
  return static_cast<__nv_bfloat16*>(s.p);
}

__nv_bfloat16* Bf16Linear::converted(int slot, const float* x, size_t n) {
  __nv_bfloat16* out = scratch(slot, n);
  kernels::float_to_bf16(out, x, n, stream_);
  return out;
}

void Bf16Linear::gemm(cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k,
                      const __nv_bfloat16* A, int lda, const __nv_bfloat16* B, int ldb, float beta,
                      float* C, int ldc) {
  if (lt_.run(ta, tb, m, n, k, A, lda, B, ldb, beta, C, ldc)) return;
  const float alpha = 1.0f;
  check(cublasGemmEx(blas_, ta, tb, m, n, k, &alpha, A, CUDA_R_16BF, lda, B, CUDA_R_16BF, ldb,
                     &beta, C, CUDA_R_32F, ldc, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT),
        "cublasGemmEx (bf16, fallback)");
}

// ---- dense: row-major y = x W^T mapped onto column-major cuBLASLt ----

void Bf16Linear::forward(float* y, const float* x, const float* W, int N, int I, int O) {
  const __nv_bfloat16* w = weight(W, size_t(O) * I);
  const __nv_bfloat16* xb = converted(0, x, size_t(N) * I);
  gemm(CUBLAS_OP_T, CUBLAS_OP_N, O, N, I, w, I, xb, I, 0.0f, y, O);
}

void Bf16Linear::backward(float* dx, float* dW, const float* dy, const float* x, const float* W,
                          int N, int I, int O, bool accumulate_dx) {
  const __nv_bfloat16* dyb = converted(0, dy, size_t(N) * O);
  if (dx) {
    const __nv_bfloat16* w = weight(W, size_t(O) * I);
    gemm(CUBLAS_OP_N, CUBLAS_OP_N, I, N, O, w, I, dyb, O, accumulate_dx ? 1.0f : 0.0f, dx, I);
  }
  const __nv_bfloat16* xb = converted(1, x, size_t(N) * I);
  gemm(CUBLAS_OP_N, CUBLAS_OP_T, I, O, N, xb, I, dyb, O, 1.0f, dW, I);
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

void Bf16Linear::grouped_forward(float* y, const float* x, const float* W,
                                 const int64_t* offsets_host, int groups, int I, int O) {
  const int64_t r_begin = offsets_host[0], rows = offsets_host[groups] - r_begin;
  if (rows == 0) return;
  const __nv_bfloat16* w = weight(W, size_t(groups) * O * I);
  const __nv_bfloat16* xb = converted(0, x + r_begin * I, size_t(rows) * I);
  __nv_bfloat16* yb = scratch(1, size_t(rows) * O);
  std::vector<Problem> problems;
  for (int g = 0; g < groups; ++g) {
    const int64_t r0 = offsets_host[g] - r_begin, n = offsets_host[g + 1] - offsets_host[g];
    if (n > 0)  // y_g^T (O x n) = W_g (read as I x O, transposed) x_g^T (I x n)
      problems.push_back({O, int(n), I, w + size_t(g) * O * I, xb + r0 * I, yb + r0 * O});
  }
  grouped_gemm(CUBLAS_OP_T, CUBLAS_OP_N, I, I, O, problems);
  kernels::bf16_to_float(y + r_begin * O, yb, size_t(rows) * O, false, stream_);
}

void Bf16Linear::grouped_backward(float* dx, float* dW, const float* dy, const float* x,
                                  const float* W, const int64_t* offsets_host, int groups, int I,
                                  int O) {
  const int64_t r_begin = offsets_host[0], rows = offsets_host[groups] - r_begin;
  if (rows == 0) return;
  const __nv_bfloat16* dyb = converted(0, dy + r_begin * O, size_t(rows) * O);
  if (dx) {
    const __nv_bfloat16* w = weight(W, size_t(groups) * O * I);
    __nv_bfloat16* dxb = scratch(2, size_t(rows) * I);
    std::vector<Problem> problems;
    for (int g = 0; g < groups; ++g) {
      const int64_t r0 = offsets_host[g] - r_begin, n = offsets_host[g + 1] - offsets_host[g];
      if (n > 0)  // dx_g^T (I x n) = W_g (I x O) dy_g^T (O x n)
        problems.push_back({I, int(n), O, w + size_t(g) * O * I, dyb + r0 * O, dxb + r0 * I});
    }
    grouped_gemm(CUBLAS_OP_N, CUBLAS_OP_N, I, O, I, problems);
    kernels::bf16_to_float(dx + r_begin * I, dxb, size_t(rows) * I, false, stream_);
  }
  // dW_g^T (I x O) = x_g^T (I x n) dy_g (n x O), into a zeroed bf16 buffer so
  // experts without tokens add exactly 0 in the one accumulate pass below.
  const __nv_bfloat16* xb = converted(1, x + r_begin * I, size_t(rows) * I);
  const size_t w_elems = size_t(groups) * O * I;
  __nv_bfloat16* dWb = scratch(3, w_elems);
  MOE_CUDA_CHECK(cudaMemsetAsync(dWb, 0, w_elems * sizeof(__nv_bfloat16), stream_));
  std::vector<Problem> problems;
  for (int g = 0; g < groups; ++g) {
    const int64_t r0 = offsets_host[g] - r_begin, n = offsets_host[g + 1] - offsets_host[g];
    if (n > 0) problems.push_back({I, O, int(n), xb + r0 * I, dyb + r0 * O, dWb + size_t(g) * O * I});
  }
  grouped_gemm(CUBLAS_OP_N, CUBLAS_OP_T, I, O, I, problems);
  kernels::bf16_to_float(dW, dWb, w_elems, true, stream_);
}

}  // namespace moe
