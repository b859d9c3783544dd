// The Backend interface: every op the model needs, forward and backward.
//
// Model code (src/layers, src/moe, src/model) is written once against this interface; the
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

#include "core/bf16.h"
#include "core/op_args.h"

// ---- the ops, one X-macro list per op family ----
// Each entry is OP(return type, name, (parameters)), the parameters spelled
// with Param (T) and Act (A), which every backend class declares; a list is
// named after its family's files (MOE_OPS_ROUTER: cpu/router.cpp and
// kernels/router.cu, ...). This is the one declaration of each op's signature:
// Backend declares the lists pure virtual, each backend class declares them
// override (so the compiler checks every definition against this list), the
// CPU family files instantiate their own list, and the memory plan's
// counting backend is generated from it (docs/architecture.md, "A new op").
// Docs are /* */ comments: a // comment would swallow the rest of the macro.

// ---- elementwise (cpu/elementwise.cpp, kernels/elementwise.cu) ----
#define MOE_OPS_ELEMENTWISE(OP)                                                                    \
  /* y += x (parameters, gradients) */                                                             \
  OP(void, add_inplace, (Param* y, const Param* x, size_t n))                                      \
  /* x *= a */                                                                                     \
  OP(void, scale_inplace, (Param* x, double a, size_t n))                                          \
  /* Embedding into the residual stream (T): y[n] = table[tokens[n]]. */                           \
  OP(void, embedding_forward, (Param* y, const Param* table, const int32_t* tokens, int N, int D)) \
  /* dtable[tokens[n]] += dy[n] */                                                                 \
  OP(void, embedding_backward,                                                                     \
     (Param* dtable, const Param* dy, const int32_t* tokens, int N, int D))                        \
  /* SwiGLU: a13 = [x W1^T | x W3^T] as [N, 2F]; h = silu(a1) * a3. */                             \
  OP(void, swiglu_forward, (Act* h, const Act* a13, int N, int F))                                 \
  /* da13 overwritten. */                                                                          \
  OP(void, swiglu_backward, (Act* da13, const Act* dh, const Act* a13, int N, int F))

// ---- linear layers (cpu/linear.cpp; CUDA: cuBLAS and cuda/bf16_linear) ----
#define MOE_OPS_LINEAR(OP)                                                                       \
  /* y[N,O] = x[N,I] W[O,I]^T. With A = bf16, W is read rounded to bf16 and                      \
     the products accumulate in fp32. */                                                         \
  OP(void, linear_forward, (Act* y, const Act* x, const Param* W, int N, int I, int O))          \
  /* dx[N,I] (= or += by accumulate_dx) dy W ; dW[O,I] += dy^T x (in T). dx may be null. */      \
  OP(void, linear_backward, (Act* dx, Param* dW, const Act* dy, const Act* x, const Param* W,    \
                             int N, int I, int O, bool accumulate_dx))                           \
  /* The router's matmul (docs/design.md section 2): the same two ops with T                     \
     logits and their gradient, computed in full T precision from the                            \
     activation x (exact in T) and the unrounded W. */                                           \
  OP(void, router_linear_forward, (Param* y, const Act* x, const Param* W, int N, int I, int O)) \
  OP(void, router_linear_backward, (Act* dx, Param* dW, const Param* dy, const Act* x,           \
                                    const Param* W, int N, int I, int O, bool accumulate_dx))    \
  /* Grouped (one per expert): rows [offsets[g], offsets[g+1]) use W + g*O*I.                    \
     offsets_host has groups+1 entries; groups with no rows are skipped. */                      \
  OP(void, grouped_linear_forward, (Act* y, const Act* x, const Param* W,                        \
                                    const int64_t* offsets_host, int groups, int I, int O))      \
  /* dx = dy W_g (overwritten; null skips it); dW_g += dy^T x (in T). */                         \
  OP(void, grouped_linear_backward, (Act* dx, Param* dW, const Act* dy, const Act* x,            \
                                     const Param* W, const int64_t* offsets_host, int groups,    \
                                     int I, int O))

// ---- RMSNorm (cpu/rmsnorm.cpp, kernels/rmsnorm.cu) ----
// y = x / sqrt(mean(x^2) + eps) * w; rstd[N] saved. x is the residual stream
// (T), y a norm output (A).
#define MOE_OPS_RMSNORM(OP)                                                                        \
  OP(void, rmsnorm_forward,                                                                        \
     (Act* y, Param* rstd, const Param* x, const Param* w, int N, int D, double eps))              \
  /* dx +=, dw +=. dx is the residual stream's gradient; dx_act, if                                \
     non-null, receives dx after the add as A: the output gradient of the                          \
     sub-block below (whose output was added to the stream). */                                    \
  OP(void, rmsnorm_backward, (Param* dx, Act* dx_act, Param* dw, const Act* dy, const Param* x,    \
                              const Param* w, const Param* rstd, int N, int D))                    \
  /* The residual add fused with the norm after it (one pass over the rows):                       \
     sum = resid + delta, then y = RMSNorm(sum) as above. Same values as                           \
     copy + add + rmsnorm_forward. Its backward is rmsnorm_backward on sum                         \
     (the add passes the gradient through). */                                                     \
  OP(void, residual_rmsnorm_forward, (Param* sum, Act* y, Param* rstd, const Param* resid,         \
                                      const Act* delta, const Param* w, int N, int D, double eps))

// ---- attention over a fused qkv buffer [N, 3*H*hd] (q | k | v)
//      (cpu/attention.cpp, kernels/attention.cu and attention_tc.cu) ----
#define MOE_OPS_ATTENTION(OP)                                                                      \
  /* RoPE, rotate-half, on the q and k parts in place; position = index in sequence. */            \
  OP(void, rope_forward, (Act* qkv, int B, int S, int H, int hd, double theta))                    \
  /* Applies the inverse rotation to the q and k parts of dqkv in place. */                        \
  OP(void, rope_backward, (Act* dqkv, int B, int S, int H, int hd, double theta))                  \
  /* Causal softmax attention, scale 1/sqrt(hd); out [N, H*hd]; lse [B,H,S]                        \
     (log-sum-exp of each query's scores, for the backward recomputation). */                      \
  OP(void, attention_forward, (Act* out, Param* lse, const Act* qkv, int B, int S, int H, int hd)) \
  /* dqkv overwritten. */                                                                          \
  OP(void, attention_backward, (Act* dqkv, const Act* dout, const Act* out, const Param* lse,      \
                                const Act* qkv, int B, int S, int H, int hd))

// ---- router, T throughout (cpu/router.cpp, kernels/router.cu) ----
#define MOE_OPS_ROUTER(OP)                                                                         \
  /* scores = sigmoid(logits) or softmax over the E experts of each token. */                      \
  OP(void, router_scores_forward, (Param* scores, const Param* logits, int N, int E, GateFn fn))   \
  OP(void, router_scores_backward, (Param* dlogits, const Param* dscores, const Param* scores,     \
                                    int N, int E, GateFn fn))                                      \
  /* Selects, per token, the K experts with the largest s+b (or s*b); ties go                      \
     to the lower index; experts listed in selection order. gates = unbiased s                     \
     of the selected experts (optionally normalised and scaled). bias is fp32                      \
     backend memory of E entries; null selects on s alone. Total for any keys                      \
     (topk_order.h: NaN sorts below -inf): always K distinct experts in [0, E). */                 \
  OP(void, topk_route, (int32_t* expert_idx, Param* gates, const Param* scores, const float* bias, \
                        int N, const RouteSpec& spec))                                             \
  /* dscores += d(gates)/d(scores)^T dgates. */                                                    \
  OP(void, topk_route_backward, (Param* dscores, const Param* dgates, const Param* scores,         \
                                 const int32_t* expert_idx, int N, const RouteSpec& spec))         \
  /* Balance loss over args.groups consecutive groups of args.group_len                            \
     tokens (core/op_args.h AuxLossArgs): sum_g alpha * sum_i f_gi P_gi with                       \
     f_gi = E/(K*group_len) * #(tokens of g picking i), P_gi = mean_t p_ti,                        \
     p = s (paper Eq. 2) or, with normalize_affinities, p_ti = s_ti / sum_j s_tj                   \
     (DeepSeek-V3's sequence-wise loss). Returns that sum (host); dscores +=                       \
     grad_scale * d(sum)/d(scores) (f is a constant of the selection and                           \
     carries no gradient). Null dscores: the loss only. */                                         \
  OP(double, aux_loss_forward_backward,                                                            \
     (Param* dscores, const Param* scores, const int32_t* expert_idx, const AuxLossArgs& args))

// ---- token dispatch, dropless; rows are activations
//      (cpu/dispatch.cpp, kernels/dispatch.cu) ----
#define MOE_OPS_DISPATCH(OP)                                                                       \
  /* Stable counting sort of the N*K (token, slot) pairs by expert: pairs of                       \
     expert e occupy rows [offsets[e], offsets[e+1]) in slot order. Writes                         \
     row_of_slot[t*K+k] (backend) and counts_host[E] (host). */                                    \
  OP(void, dispatch_plan, (int32_t* row_of_slot, int64_t* counts_host,                             \
                           const int32_t* expert_idx, int N, int E, int K))                        \
  /* xp[row_of_slot[t*K+k]] = x[t] */                                                              \
  OP(void, permute_rows, (Act* xp, const Act* x, const int32_t* row_of_slot, int N, int K, int D)) \
  /* dx[t] += sum_k dxp[row_of_slot[t*K+k]] */                                                     \
  OP(void, permute_rows_backward,                                                                  \
     (Act* dx, const Act* dxp, const int32_t* row_of_slot, int N, int K, int D))                   \
  /* y[t] += sum_k gates[t,k] * yp[row_of_slot[t*K+k]] */                                          \
  OP(void, combine_forward, (Act* y, const Act* yp, const Param* gates,                            \
                             const int32_t* row_of_slot, int N, int K, int D))                     \
  /* dyp[row] = gates[t,k] * dy[t];  dgates[t,k] = <dy[t], yp[row]>  (both overwritten) */         \
  OP(void, combine_backward, (Act* dyp, Param* dgates, const Act* dy, const Act* yp,               \
                              const Param* gates, const int32_t* row_of_slot, int N, int K,        \
                              int D))                                                              \
  /* dst[i] = src[index[i]] for i < rows (row reordering for expert parallelism). */               \
  OP(void, gather_rows, (Act* dst, const Act* src, const int32_t* index, int64_t rows, int D))

// ---- reductions, loss, optimizer (cpu/loss_optim.cpp, kernels/loss_optim.cu) ----
#define MOE_OPS_LOSS_OPTIM(OP)                                                           \
  /* fp64 accumulation */                                                                \
  OP(double, sum, (const Param* x, size_t n))                                            \
  /* fp64 accumulation */                                                                \
  OP(double, sum_squares, (const Param* x, size_t n))                                    \
  /* losses[t] = -log softmax(logits[t])[target[t]], computed in T from the              \
     A logits. If dlogits is non-null it receives grad_scale * (softmax -                \
     onehot); it may alias logits. */                                                    \
  OP(void, cross_entropy, (Param* losses, Act* dlogits, const Act* logits,               \
                           const int32_t* targets, int N, int V, double grad_scale))     \
  OP(void, adamw_step, (Param* params, const Param* grads, Param* m, Param* v, size_t n, \
                        const AdamWParams& p))

// Every op.
#define MOE_BACKEND_OPS(OP) \
  MOE_OPS_ELEMENTWISE(OP)   \
  MOE_OPS_LINEAR(OP)        \
  MOE_OPS_RMSNORM(OP)       \
  MOE_OPS_ATTENTION(OP)     \
  MOE_OPS_ROUTER(OP)        \
  MOE_OPS_DISPATCH(OP)      \
  MOE_OPS_LOSS_OPTIM(OP)

// What a class does with each entry: Backend declares it, a backend class overrides it.
#define MOE_DECLARE_PURE(ret, name, params) virtual ret name params = 0;
#define MOE_DECLARE_OVERRIDE(ret, name, params) ret name params override;

namespace moe {

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

// The ops: the lists above, with their docs. T: parameters and
// full-precision state; A: activations (see the top of this file for which
// buffer has which type).
template <typename T, typename A = T>
class Backend : public BackendBase {
 public:
  using Param = T;
  using Act = A;
  MOE_BACKEND_OPS(MOE_DECLARE_PURE)
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
// choose it through src/runtime/backend_choice.h (train.backend).
template <typename A = float>
std::unique_ptr<Backend<float, A>> make_cuda_backend(int device);

}  // namespace moe
