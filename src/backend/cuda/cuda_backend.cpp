// The CUDA backend: Backend<float, A> over the kernels in kernels/ and
// cuBLAS, all on one stream, for the two activation types:
// - A = float (train.precision float32): cuBLAS SGEMM without TF32, the exact
//   mirror of the CPU backend, so the GPU path can be checked op by op and
//   step by step against it (tests/gpu/test_gpu_backend.cpp);
// - A = bf16 (bfloat16): activations bf16 in memory, matmuls on bf16
//   operands with fp32 accumulation (Bf16Linear), everything else computed
//   in fp32; the mirror of the CPU backend's bf16 mode. The router's matmul
//   stays fp32 SGEMM (its bf16 input widened exactly into staging).
// Phase timing (moe-bench) uses CUDA events on the stream.
#include <cublas_v2.h>

#include <map>
#include <memory>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "backend/backend.h"
#include "backend/cuda/bf16_linear.h"
#include "backend/cuda/cuda_device.h"
#include "core/error.h"
#include "kernels.h"
#include "router.h"

namespace moe {
namespace {

void check(cublasStatus_t st, const char* what) { cublas_check(int(st), what); }

// Backend element pointers as the kernels' types (moe::bf16 and CUDA's
// __nv_bfloat16 share their bits).
float* dev(float* p) { return p; }
const float* dev(const float* p) { return p; }
__nv_bfloat16* dev(bf16* p) { return reinterpret_cast<__nv_bfloat16*>(p); }
const __nv_bfloat16* dev(const bf16* p) { return reinterpret_cast<const __nv_bfloat16*>(p); }

template <typename A>
class CudaBackend final : public Backend<float, A> {
  static constexpr bool kBf16 = is_bf16_v<A>;
  using Base = Backend<float, A>;

 public:
  using Param = float;
  using Act = A;

  explicit CudaBackend(int device) {
    MOE_CUDA_CHECK(cudaSetDevice(device));
    MOE_CUDA_CHECK(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
    check(cublasCreate(&blas_), "create");
    check(cublasSetStream(blas_, stream_), "set stream");
    // Full fp32: no TF32 shortcuts, so results match the CPU reference.
    check(cublasSetMathMode(blas_, CUBLAS_PEDANTIC_MATH), "math mode");
    if constexpr (kBf16) bf16_ = std::make_unique<Bf16Linear>(stream_);
  }
  ~CudaBackend() override {
    for (cudaEvent_t e : event_pool_) cudaEventDestroy(e);
    for (auto& m : marks_) cudaEventDestroy(m.second);
    if (last_mark_) cudaEventDestroy(last_mark_);
    bf16_.reset();
    if (workspace_) cudaFree(workspace_);
    for (auto& st : staging_) cudaFree(st.p);
    cublasDestroy(blas_);
    cudaStreamDestroy(stream_);
  }
  std::string name() const override { return bf16_ ? "cuda-bf16" : "cuda-fp32"; }

  // ---- memory accounting: the bf16 weight copies and scratch count too ----
  size_t current_bytes() const override {
    return Base::current_bytes() + held_bytes();
  }
  size_t peak_bytes() const override {  // held buffers only grow, so peak + now held
    return Base::peak_bytes() + held_bytes();
  }

  // ---- memory ----
  void* alloc_bytes(size_t bytes) override {
    void* p = nullptr;
    MOE_CUDA_CHECK(cudaMalloc(&p, bytes == 0 ? 1 : bytes));
    MOE_CUDA_CHECK(cudaMemsetAsync(p, 0, bytes == 0 ? 1 : bytes, stream_));
    MOE_CUDA_CHECK(cudaStreamSynchronize(stream_));
    this->count_alloc(p, bytes);
    return p;
  }
  void free_bytes(void* p) override {
    if (bf16_) bf16_->forget(p, this->allocation_size(p));
    this->count_free(p);
    cudaFree(p);
  }
  // Every op below that can write a weight (a parameter region) tells the
  // bf16 path, whose weight copies are then stale; the other ops write
  // activations or gradients only.
  void to_device(void* dst, const void* src, size_t bytes) override {
    written(dst, bytes);
    MOE_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, stream_));
    MOE_CUDA_CHECK(cudaStreamSynchronize(stream_));  // src may be reused at once
  }
  void to_host(void* dst, const void* src, size_t bytes) override {
    MOE_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, stream_));
    MOE_CUDA_CHECK(cudaStreamSynchronize(stream_));
  }
  void written_elsewhere(const void* p, size_t bytes) override { written(p, bytes); }
  void copy(void* dst, const void* src, size_t bytes) override {
    written(dst, bytes);
    MOE_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, stream_));
  }
  void zero(void* p, size_t bytes) override {
    written(p, bytes);
    MOE_CUDA_CHECK(cudaMemsetAsync(p, 0, bytes, stream_));
  }
  void synchronize() override { MOE_CUDA_CHECK(cudaStreamSynchronize(stream_)); }
  void* native_stream() const override { return stream_; }

  // ---- the ops (backend.h), defined below the class ----
  MOE_BACKEND_OPS(MOE_DECLARE_OVERRIDE)

 protected:
  // ---- phase timing with CUDA events on the stream (moe-bench) ----
  // A mark records an event where the host has queued the work so far; the
  // time between consecutive events is the GPU time of the phase in between.
  // mark must not throw: a failure is kept and reported by collect.
  void phase_clock_start() override {
    release_marks();
    if (!last_mark_) last_mark_ = take_event();
    if (last_mark_) record(last_mark_);
  }
  void phase_clock_mark(Phase ended) override {
    cudaEvent_t e = take_event();
    if (!e || !record(e)) return;
    marks_.emplace_back(ended, e);
  }
  PhaseSeconds phase_clock_collect() override {
    PhaseSeconds out{};
    const cudaError_t err = phase_error_;
    phase_error_ = cudaSuccess;
    MOE_CUDA_CHECK(err);
    for (auto& [phase, e] : marks_) {
      MOE_CUDA_CHECK(cudaEventSynchronize(e));
      float ms = 0;
      MOE_CUDA_CHECK(cudaEventElapsedTime(&ms, last_mark_, e));
      out[int(phase)] += ms * 1e-3;
      event_pool_.push_back(last_mark_);
      last_mark_ = e;  // the next interval starts here
    }
    marks_.clear();
    return out;
  }

 private:
  // bf16: the tensor-core kernels (kernels/attention_tc.cu) for head_dim 64
  // and 128 where the device has their shared memory; other head dims (and
  // hd 128 on sm_86/sm_89) run the fp32 flash kernel over widened copies
  // (staging), rounded once on the way out. Asked once per head dim.
  bool tensor_core_head_dim(int hd) {
    auto [it, fresh] = tc_head_dims_.try_emplace(hd, false);
    if (fresh) it->second = kernels::attention_tc_supported(hd);
    return it->second;
  }
  cudaEvent_t take_event() noexcept {
    if (!event_pool_.empty()) {
      cudaEvent_t e = event_pool_.back();
      event_pool_.pop_back();
      return e;
    }
    cudaEvent_t e = nullptr;
    if (const cudaError_t err = cudaEventCreate(&e); err != cudaSuccess) {
      if (phase_error_ == cudaSuccess) phase_error_ = err;
      return nullptr;
    }
    return e;
  }
  bool record(cudaEvent_t e) noexcept {
    const cudaError_t err = cudaEventRecord(e, stream_);
    if (err != cudaSuccess && phase_error_ == cudaSuccess) phase_error_ = err;
    return err == cudaSuccess;
  }
  void release_marks() {
    for (auto& m : marks_) event_pool_.push_back(m.second);
    marks_.clear();
  }

  void sgemm(cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k, const float* a,
             int lda, const float* b, int ldb, float beta, float* c, int ldc) {
    const float alpha = 1.0f;
    check(cublasSgemm(blas_, ta, tb, m, n, k, &alpha, a, lda, b, ldb, &beta, c, ldc), "sgemm");
  }
  // Device buffers of fp32 staging for bf16 activations, one per slot, grown
  // on demand with a synchronize first (queued work may still read the old
  // one); sizes settle in the first step, so the step loop does not allocate.
  template <typename U>
  U* staging(int slot, size_t n) {
    Staging& st = staging_[slot];
    const size_t bytes = n * sizeof(U);
    if (bytes > st.bytes) {
      MOE_CUDA_CHECK(cudaStreamSynchronize(stream_));
      if (st.p) MOE_CUDA_CHECK(cudaFree(st.p));
      st.p = nullptr;
      st.bytes = 0;
      MOE_CUDA_CHECK(cudaMalloc(&st.p, bytes));
      st.bytes = bytes;
    }
    return static_cast<U*>(st.p);
  }
  // x as fp32: itself, or (bf16) its exact widening in staging slot `slot`.
  const float* widened(int slot, const A* x, size_t n) {
    if constexpr (kBf16) {
      float* f = staging<float>(slot, n);
      kernels::bf16_to_float(f, dev(x), n, false, stream_);
      return f;
    } else {
      (void)slot, (void)n;
      return x;
    }
  }
  size_t held_bytes() const {
    size_t b = bf16_ ? bf16_->bytes_held() : 0;
    for (const auto& st : staging_) b += st.bytes;
    return b;
  }
  void written(const void* p, size_t bytes) {
    if (bf16_) bf16_->invalidate(p, bytes);
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

  std::map<int, bool> tc_head_dims_;  // head_dim -> attention_tc_supported (tensor_core_head_dim)
  cudaStream_t stream_ = nullptr;
  cublasHandle_t blas_ = nullptr;
  void* workspace_ = nullptr;
  size_t workspace_bytes_ = 0;
  std::unique_ptr<Bf16Linear> bf16_;  // A = bf16 only
  struct Staging {
    void* p = nullptr;
    size_t bytes = 0;
  };
  Staging staging_[4];
  // Phase timing: the interval start and the marks not yet collected.
  cudaEvent_t last_mark_ = nullptr;
  std::vector<std::pair<Phase, cudaEvent_t>> marks_;
  std::vector<cudaEvent_t> event_pool_;
  cudaError_t phase_error_ = cudaSuccess;
};

// ---- elementwise and reductions ----
template <typename A>
void CudaBackend<A>::add_inplace(float* y, const float* x, size_t n) {
  written(y, n * sizeof(float));
  kernels::add_inplace(y, x, n, stream_);
}

template <typename A>
void CudaBackend<A>::scale_inplace(float* x, double a, size_t n) {
  written(x, n * sizeof(float));
  kernels::scale_inplace(x, a, n, stream_);
}

template <typename A>
double CudaBackend<A>::sum(const float* x, size_t n) {
  const size_t ws = kernels::reduce_workspace_bytes(n);
  return kernels::sum(x, n, workspace(ws), ws, stream_);
}

template <typename A>
double CudaBackend<A>::sum_squares(const float* x, size_t n) {
  const size_t ws = kernels::reduce_workspace_bytes(n);
  return kernels::sum_squares(x, n, workspace(ws), ws, stream_);
}

// ---- linear layers (row-major through column-major cuBLAS) ----
// y[N,O] = x W^T  <=>  y^T (O x N) = W^T' x^T with W read as I x O.
template <typename A>
void CudaBackend<A>::linear_forward(A* y, const A* x, const float* W, int N, int I, int O) {
  if constexpr (kBf16)
    bf16_->forward(dev(y), dev(x), W, N, I, O);
  else
    sgemm(CUBLAS_OP_T, CUBLAS_OP_N, O, N, I, W, I, x, I, 0.0f, y, O);
}

template <typename A>
void CudaBackend<A>::linear_backward(A* dx, float* dW, const A* dy, const A* x, const float* W,
                                     int N, int I, int O, bool accumulate_dx) {
  if constexpr (kBf16) {
    bf16_->backward(dx ? dev(dx) : nullptr, dW, dev(dy), dev(x), W, N, I, O, accumulate_dx);
  } else {
    if (dx)
      sgemm(CUBLAS_OP_N, CUBLAS_OP_N, I, N, O, W, I, dy, O, accumulate_dx ? 1.0f : 0.0f, dx, I);
    sgemm(CUBLAS_OP_N, CUBLAS_OP_T, I, O, N, x, I, dy, O, 1.0f, dW, I);
  }
}

// The router: fp32 SGEMM; a bf16 input is widened (exactly) into staging
// first, and a bf16 dx gets the fp32 product added with one rounding.
template <typename A>
void CudaBackend<A>::router_linear_forward(float* y, const A* x, const float* W, int N, int I,
                                           int O) {
  sgemm(CUBLAS_OP_T, CUBLAS_OP_N, O, N, I, W, I, widened(0, x, size_t(N) * I), I, 0.0f, y, O);
}

template <typename A>
void CudaBackend<A>::router_linear_backward(A* dx, float* dW, const float* dy, const A* x,
                                            const float* W, int N, int I, int O,
                                            bool accumulate_dx) {
  if (dx) {
    if constexpr (kBf16) {
      float* dxf = staging<float>(1, size_t(N) * I);
      sgemm(CUBLAS_OP_N, CUBLAS_OP_N, I, N, O, W, I, dy, O, 0.0f, dxf, I);
      if (accumulate_dx)
        kernels::bf16_add_float(dev(dx), dxf, size_t(N) * I, stream_);
      else
        kernels::float_to_bf16(dev(dx), dxf, size_t(N) * I, stream_);
    } else {
      sgemm(CUBLAS_OP_N, CUBLAS_OP_N, I, N, O, W, I, dy, O, accumulate_dx ? 1.0f : 0.0f, dx, I);
    }
  }
  sgemm(CUBLAS_OP_N, CUBLAS_OP_T, I, O, N, widened(0, x, size_t(N) * I), I, dy, O, 1.0f, dW, I);
}

// fp32: one SGEMM per expert with tokens (the exact reference); bf16: one
// grouped GEMM for all experts.
template <typename A>
void CudaBackend<A>::grouped_linear_forward(A* y, const A* x, const float* W,
                                            const int64_t* offsets_host, int groups, int I, int O) {
  if constexpr (kBf16) {
    bf16_->grouped_forward(dev(y), dev(x), W, offsets_host, groups, I, O);
  } else {
    for (int g = 0; g < groups; ++g) {
      const int64_t r0 = offsets_host[g], rows = offsets_host[g + 1] - r0;
      if (rows > 0) linear_forward(y + r0 * O, x + r0 * I, W + size_t(g) * O * I, int(rows), I, O);
    }
  }
}

template <typename A>
void CudaBackend<A>::grouped_linear_backward(A* dx, float* dW, const A* dy, const A* x,
                                             const float* W, const int64_t* offsets_host,
                                             int groups, int I, int O) {
  if constexpr (kBf16) {
    bf16_->grouped_backward(dx ? dev(dx) : nullptr, dW, dev(dy), dev(x), W, offsets_host, groups,
                            I, O);
  } else {
    for (int g = 0; g < groups; ++g) {
      const int64_t r0 = offsets_host[g], rows = offsets_host[g + 1] - r0;
      if (rows > 0)
        linear_backward(dx ? dx + r0 * I : nullptr, dW + size_t(g) * O * I, dy + r0 * O,
                        x + r0 * I, W + size_t(g) * O * I, int(rows), I, O, false);
    }
  }
}

// ---- embedding, norm ----
template <typename A>
void CudaBackend<A>::embedding_forward(float* y, const float* table, const int32_t* tokens, int N,
                                       int D) {
  kernels::embedding_forward(y, table, tokens, N, D, stream_);
}

template <typename A>
void CudaBackend<A>::embedding_backward(float* dtable, const float* dy, const int32_t* tokens,
                                        int N, int D) {
  kernels::embedding_backward(dtable, dy, tokens, N, D, stream_);
}

template <typename A>
void CudaBackend<A>::rmsnorm_forward(A* y, float* rstd, const float* x, const float* w, int N,
                                     int D, double eps) {
  kernels::rmsnorm_forward(dev(y), rstd, x, w, N, D, float(eps), stream_);
}

template <typename A>
void CudaBackend<A>::residual_rmsnorm_forward(float* sum, A* y, float* rstd, const float* resid,
                                              const A* delta, const float* w, int N, int D,
                                              double eps) {
  kernels::residual_rmsnorm_forward(sum, dev(y), rstd, resid, dev(delta), w, N, D, float(eps),
                                    stream_);
}

template <typename A>
void CudaBackend<A>::rmsnorm_backward(float* dx, A* dx_act, float* dw, const A* dy, const float* x,
                                      const float* w, const float* rstd, int N, int D) {
  const size_t ws = kernels::rmsnorm_backward_workspace_bytes(N, D);
  kernels::rmsnorm_backward(dx, dx_act ? dev(dx_act) : nullptr, dw, dev(dy), x, w, rstd, N, D,
                            workspace(ws), ws, stream_);
}

// ---- attention ----
template <typename A>
void CudaBackend<A>::rope_forward(A* qkv, int B, int S, int H, int hd, double theta) {
  kernels::rope_forward(dev(qkv), B, S, H, hd, theta, stream_);
}

template <typename A>
void CudaBackend<A>::rope_backward(A* dqkv, int B, int S, int H, int hd, double theta) {
  kernels::rope_backward(dev(dqkv), B, S, H, hd, theta, stream_);
}

template <typename A>
void CudaBackend<A>::attention_forward(A* out, float* lse, const A* qkv, int B, int S, int H,
                                       int hd) {
  const size_t n_qkv = size_t(B) * S * 3 * H * hd, n_out = size_t(B) * S * H * hd;
  if constexpr (kBf16) {
    if (tensor_core_head_dim(hd))
      return kernels::attention_tc_forward(dev(out), lse, dev(qkv), B, S, H, hd, stream_);
    float* outf = staging<float>(1, n_out);
    kernels::attention_forward(outf, lse, widened(0, qkv, n_qkv), B, S, H, hd, stream_);
    kernels::float_to_bf16(dev(out), outf, n_out, stream_);
  } else {
    (void)n_qkv, (void)n_out;
    kernels::attention_forward(out, lse, qkv, B, S, H, hd, stream_);
  }
}

template <typename A>
void CudaBackend<A>::attention_backward(A* dqkv, const A* dout, const A* out, const float* lse,
                                        const A* qkv, int B, int S, int H, int hd) {
  const size_t ws = kernels::attention_backward_workspace_bytes(B, S, H);
  const size_t n_qkv = size_t(B) * S * 3 * H * hd, n_out = size_t(B) * S * H * hd;
  if constexpr (kBf16) {
    if (tensor_core_head_dim(hd)) {
      const size_t tc_ws = kernels::attention_tc_backward_workspace_bytes(B, S, H, hd);
      return kernels::attention_tc_backward(dev(dqkv), dev(dout), dev(out), lse, dev(qkv), B,
                                            S, H, hd, workspace(tc_ws), tc_ws, stream_);
    }
    float* dqkvf = staging<float>(3, n_qkv);
    kernels::attention_backward(dqkvf, widened(1, dout, n_out), widened(2, out, n_out), lse,
                                widened(0, qkv, n_qkv), B, S, H, hd, workspace(ws), ws, stream_);
    kernels::float_to_bf16(dev(dqkv), dqkvf, n_qkv, stream_);
  } else {
    (void)n_qkv, (void)n_out;
    kernels::attention_backward(dqkv, dout, out, lse, qkv, B, S, H, hd, workspace(ws), ws,
                                stream_);
  }
}

// ---- SwiGLU ----
template <typename A>
void CudaBackend<A>::swiglu_forward(A* h, const A* a13, int N, int F) {
  kernels::swiglu_forward(dev(h), dev(a13), N, F, stream_);
}

template <typename A>
void CudaBackend<A>::swiglu_backward(A* da13, const A* dh, const A* a13, int N, int F) {
  kernels::swiglu_backward(dev(da13), dev(dh), dev(a13), N, F, stream_);
}

// ---- router ----
template <typename A>
void CudaBackend<A>::router_scores_forward(float* scores, const float* logits, int N, int E,
                                           GateFn fn) {
  kernels::router_scores_forward(scores, logits, N, E, fn, stream_);
}

template <typename A>
void CudaBackend<A>::router_scores_backward(float* dlogits, const float* dscores,
                                            const float* scores, int N, int E, GateFn fn) {
  kernels::router_scores_backward(dlogits, dscores, scores, N, E, fn, stream_);
}

template <typename A>
void CudaBackend<A>::topk_route(int32_t* expert_idx, float* gates, const float* scores,
                                const float* bias, int N, const RouteSpec& spec) {
  kernels::topk_route(expert_idx, gates, scores, bias, N, spec, stream_);
}

template <typename A>
void CudaBackend<A>::topk_route_backward(float* dscores, const float* dgates, const float* scores,
                                         const int32_t* expert_idx, int N, const RouteSpec& spec) {
  kernels::topk_route_backward(dscores, dgates, scores, expert_idx, N, spec, stream_);
}

template <typename A>
double CudaBackend<A>::aux_loss_forward_backward(float* dscores, const float* scores,
                                                 const int32_t* expert_idx,
                                                 const AuxLossArgs& args) {
  return kernels::aux_loss_forward_backward(dscores, scores, expert_idx, args, stream_);
}

// ---- dispatch ----
template <typename A>
void CudaBackend<A>::dispatch_plan(int32_t* row_of_slot, int64_t* counts_host,
                                   const int32_t* expert_idx, int N, int E, int K) {
  const size_t ws = kernels::dispatch_plan_workspace_bytes(N, E, K);
  // Counts go to the front of the workspace, the kernel's own scratch after.
  const size_t counts_bytes = (size_t(E) * sizeof(int64_t) + 255) / 256 * 256;
  char* base = static_cast<char*>(workspace(counts_bytes + ws));
  int64_t* counts = reinterpret_cast<int64_t*>(base);
  kernels::dispatch_plan(row_of_slot, counts, expert_idx, N, E, K, base + counts_bytes, ws,
                         stream_);
  to_host(counts_host, counts, size_t(E) * sizeof(int64_t));
}

template <typename A>
void CudaBackend<A>::permute_rows(A* xp, const A* x, const int32_t* row_of_slot, int N, int K,
                                  int D) {
  kernels::permute_rows(dev(xp), dev(x), row_of_slot, N, K, D, stream_);
}

template <typename A>
void CudaBackend<A>::permute_rows_backward(A* dx, const A* dxp, const int32_t* row_of_slot, int N,
                                           int K, int D) {
  kernels::permute_rows_backward(dev(dx), dev(dxp), row_of_slot, N, K, D, stream_);
}

template <typename A>
void CudaBackend<A>::combine_forward(A* y, const A* yp, const float* gates,
                                     const int32_t* row_of_slot, int N, int K, int D) {
  kernels::combine_forward(dev(y), dev(yp), gates, row_of_slot, N, K, D, stream_);
}

template <typename A>
void CudaBackend<A>::combine_backward(A* dyp, float* dgates, const A* dy, const A* yp,
                                      const float* gates, const int32_t* row_of_slot, int N, int K,
                                      int D) {
  kernels::combine_backward(dev(dyp), dgates, dev(dy), dev(yp), gates, row_of_slot, N, K, D,
                            stream_);
}

template <typename A>
void CudaBackend<A>::gather_rows(A* dst, const A* src, const int32_t* index, int64_t rows, int D) {
  kernels::gather_rows(dev(dst), dev(src), index, rows, D, stream_);
}

// ---- loss, optimizer ----
template <typename A>
void CudaBackend<A>::cross_entropy(float* losses, A* dlogits, const A* logits,
                                   const int32_t* targets, int N, int V, double grad_scale) {
  kernels::cross_entropy(losses, dlogits ? dev(dlogits) : nullptr, dev(logits), targets, N, V,
                         grad_scale, stream_);
}

template <typename A>
void CudaBackend<A>::adamw_step(float* params, const float* grads, float* m, float* v, size_t n,
                                const AdamWParams& p) {
  written(params, n * sizeof(float));
  kernels::adamw_step(params, grads, m, v, n, p, stream_);
}

}  // namespace

template <typename A>
std::unique_ptr<Backend<float, A>> make_cuda_backend(int device) {
  return std::make_unique<CudaBackend<A>>(device);
}

template std::unique_ptr<Backend<float>> make_cuda_backend<float>(int);
template std::unique_ptr<Backend<float, bf16>> make_cuda_backend<bf16>(int);

}  // namespace moe
