// The CPU backend: Backend<T, A> forwarding every op to the moe::cpu free
// functions with this backend's thread count. Host memory is device memory.
// Backend<float, bf16> is the bf16 mode: the exact-semantics reference for
// the CUDA backend's mixed precision (cpu_ops.h).
#include <omp.h>

#include <memory>
#include <string>

#include "backend/backend.h"
#include "backend/cpu/cpu_ops.h"

namespace moe {
namespace {

template <typename T, typename A>
class CpuBackend final : public Backend<T, A> {
 public:
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
    cpu::copy_bytes(dst, src_host, bytes);
  }
  void to_host(void* dst_host, const void* src, size_t bytes) override {
    cpu::copy_bytes(dst_host, src, bytes);
  }
  void copy(void* dst, const void* src, size_t bytes) override { cpu::copy_bytes(dst, src, bytes); }
  void zero(void* p, size_t bytes) override { cpu::zero_bytes(p, bytes); }

  // ---- elementwise and reductions ----
  void add_inplace(T* y, const T* x, size_t n) override { cpu::add_inplace(nt_, y, x, n); }
  void scale_inplace(T* x, double a, size_t n) override { cpu::scale_inplace(nt_, x, a, n); }
  double sum(const T* x, size_t n) override { return cpu::sum(nt_, x, n); }
  double sum_squares(const T* x, size_t n) override { return cpu::sum_squares(nt_, x, n); }

  // ---- linear ----
  void linear_forward(A* y, const A* x, const T* W, int N, int I, int O) override {
    cpu::linear_forward(nt_, y, x, W, N, I, O);
  }
  void linear_backward(A* dx, T* dW, const A* dy, const A* x, const T* W, int N, int I, int O,
                       bool accumulate_dx) override {
    cpu::linear_backward(nt_, dx, dW, dy, x, W, N, I, O, accumulate_dx);
  }
  void linear_forward_fp32(T* y, const A* x, const T* W, int N, int I, int O) override {
    cpu::linear_forward_fp32(nt_, y, x, W, N, I, O);
  }
  void linear_backward_fp32(A* dx, T* dW, const T* dy, const A* x, const T* W, int N, int I, int O,
                            bool accumulate_dx) override {
    cpu::linear_backward_fp32(nt_, dx, dW, dy, x, W, N, I, O, accumulate_dx);
  }
  void grouped_linear_forward(A* y, const A* x, const T* W, const int64_t* offsets_host, int groups,
                              int I, int O) override {
    cpu::grouped_linear_forward(nt_, y, x, W, offsets_host, groups, I, O);
  }
  void grouped_linear_backward(A* dx, T* dW, const A* dy, const A* x, const T* W,
                               const int64_t* offsets_host, int groups, int I, int O) override {
    cpu::grouped_linear_backward(nt_, dx, dW, dy, x, W, offsets_host, groups, I, O);
  }

  // ---- embedding, RMSNorm ----
  void embedding_forward(T* y, const T* table, const int32_t* tokens, int N, int D) override {
    cpu::embedding_forward(nt_, y, table, tokens, N, D);
  }
  void embedding_backward(T* dtable, const T* dy, const int32_t* tokens, int N, int D) override {
    cpu::embedding_backward(nt_, dtable, dy, tokens, N, D);
  }
  void rmsnorm_forward(A* y, T* rstd, const T* x, const T* w, int N, int D, double eps) override {
    cpu::rmsnorm_forward(nt_, y, rstd, x, w, N, D, eps);
  }
  void rmsnorm_backward(T* dx, A* dx_act, T* dw, const A* dy, const T* x, const T* w,
                        const T* rstd, int N, int D) override {
    cpu::rmsnorm_backward(nt_, dx, dx_act, dw, dy, x, w, rstd, N, D);
  }
  void residual_rmsnorm_forward(T* sum, A* y, T* rstd, const T* resid, const A* delta, const T* w,
                                int N, int D, double eps) override {
    cpu::residual_rmsnorm_forward(nt_, sum, y, rstd, resid, delta, w, N, D, eps);
  }

  // ---- attention ----
  void rope_forward(A* qkv, int B, int S, int H, int hd, double theta) override {
    cpu::rope_forward(nt_, qkv, B, S, H, hd, theta);
  }
  void rope_backward(A* dqkv, int B, int S, int H, int hd, double theta) override {
    cpu::rope_backward(nt_, dqkv, B, S, H, hd, theta);
  }
  void attention_forward(A* out, T* lse, const A* qkv, int B, int S, int H, int hd) override {
    cpu::attention_forward(nt_, out, lse, qkv, B, S, H, hd);
  }
  void attention_backward(A* dqkv, const A* dout, const A* out, const T* lse, const A* qkv, int B,
                          int S, int H, int hd) override {
    cpu::attention_backward(nt_, dqkv, dout, out, lse, qkv, B, S, H, hd);
  }

  // ---- SwiGLU, router ----
  void swiglu_forward(A* h, const A* a13, int N, int F) override {
    cpu::swiglu_forward(nt_, h, a13, N, F);
  }
  void swiglu_backward(A* da13, const A* dh, const A* a13, int N, int F) override {
    cpu::swiglu_backward(nt_, da13, dh, a13, N, F);
  }
  void router_scores_forward(T* scores, const T* logits, int N, int E, GateFn fn) override {
    cpu::router_scores_forward(nt_, scores, logits, N, E, fn);
  }
  void router_scores_backward(T* dlogits, const T* dscores, const T* scores, int N, int E,
                              GateFn fn) override {
    cpu::router_scores_backward(nt_, dlogits, dscores, scores, N, E, fn);
  }
  void topk_route(int32_t* expert_idx, T* gates, const T* scores, const float* bias, int N,
                  const RouteSpec& spec) override {
    cpu::topk_route(nt_, expert_idx, gates, scores, bias, N, spec);
  }
  void topk_route_backward(T* dscores, const T* dgates, const T* scores, const int32_t* expert_idx,
                           int N, const RouteSpec& spec) override {
    cpu::topk_route_backward(nt_, dscores, dgates, scores, expert_idx, N, spec);
  }
  double aux_loss_forward_backward(T* dscores, const T* scores, const int32_t* expert_idx,
                                   int groups, int group_len, int E, int K, double alpha,
                                   double grad_scale) override {
    return cpu::aux_loss_forward_backward(nt_, dscores, scores, expert_idx, groups, group_len, E, K,
                                          alpha, grad_scale);
  }

  // ---- dispatch ----
  void dispatch_plan(int32_t* row_of_slot, int64_t* counts_host, const int32_t* expert_idx, int N,
                     int E, int K) override {
    cpu::dispatch_plan(row_of_slot, counts_host, expert_idx, N, E, K);
  }
  void gather_rows(A* dst, const A* src, const int32_t* index, int64_t rows, int D) override {
    cpu::gather_rows(nt_, dst, src, index, rows, D);
  }
  void permute_rows(A* xp, const A* x, const int32_t* row_of_slot, int N, int K, int D) override {
    cpu::permute_rows(nt_, xp, x, row_of_slot, N, K, D);
  }
  void permute_rows_backward(A* dx, const A* dxp, const int32_t* row_of_slot, int N, int K,
                             int D) override {
    cpu::permute_rows_backward(nt_, dx, dxp, row_of_slot, N, K, D);
  }
  void combine_forward(A* y, const A* yp, const T* gates, const int32_t* row_of_slot, int N, int K,
                       int D) override {
    cpu::combine_forward(nt_, y, yp, gates, row_of_slot, N, K, D);
  }
  void combine_backward(A* dyp, T* dgates, const A* dy, const A* yp, const T* gates,
                        const int32_t* row_of_slot, int N, int K, int D) override {
    cpu::combine_backward(nt_, dyp, dgates, dy, yp, gates, row_of_slot, N, K, D);
  }

  // ---- loss, optimizer ----
  void cross_entropy(T* losses, A* dlogits, const A* logits, const int32_t* targets, int N, int V,
                     double grad_scale) override {
    cpu::cross_entropy(nt_, losses, dlogits, logits, targets, N, V, grad_scale);
  }
  void adamw_step(T* params, const T* grads, T* m, T* v, size_t n, const AdamWParams& p) override {
    cpu::adamw_step(nt_, params, grads, m, v, n, p);
  }

 private:
  int nt_;
};

}  // namespace

template <typename T, typename A>
std::unique_ptr<Backend<T, A>> make_cpu_backend(int threads) {
  return std::make_unique<CpuBackend<T, A>>(threads);
}

template std::unique_ptr<Backend<float>> make_cpu_backend<float>(int);
template std::unique_ptr<Backend<double>> make_cpu_backend<double>(int);
template std::unique_ptr<Backend<float, bf16>> make_cpu_backend<float, bf16>(int);

}  // namespace moe
