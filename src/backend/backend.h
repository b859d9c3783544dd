// The Backend interface: every op the model needs, forward and backward.
//
// Model code (src/model, src/moe) is written once against this interface; the
// CPU (OpenBLAS + OpenMP) and CUDA backends differ only below it. Two element
// types (docs/design.md section 2, "Precision"):
// - T, parameters and everything kept in full precision: master weights,
//   gradients, AdamW moments, the residual stream and its gradient, the
//   router (logits, scores, gates), norm and softmax statistics, losses;
// - A, activations between ops: norm outputs, q/k/v, attention output,
//   SwiGLU inputs and outputs, expert rows and outputs, logits, and the
//   gradients of all of these.
// Backend<float> (A = T = float) trains in fp32, Backend<double> is the fp64
// reference of the gradient-check tests (CPU only), Backend<float, bf16> is
// bf16 training: bf16 activations, matmuls on bf16 operands (weights rounded
// to bf16) with fp32 accumulation, everything else computed in fp32.
//
// Conventions (all row-major):
// - A linear layer stores W as [out, in] and computes y = x W^T.
// - "+=" in a comment means the op accumulates into its output; every other
//   output is overwritten.
// - Index arrays (tokens, expert ids, permutations) are int32 in backend memory.
// - Pointers are backend memory unless a parameter name ends in _host.
// - Token layout is [B, T] flattened to N = B*T rows.
#pragma once

#include <array>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <unordered_map>

#include "config/config.h"
#include "core/bf16.h"

namespace moe {

struct AdamWParams {
  double lr = 1e-3;
  double beta1 = 0.9;
  double beta2 = 0.95;
  double eps = 1e-8;
  double weight_decay = 0.0;
  // Weight decay applies to elements [0, decay_count) only, so one call (one
  // launch) updates the decayed matrices and the undecayed rest together.
  size_t decay_count = SIZE_MAX;
  int64_t step = 1;          // 1-based, for bias correction
  double grad_scale = 1.0;   // multiplies the gradient first (global-norm clipping)
};

// Which experts a token picked and with what gate; the router's output.
struct RouteSpec {
  int E = 0;                                 // routed experts
  int K = 0;                                 // experts per token
  BiasMode bias_mode = BiasMode::Additive;   // s + b or s * b decides selection
  bool normalize = false;                    // gates /= sum of selected scores
  double route_scale = 1.0;                  // gates *= route_scale
};

// Where a step spends its time (moe-bench, docs/bench.md). Model code marks
// the op groups with PhaseScope; whatever is not marked is Other.
enum class Phase { Attention, ExpertGemm, Dispatch, Router, Optimizer, Other };
constexpr int kPhaseCount = 6;
using PhaseSeconds = std::array<double, kPhaseCount>;  // indexed by int(Phase)

inline const char* phase_name(Phase p) {
  switch (p) {
    case Phase::Attention: return "attention";
    case Phase::ExpertGemm: return "expert_gemm";
    case Phase::Dispatch: return "dispatch";
    case Phase::Router: return "router";
    case Phase::Optimizer: return "optimizer";
    case Phase::Other: return "other";
  }
  return "?";
}

// What every backend has whatever its element types: memory, phase timing
// and allocation accounting. Arenas, parameter sets and phase scopes need
// only this.
class BackendBase {
 public:
  virtual ~BackendBase() = default;
  virtual std::string name() const = 0;

  // ---- phase timing (instrumentation, never changes a result) ----
  // With timing on, the time from one set_phase() to the next is charged to
  // the earlier phase; with it off set_phase() only stores the phase (no
  // clock read). The base implementation reads the host clock, exact for a
  // synchronous backend; an asynchronous one overrides the three
  // phase_clock_* hooks below to timestamp its own work queue instead.
  virtual void set_phase_timing(bool on) {
    if (on && !timing_) phase_clock_start();
    if (!on && timing_) phase_clock_collect();  // pending time is dropped
    timing_ = on;
  }
  bool phase_timing() const { return timing_; }
  virtual void set_phase(Phase p) {
    if (p == phase_) return;
    if (timing_) phase_clock_mark(phase_);
    phase_ = p;
  }
  virtual Phase current_phase() const { return phase_; }
  // Seconds per phase since the last take (or since timing was turned on),
  // the current phase charged up to now; resets. All zero with timing off.
  virtual PhaseSeconds take_phase_seconds() {
    if (!timing_) return PhaseSeconds{};
    phase_clock_mark(phase_);
    return phase_clock_collect();
  }

  // ---- memory accounting ----
  // Bytes currently allocated through alloc_bytes and their high-water mark
  // since construction (or the last reset). 0 from a backend that does not
  // count (it calls neither count_alloc nor count_free).
  virtual size_t current_bytes() const { return mem_current_; }
  virtual size_t peak_bytes() const { return mem_peak_; }
  void reset_peak_bytes() { mem_peak_ = mem_current_; }

  // ---- memory ----
  virtual void* alloc_bytes(size_t bytes) = 0;  // zero-initialised
  virtual void free_bytes(void* p) = 0;
  virtual void to_device(void* dst, const void* src_host, size_t bytes) = 0;
  virtual void to_host(void* dst_host, const void* src, size_t bytes) = 0;
  virtual void copy(void* dst, const void* src, size_t bytes) = 0;
  virtual void zero(void* p, size_t bytes) = 0;
  virtual void synchronize() {}
  // [p, p + bytes) of this backend's memory was written by something other
  // than its own calls (a device communicator, NcclComm): whatever the
  // backend derived from it (the CUDA bf16 path's weight copies) is stale.
  virtual void written_elsewhere(const void* p, size_t bytes) { (void)p, (void)bytes; }
  // The queue this backend's work runs on (a cudaStream_t for CUDA), owned by
  // the backend: a communicator that moves backend memory orders its work
  // after it (NcclComm). Null for a synchronous backend.
  virtual void* native_stream() const { return nullptr; }

 protected:
  // Phase clock. start: timing begins now (the first mark). mark(ended): a
  // timestamp "now" in the order of this backend's work, closing an interval
  // of phase `ended` that began at the previous mark. collect: the summed
  // seconds per phase of the closed intervals (waiting for them if needed);
  // forgets them, and the last mark stays the start of the next interval.
  // mark must not throw (it runs in PhaseScope destructors): an asynchronous
  // backend defers its errors to collect.
  virtual void phase_clock_start() {
    clock_last_ = std::chrono::steady_clock::now();
    clock_sum_ = PhaseSeconds{};
  }
  virtual void phase_clock_mark(Phase ended) {
    const auto now = std::chrono::steady_clock::now();
    clock_sum_[int(ended)] += std::chrono::duration<double>(now - clock_last_).count();
    clock_last_ = now;
  }
  virtual PhaseSeconds phase_clock_collect() {
    const PhaseSeconds out = clock_sum_;
    clock_sum_ = PhaseSeconds{};
    return out;
  }

  // Allocation accounting for alloc_bytes/free_bytes overrides: count_alloc
  // after a successful allocation, count_free before releasing (a pointer it
  // does not know, e.g. null, counts nothing).
  void count_alloc(const void* p, size_t bytes) {
    sizes_[p] = bytes;
    mem_current_ += bytes;
    if (mem_current_ > mem_peak_) mem_peak_ = mem_current_;
  }
  // Bytes of the live allocation at p (0 if p is not one).
  size_t allocation_size(const void* p) const {
    const auto it = sizes_.find(p);
    return it == sizes_.end() ? 0 : it->second;
  }
  void count_free(const void* p) {
    const auto it = sizes_.find(p);
    if (it == sizes_.end()) return;
    mem_current_ -= it->second;
    sizes_.erase(it);
  }

 private:
  Phase phase_ = Phase::Other;
  bool timing_ = false;
  std::chrono::steady_clock::time_point clock_last_{};
  PhaseSeconds clock_sum_{};
  std::unordered_map<const void*, size_t> sizes_;
  size_t mem_current_ = 0, mem_peak_ = 0;
};

// The ops. T: parameters and full-precision state; A: activations (see the
// top of this file for which buffer has which type).
template <typename T, typename A = T>
class Backend : public BackendBase {
 public:
  using Param = T;
  using Act = A;

  // ---- elementwise and reductions (parameters, gradients, losses) ----
  virtual void add_inplace(T* y, const T* x, size_t n) = 0;  // y += x
  virtual void scale_inplace(T* x, double a, size_t n) = 0;  // x *= a
  virtual double sum(const T* x, size_t n) = 0;              // fp64 accumulation
  virtual double sum_squares(const T* x, size_t n) = 0;      // fp64 accumulation

  // ---- linear layers ----
  // y[N,O] = x[N,I] W[O,I]^T. With A = bf16, W is read rounded to bf16 and
  // the products accumulate in fp32.
  virtual void linear_forward(A* y, const A* x, const T* W, int N, int I, int O) = 0;
  // dx[N,I] (= or += by accumulate_dx) dy W ; dW[O,I] += dy^T x (in T). dx may be null.
  virtual void linear_backward(A* dx, T* dW, const A* dy, const A* x, const T* W, int N, int I,
                               int O, bool accumulate_dx) = 0;
  // The router's matmul (docs/design.md section 2): the same two ops with T
  // logits and their gradient, computed in full T precision from the
  // activation x (exact in T) and the unrounded W.
  virtual void linear_forward_fp32(T* y, const A* x, const T* W, int N, int I, int O) = 0;
  virtual void linear_backward_fp32(A* dx, T* dW, const T* dy, const A* x, const T* W, int N,
                                    int I, int O, bool accumulate_dx) = 0;
  // Grouped (one per expert): rows [offsets[g], offsets[g+1]) use W + g*O*I.
  // offsets_host has groups+1 entries; groups with no rows are skipped.
  virtual void grouped_linear_forward(A* y, const A* x, const T* W, const int64_t* offsets_host,
                                      int groups, int I, int O) = 0;
  // dx = dy W_g (overwritten; null skips it); dW_g += dy^T x (in T).
  virtual void grouped_linear_backward(A* dx, T* dW, const A* dy, const A* x, const T* W,
                                       const int64_t* offsets_host, int groups, int I, int O) = 0;

  // ---- embedding (into the residual stream, T) ----
  virtual void embedding_forward(T* y, const T* table, const int32_t* tokens, int N, int D) = 0;
  virtual void embedding_backward(T* dtable, const T* dy, const int32_t* tokens, int N,
                                  int D) = 0;  // dtable +=

  // ---- RMSNorm: y = x / sqrt(mean(x^2) + eps) * w; rstd[N] saved ----
  // x is the residual stream (T), y a norm output (A).
  virtual void rmsnorm_forward(A* y, T* rstd, const T* x, const T* w, int N, int D,
                               double eps) = 0;
  // dx +=, dw +=. dx is the residual stream's gradient; dx_act, if
  // non-null, receives dx after the add as A: the output gradient of the
  // sub-block below (whose output was added to the stream).
  virtual void rmsnorm_backward(T* dx, A* dx_act, T* dw, const A* dy, const T* x, const T* w,
                                const T* rstd, int N, int D) = 0;
  // The residual add fused with the norm after it (one pass over the rows):
  // sum = resid + delta, then y = RMSNorm(sum) as above. Same values as
  // copy + add + rmsnorm_forward. Its backward is rmsnorm_backward on sum
  // (the add passes the gradient through).
  virtual void residual_rmsnorm_forward(T* sum, A* y, T* rstd, const T* resid, const A* delta,
                                        const T* w, int N, int D, double eps) = 0;

  // ---- attention over a fused qkv buffer [N, 3*H*hd] (q | k | v) ----
  // RoPE, rotate-half, on the q and k parts in place; position = index in sequence.
  virtual void rope_forward(A* qkv, int B, int S, int H, int hd, double theta) = 0;
  // Applies the inverse rotation to the q and k parts of dqkv in place.
  virtual void rope_backward(A* dqkv, int B, int S, int H, int hd, double theta) = 0;
  // Causal softmax attention, scale 1/sqrt(hd); out [N, H*hd]; lse [B,H,S]
  // (log-sum-exp of each query's scores, for the backward recomputation).
  virtual void attention_forward(A* out, T* lse, const A* qkv, int B, int S, int H, int hd) = 0;
  // dqkv overwritten.
  virtual void attention_backward(A* dqkv, const A* dout, const A* out, const T* lse,
                                  const A* qkv, int B, int S, int H, int hd) = 0;

  // ---- SwiGLU: a13 = [x W1^T | x W3^T] as [N, 2F]; h = silu(a1) * a3 ----
  virtual void swiglu_forward(A* h, const A* a13, int N, int F) = 0;
  virtual void swiglu_backward(A* da13, const A* dh, const A* a13, int N, int F) = 0;

  // ---- router (T throughout) ----
  // scores = sigmoid(logits) or softmax over the E experts of each token.
  virtual void router_scores_forward(T* scores, const T* logits, int N, int E, GateFn fn) = 0;
  virtual void router_scores_backward(T* dlogits, const T* dscores, const T* scores, int N, int E,
                                      GateFn fn) = 0;
  // Selects, per token, the K experts with the largest s+b (or s*b); ties go
  // to the lower index; experts listed in selection order. gates = unbiased s
  // of the selected experts (optionally normalised and scaled). bias is fp32
  // backend memory of E entries; null selects on s alone. Total for any keys
  // (topk_order.h: NaN sorts below -inf): always K distinct experts in [0, E).
  virtual void topk_route(int32_t* expert_idx, T* gates, const T* scores, const float* bias,
                          int N, const RouteSpec& spec) = 0;
  // dscores += d(gates)/d(scores)^T dgates.
  virtual void topk_route_backward(T* dscores, const T* dgates, const T* scores,
                                   const int32_t* expert_idx, int N, const RouteSpec& spec) = 0;
  // Auxiliary balance loss (paper Eq. 2) over `groups` consecutive groups of
  // `group_len` tokens: sum_g alpha * sum_i f_gi P_gi with
  // f_gi = E/(K*group_len) * #(tokens of g picking i), P_gi = mean_t s_ti.
  // Returns that sum (host); dscores += grad_scale * d(sum)/d(scores)
  // (f is a constant of the selection and carries no gradient). Null dscores:
  // the loss only.
  virtual double aux_loss_forward_backward(T* dscores, const T* scores, const int32_t* expert_idx,
                                           int groups, int group_len, int E, int K, double alpha,
                                           double grad_scale) = 0;

  // ---- token dispatch (dropless; rows are activations) ----
  // Stable counting sort of the N*K (token, slot) pairs by expert: pairs of
  // expert e occupy rows [offsets[e], offsets[e+1]) in slot order. Writes
  // row_of_slot[t*K+k] (backend) and counts_host[E] (host).
  virtual void dispatch_plan(int32_t* row_of_slot, int64_t* counts_host, const int32_t* expert_idx,
                             int N, int E, int K) = 0;
  // xp[row_of_slot[t*K+k]] = x[t]
  virtual void permute_rows(A* xp, const A* x, const int32_t* row_of_slot, int N, int K,
                            int D) = 0;
  // dx[t] += sum_k dxp[row_of_slot[t*K+k]]
  virtual void permute_rows_backward(A* dx, const A* dxp, const int32_t* row_of_slot, int N, int K,
                                     int D) = 0;
  // y[t] += sum_k gates[t,k] * yp[row_of_slot[t*K+k]]
  virtual void combine_forward(A* y, const A* yp, const T* gates, const int32_t* row_of_slot,
                               int N, int K, int D) = 0;
  // dyp[row] = gates[t,k] * dy[t];  dgates[t,k] = <dy[t], yp[row]>  (both overwritten)
  virtual void combine_backward(A* dyp, T* dgates, const A* dy, const A* yp, const T* gates,
                                const int32_t* row_of_slot, int N, int K, int D) = 0;

  // dst[i] = src[index[i]] for i < rows (row reordering for expert parallelism).
  virtual void gather_rows(A* dst, const A* src, const int32_t* index, int64_t rows, int D) = 0;

  // ---- loss ----
  // losses[t] = -log softmax(logits[t])[target[t]], computed in T from the
  // A logits. If dlogits is non-null it receives grad_scale * (softmax -
  // onehot); it may alias logits.
  virtual void cross_entropy(T* losses, A* dlogits, const A* logits, const int32_t* targets, int N,
                             int V, double grad_scale) = 0;

  // ---- optimizer ----
  virtual void adamw_step(T* params, const T* grads, T* m, T* v, size_t n,
                          const AdamWParams& p) = 0;
};

// Charges the backend's work in this scope to phase p and restores the
// previous phase on exit, so scopes nest (an inner scope of the same phase
// costs nothing).
class PhaseScope {
 public:
  PhaseScope(BackendBase& be, Phase p) : be_(be), prev_(be.current_phase()) { be.set_phase(p); }
  ~PhaseScope() { be_.set_phase(prev_); }
  PhaseScope(const PhaseScope&) = delete;
  PhaseScope& operator=(const PhaseScope&) = delete;

 private:
  BackendBase& be_;
  Phase prev_;
};

// Typed allocation helper over the byte interface.
template <typename U>
U* alloc_array(BackendBase& be, size_t n) {
  return static_cast<U*>(be.alloc_bytes(n * sizeof(U)));
}

// Creates the CPU backend (OpenBLAS + OpenMP). threads <= 0: all cores.
// Instantiated for <float>, <double> and <float, bf16>.
template <typename T, typename A = T>
std::unique_ptr<Backend<T, A>> make_cpu_backend(int threads = 0);

// Creates the CUDA backend on `device` (defined only in builds with CUDA,
// MOE_WITH_CUDA), for A = float (fp32 cuBLAS GEMMs without TF32: the exact
// mirror of the CPU backend) or A = bf16 (bf16 activations, bf16 matmul
// operands with fp32 accumulation, fp32 master weights and statistics: the
// mirror of the CPU's bf16 mode; src/backend/cuda/bf16_linear.h). Programs
// choose it through src/apps/backend_choice.h (train.backend).
template <typename A = float>
std::unique_ptr<Backend<float, A>> make_cuda_backend(int device);

}  // namespace moe
