// The CUDA backend, first version: Backend<float> over the kernels in
// kernels/ and cuBLAS fp32 GEMMs, all on one stream. It exists so the GPU
// path can be checked op by op and step by step against the CPU backend
// (tests/test_gpu_backend.cpp). Still to come (issue 6): bf16 copies of the
// weights for cuBLASLt matmuls, one grouped GEMM per projection instead of a
// loop over experts, fused kernels, CUDA-event timing.
#include <cublas_v2.h>

#include <memory>
#include <string>
#include <vector>

#include "backend/backend.h"
#include "backend/cuda/cuda_device.h"
#include "core/error.h"
#include "kernels.h"
#include "kernels_router_grad.h"

namespace moe {
namespace {

void cublas_check(cublasStatus_t st, const char* what) {
  if (st != CUBLAS_STATUS_SUCCESS)
    throw InternalError(std::string("cublas: ") + what + " failed with status " +
                        std::to_string(int(st)));
}

class CudaBackend final : public Backend<float> {
 public:
  explicit CudaBackend(int device) {
    MOE_CUDA_CHECK(cudaSetDevice(device));
    MOE_CUDA_CHECK(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
    cublas_check(cublasCreate(&blas_), "create");
    cublas_check(cublasSetStream(blas_, stream_), "set stream");
    // Full fp32: no TF32 shortcuts, so results match the CPU reference.
    cublas_check(cublasSetMathMode(blas_, CUBLAS_PEDANTIC_MATH), "math mode");
  }
  ~CudaBackend() override {
    if (workspace_) cudaFree(workspace_);
    cublasDestroy(blas_);
    cudaStreamDestroy(stream_);
  }
  std::string name() const override { return "cuda-fp32"; }

  // ---- memory ----
  void* alloc_bytes(size_t bytes) override {
    void* p = nullptr;
    MOE_CUDA_CHECK(cudaMalloc(&p, bytes == 0 ? 1 : bytes));
    MOE_CUDA_CHECK(cudaMemsetAsync(p, 0, bytes == 0 ? 1 : bytes, stream_));
    MOE_CUDA_CHECK(cudaStreamSynchronize(stream_));
    return p;
  }
  void free_bytes(void* p) override { cudaFree(p); }
  void to_device(void* dst, const void* src, size_t bytes) override {
    MOE_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, stream_));
    MOE_CUDA_CHECK(cudaStreamSynchronize(stream_));  // src may be reused at once
  }
  void to_host(void* dst, const void* src, size_t bytes) override {
    MOE_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, stream_));
    MOE_CUDA_CHECK(cudaStreamSynchronize(stream_));
  }
  void copy(void* dst, const void* src, size_t bytes) override {
    MOE_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, stream_));
  }
  void zero(void* p, size_t bytes) override {
    MOE_CUDA_CHECK(cudaMemsetAsync(p, 0, bytes, stream_));
  }
  void synchronize() override { MOE_CUDA_CHECK(cudaStreamSynchronize(stream_)); }

  // ---- elementwise and reductions ----
  void add_inplace(float* y, const float* x, size_t n) override {
    kernels::add_inplace(y, x, n, stream_);
  }
  void scale_inplace(float* x, double a, size_t n) override {
    kernels::scale_inplace(x, a, n, stream_);
  }
  double sum(const float* x, size_t n) override {
    const size_t ws = kernels::reduce_workspace_bytes(n);
    return kernels::sum(x, n, workspace(ws), ws, stream_);
  }
  double sum_squares(const float* x, size_t n) override {
    const size_t ws = kernels::reduce_workspace_bytes(n);
    return kernels::sum_squares(x, n, workspace(ws), ws, stream_);
  }

  // ---- linear layers (row-major through column-major cuBLAS) ----
  // y[N,O] = x W^T  <=>  y^T (O x N) = W^T' x^T with W read as I x O.
  void linear_forward(float* y, const float* x, const float* W, int N, int I, int O) override {
    gemm(CUBLAS_OP_T, CUBLAS_OP_N, O, N, I, W, I, x, I, 0.0f, y, O);
  }
  void linear_backward(float* dx, float* dW, const float* dy, const float* x, const float* W,
                       int N, int I, int O, bool accumulate_dx) override {
    if (dx) gemm(CUBLAS_OP_N, CUBLAS_OP_N, I, N, O, W, I, dy, O, accumulate_dx ? 1.0f : 0.0f, dx, I);
    gemm(CUBLAS_OP_N, CUBLAS_OP_T, I, O, N, x, I, dy, O, 1.0f, dW, I);
  }
  void grouped_linear_forward(float* y, const float* x, const float* W,
                              const int64_t* offsets_host, int groups, int I, int O) override {
    for (int g = 0; g < groups; ++g) {
      const int64_t r0 = offsets_host[g], rows = offsets_host[g + 1] - r0;
      if (rows > 0)
        linear_forward(y + r0 * O, x + r0 * I, W + size_t(g) * O * I, int(rows), I, O);
    }
  }
  void grouped_linear_backward(float* dx, float* dW, const float* dy, const float* x,
                               const float* W, const int64_t* offsets_host, int groups, int I,
                               int O) override {
    for (int g = 0; g < groups; ++g) {
      const int64_t r0 = offsets_host[g], rows = offsets_host[g + 1] - r0;
      if (rows > 0)
        linear_backward(dx ? dx + r0 * I : nullptr, dW + size_t(g) * O * I, dy + r0 * O,
                        x + r0 * I, W + size_t(g) * O * I, int(rows), I, O, false);
    }
  }

  // ---- embedding, norm ----
  void embedding_forward(float* y, const float* table, const int32_t* tokens, int N,
                         int D) override {
    kernels::embedding_forward(y, table, tokens, N, D, stream_);
  }
  void embedding_backward(float* dtable, const float* dy, const int32_t* tokens, int N,
                          int D) override {
    kernels::embedding_backward(dtable, dy, tokens, N, D, stream_);
  }
  void rmsnorm_forward(float* y, float* rstd, const float* x, const float* w, int N, int D,
                       double eps) override {
    kernels::rmsnorm_forward(y, rstd, x, w, N, D, float(eps), stream_);
  }
  void rmsnorm_backward(float* dx, float* dw, const float* dy, const float* x, const float* w,
                        const float* rstd, int N, int D) override {
    const size_t ws = kernels::rmsnorm_backward_workspace_bytes(N, D);
    kernels::rmsnorm_backward(dx, dw, dy, x, w, rstd, N, D, workspace(ws), ws, stream_);
  }

  // ---- attention ----
  void rope_forward(float* qkv, int B, int S, int H, int hd, double theta) override {
    kernels::rope_forward(qkv, B, S, H, hd, theta, stream_);
  }
  void rope_backward(float* dqkv, int B, int S, int H, int hd, double theta) override {
    kernels::rope_backward(dqkv, B, S, H, hd, theta, stream_);
  }
  void attention_forward(float* out, float* lse, const float* qkv, int B, int S, int H,
                         int hd) override {
    kernels::attention_forward(out, lse, qkv, B, S, H, hd, stream_);
  }
  void attention_backward(float* dqkv, const float* dout, const float* out, const float* lse,
                          const float* qkv, int B, int S, int H, int hd) override {
    const size_t ws = kernels::attention_backward_workspace_bytes(B, S, H);
    kernels::attention_backward(dqkv, dout, out, lse, qkv, B, S, H, hd, workspace(ws), ws,
                                stream_);
  }

  // ---- SwiGLU ----
  void swiglu_forward(float* h, const float* a13, int N, int F) override {
    kernels::swiglu_forward(h, a13, N, F, stream_);
  }
  void swiglu_backward(float* da13, const float* dh, const float* a13, int N, int F) override {
    kernels::swiglu_backward(da13, dh, a13, N, F, stream_);
  }

  // ---- router ----
  void router_scores_forward(float* scores, const float* logits, int N, int E,
                             GateFn fn) override {
    kernels::router_scores_forward(scores, logits, N, E, fn == GateFn::Softmax, stream_);
  }
  void router_scores_backward(float* dlogits, const float* dscores, const float* scores, int N,
                              int E, GateFn fn) override {
    kernels::router_scores_backward(dlogits, dscores, scores, N, E, fn == GateFn::Softmax,
                                    stream_);
  }
  void topk_route(int32_t* expert_idx, float* gates, const float* scores, const float* bias,
                  int N, const RouteSpec& s) override {
    kernels::topk_route(expert_idx, gates, scores, bias, N, s.E, s.K,
                        s.bias_mode == BiasMode::Multiplicative, s.normalize,
                        float(s.route_scale), stream_);
  }
  void topk_route_backward(float* dscores, const float* dgates, const float* scores,
                           const int32_t* expert_idx, int N, const RouteSpec& s) override {
    kernels::topk_route_backward(dscores, dgates, scores, expert_idx, N, s.E, s.K, s.normalize,
                                 s.route_scale, stream_);
  }
  double aux_loss_forward_backward(float* dscores, const float* scores, const int32_t* expert_idx,
                                   int groups, int group_len, int E, int K, double alpha,
                                   double grad_scale) override {
    return kernels::aux_loss_forward_backward(dscores, scores, expert_idx, groups, group_len, E,
                                              K, alpha, grad_scale, stream_);
  }

  // ---- dispatch ----
  void dispatch_plan(int32_t* row_of_slot, int64_t* counts_host, const int32_t* expert_idx, int N,
                     int E, int K) override {
    const size_t ws = kernels::dispatch_plan_workspace_bytes(N, E, K);
    // Counts go to the front of the workspace, the kernel's own scratch after.
    const size_t counts_bytes = (size_t(E) * sizeof(int64_t) + 255) / 256 * 256;
    char* base = static_cast<char*>(workspace(counts_bytes + ws));
    int64_t* counts = reinterpret_cast<int64_t*>(base);
    kernels::dispatch_plan(row_of_slot, counts, expert_idx, N, E, K, base + counts_bytes, ws,
                           stream_);
    to_host(counts_host, counts, size_t(E) * sizeof(int64_t));
  }
  void permute_rows(float* xp, const float* x, const int32_t* row_of_slot, int N, int K,
                    int D) override {
    kernels::permute_rows(xp, x, row_of_slot, N, K, D, stream_);
  }
  void permute_rows_backward(float* dx, const float* dxp, const int32_t* row_of_slot, int N,
                             int K, int D) override {
    kernels::permute_rows_backward(dx, dxp, row_of_slot, N, K, D, stream_);
  }
  void combine_forward(float* y, const float* yp, const float* gates, const int32_t* row_of_slot,
                       int N, int K, int D) override {
    kernels::combine_forward(y, yp, gates, row_of_slot, N, K, D, stream_);
  }
  void combine_backward(float* dyp, float* dgates, const float* dy, const float* yp,
                        const float* gates, const int32_t* row_of_slot, int N, int K,
                        int D) override {
    kernels::combine_backward(dyp, dgates, dy, yp, gates, row_of_slot, N, K, D, stream_);
  }
  void gather_rows(float* dst, const float* src, const int32_t* index, int64_t rows,
                   int D) override {
    kernels::gather_rows(dst, src, index, rows, D, stream_);
  }

  // ---- loss, optimizer ----
  void cross_entropy(float* losses, float* dlogits, const float* logits, const int32_t* targets,
                     int N, int V, double grad_scale) override {
    kernels::cross_entropy(losses, dlogits, logits, targets, N, V, grad_scale, stream_);
  }
  void adamw_step(float* params, const float* grads, float* m, float* v, size_t n,
                  const AdamWParams& p) override {
    kernels::adamw_step(params, grads, m, v, n, p.lr, p.beta1, p.beta2, p.eps, p.weight_decay,
                        p.step, p.grad_scale, stream_);
  }

 private:
  void gemm(cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k, const float* A,
            int lda, const float* B, int ldb, float beta, float* C, int ldc) {
    const float alpha = 1.0f;
    cublas_check(cublasSgemm(blas_, ta, tb, m, n, k, &alpha, A, lda, B, ldb, &beta, C, ldc),
                 "sgemm");
  }
  // One scratch buffer, grown on demand (before the step loop settles, so
  // the steady state does not allocate).
  void* workspace(size_t bytes) {
    if (bytes > workspace_bytes_) {
      MOE_CUDA_CHECK(cudaStreamSynchronize(stream_));
      if (workspace_) MOE_CUDA_CHECK(cudaFree(workspace_));
      MOE_CUDA_CHECK(cudaMalloc(&workspace_, bytes));
      workspace_bytes_ = bytes;
    }
    return workspace_;
  }

  cudaStream_t stream_ = nullptr;
  cublasHandle_t blas_ = nullptr;
  void* workspace_ = nullptr;
  size_t workspace_bytes_ = 0;
};

}  // namespace

std::unique_ptr<Backend<float>> make_cuda_backend(int device) {
  return std::make_unique<CudaBackend>(device);
}

}  // namespace moe
