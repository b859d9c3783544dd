// A host emulation of the CUDA features that kernels/attention_tc.cu uses, so
// that its kernels run unchanged on the CPU (tests/attention_tc_emulated.cpp).
// The test compiles that file as C++ with MOE_ATTN_TC_EMULATE defined, which
// leaves out its inline PTX and its launchers and puts the kernels in
// namespace moe::kernels::attn_tc_emulated; this header supplies what the PTX
// did and the CUDA built-ins the kernels name.
//
// Every CUDA thread of a block is a fiber (ucontext) with its own stack, so a
// thread's registers are ordinary locals. A fiber runs until it reaches a
// barrier or a warp-collective instruction. The scheduler runs every runnable
// fiber in turn, then completes each warp collective that all 32 lanes have
// reached (computing every lane's result from all lanes' inputs, as the
// hardware does) and releases __syncthreads once every thread of the block
// waits there. Options vary the legal timings: thread order, and whether warps
// advance together or each as far as it can before the next (warp_greedy). A collective that some
// lanes of a warp never reach, a barrier after some threads exited, and different collectives in
// one warp are errors.
//
// The instructions follow the PTX ISA tables, independently of the kernels'
// own index arithmetic:
//   ldmatrix.sync.aligned.m8n8.x4{.trans}.shared.b16: lane i supplies the
//     address of row i%8 of matrix i/8; lane L receives in register m
//     {M_m[L/4][2(L%4)], M_m[L/4][2(L%4)+1]} (.trans: {M_m[2(L%4)][L/4],
//     M_m[2(L%4)+1][L/4]}), the first in the low 16 bits. Every row address
//     must be 16-byte aligned and inside the block's shared memory.
//   mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32: A, B and C are
//     assembled from the 32 lanes' fragments with the (row, col) formulas of
//     "Matrix Fragments for mma.m16n8k16 with floating point type" (each
//     element exactly once, checked), D = A B + C in fp32, scattered back.
//   cp.async 16 bytes with src-size 16 or 0: queued per thread and grouped by
//     commit_group; wait_group N performs the copies of all but the newest N
//     committed groups (the latest the hardware may land them). With
//     Options::eager_copies each copy lands at issue instead (the earliest).
//     Lazy copies expose a read that did not wait, eager ones a copy into a
//     buffer that other warps still read. A source must lie in a buffer
//     registered with register_readable, a destination in shared memory, both
//     16-byte aligned.
//   __shfl_xor_sync (full mask), __syncwarp, __syncthreads.
// Shared memory starts as 0xFF bytes (NaN as bf16 and as fp32) in every
// block, so reading anything not loaded shows up as NaN in the results.
#pragma once

#include <ucontext.h>

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <functional>
#include <memory>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/common_interface_defs.h>
#define ATTN_EMU_ASAN_FIBERS 1
#endif

namespace attn_emu {

struct Dim3 {
  unsigned x = 0, y = 0, z = 0;
};

struct Options {
  bool eager_copies = false;   // cp.async lands at issue (default: at wait_group)
  bool reverse_order = false;  // resume threads (and warps) from the last to the first
  bool warp_greedy = false;    // run each warp as far as it goes (to __syncthreads or its
                               // end) before the next: warps drift apart between barriers
};

enum class Wait { None, Warp, Block, Done };
enum class Op { None, Ldsm, LdsmTrans, Mma, Shfl, SyncWarp };

struct Copy {
  unsigned char* dst;
  const unsigned char* src;  // null: 16 zero bytes
};

struct Fiber {
  ucontext_t ctx{};
  std::unique_ptr<char[]> stack;
  Dim3 tid;
  Wait wait = Wait::None;
  std::vector<Copy> open;                 // issued since the last commit
  std::deque<std::vector<Copy>> pending;  // committed groups not yet waited for
  void* asan_fake_stack = nullptr;
};

struct WarpSlot {
  Op op = Op::None;
  uint64_t in[32][10] = {};
  uint32_t out[32][4] = {};
};

struct alignas(64) SmemChunk {
  unsigned char b[64];
};

constexpr size_t kStackBytes = 256 * 1024;

struct State {
  Options opts;
  Dim3 block_idx, grid_dim;
  std::vector<Fiber> fibers;
  std::vector<WarpSlot> warps;
  std::vector<SmemChunk> smem_storage;
  unsigned char* smem = nullptr;
  size_t smem_bytes = 0;
  std::vector<std::pair<const unsigned char*, size_t>> readable;  // global buffers
  std::function<void()> body;
  Fiber* cur = nullptr;  // the running fiber; null in the scheduler
  ucontext_t sched{};
  std::string error;
  const void* sched_stack_bottom = nullptr;
  size_t sched_stack_size = 0;
};

inline State& state() {
  static State s;
  return s;
}

// ---- fibers ----

inline void switch_to_fiber(Fiber& f) {
  State& st = state();
  st.cur = &f;
#ifdef ATTN_EMU_ASAN_FIBERS
  void* fake = nullptr;
  __sanitizer_start_switch_fiber(&fake, f.stack.get(), kStackBytes);
#endif
  if (swapcontext(&st.sched, &f.ctx) != 0) throw std::runtime_error("emulator: swapcontext failed");
#ifdef ATTN_EMU_ASAN_FIBERS
  __sanitizer_finish_switch_fiber(fake, nullptr, nullptr);
#endif
  st.cur = nullptr;
}

// From a fiber: suspend it in state w (Done: for good) and resume the scheduler.
inline void switch_to_scheduler(Wait w) {
  State& st = state();
  Fiber* f = st.cur;
  f->wait = w;
#ifdef ATTN_EMU_ASAN_FIBERS
  __sanitizer_start_switch_fiber(w == Wait::Done ? nullptr : &f->asan_fake_stack,
                                 st.sched_stack_bottom, st.sched_stack_size);
#endif
  swapcontext(&f->ctx, &st.sched);
#ifdef ATTN_EMU_ASAN_FIBERS
  __sanitizer_finish_switch_fiber(f->asan_fake_stack, &st.sched_stack_bottom, &st.sched_stack_size);
#endif
}

// Unwinds a failing fiber's stack to fiber_main.
struct FiberAbort {};

inline void fiber_main() {
  State& st = state();
#ifdef ATTN_EMU_ASAN_FIBERS
  __sanitizer_finish_switch_fiber(nullptr, &st.sched_stack_bottom, &st.sched_stack_size);
#endif
  try {
    st.body();
  } catch (const FiberAbort&) {
    // st.error holds the message; the scheduler throws it.
  }
  switch_to_scheduler(Wait::Done);  // never resumed
  std::abort();
}

// An error: thrown at once from the scheduler; from a fiber, recorded, and
// the fiber's stack unwound (the scheduler then throws it).
[[noreturn]] inline void fail(const std::string& msg) {
  State& st = state();
  if (!st.cur) throw std::runtime_error("attention_tc emulator: " + msg);
  if (st.error.empty())
    st.error = "attention_tc emulator: " + msg + " (thread " + std::to_string(st.cur->tid.x) +
               " of block (" + std::to_string(st.block_idx.x) + ", " +
               std::to_string(st.block_idx.y) + "))";
  throw FiberAbort{};
}

// ---- memory checks ----

inline void check_smem(const void* p, size_t n, const char* what) {
  const State& st = state();
  const auto* c = static_cast<const unsigned char*>(p);
  if (c < st.smem || c + n > st.smem + st.smem_bytes)
    fail(std::string(what) + ": shared address outside the block's " +
         std::to_string(st.smem_bytes) + " bytes (offset " + std::to_string(c - st.smem) + ")");
  if (reinterpret_cast<uintptr_t>(c) % 16 != 0)
    fail(std::string(what) + ": shared address not 16-byte aligned");
}

inline void check_global(const void* p, size_t n, const char* what) {
  const auto* c = static_cast<const unsigned char*>(p);
  if (reinterpret_cast<uintptr_t>(c) % 16 != 0)
    fail(std::string(what) + ": global address not 16-byte aligned");
  for (const auto& [b, bytes] : state().readable)
    if (c >= b && c + n <= b + bytes) return;
  fail(std::string(what) + ": global read outside every input buffer");
}

inline void register_readable(const void* p, size_t bytes) {
  state().readable.emplace_back(static_cast<const unsigned char*>(p), bytes);
}
inline void clear_readable() { state().readable.clear(); }

inline void perform(const Copy& c) {
  if (c.src)
    std::memcpy(c.dst, c.src, 16);
  else
    std::memset(c.dst, 0, 16);
}

// ---- bf16 bits ----

inline float bf16_bits_to_float(uint32_t bits16) {
  const uint32_t u = bits16 << 16;
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
}
inline uint16_t float_to_bf16_bits(float f) {  // round to nearest even
  uint32_t u;
  std::memcpy(&u, &f, sizeof u);
  if ((u & 0x7fffffffu) > 0x7f800000u) return 0x7fc0;  // NaN
  u += 0x7fffu + ((u >> 16) & 1u);
  return static_cast<uint16_t>(u >> 16);
}
inline uint32_t float_bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, sizeof u);
  return u;
}
inline float bits_float(uint32_t u) {
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
}

// ---- warp collectives ----

// From a fiber, after writing its inputs to slot.in[lane]: waits until all 32
// lanes have arrived and the scheduler has written slot.out.
inline WarpSlot& arrive(Op op) {
  State& st = state();
  WarpSlot& w = st.warps[st.cur->tid.x / 32];
  if (w.op == Op::None)
    w.op = op;
  else if (w.op != op)
    fail("lanes of one warp are at different collective instructions");
  switch_to_scheduler(Wait::Warp);
  return w;
}

inline WarpSlot& slot() { return state().warps[state().cur->tid.x / 32]; }
inline int lane() { return static_cast<int>(state().cur->tid.x % 32); }

inline void complete_ldmatrix(WarpSlot& w, bool trans) {
  auto row = [&](int i) {  // the address lane i supplied: row i%8 of matrix i/8
    const auto* p = reinterpret_cast<const unsigned char*>(static_cast<uintptr_t>(w.in[i][0]));
    check_smem(p, 16, "ldmatrix");
    return p;
  };
  auto elem = [&](int m, int r, int c) -> uint32_t {  // M_m[r][c]
    uint16_t v;
    std::memcpy(&v, row(8 * m + r) + 2 * c, 2);
    return v;
  };
  for (int L = 0; L < 32; ++L)
    for (int m = 0; m < 4; ++m) {
      const uint32_t lo = trans ? elem(m, 2 * (L % 4), L / 4) : elem(m, L / 4, 2 * (L % 4));
      const uint32_t hi = trans ? elem(m, 2 * (L % 4) + 1, L / 4) : elem(m, L / 4, 2 * (L % 4) + 1);
      w.out[L][m] = lo | (hi << 16);
    }
}

// in[L] = a0..a3 (bf16x2), b0, b1 (bf16x2), c0..c3 (fp32 bits).
inline void complete_mma(WarpSlot& w) {
  float A[16][16], B[16][8], C[16][8];
  bool seenA[16][16] = {}, seenB[16][8] = {}, seenC[16][8] = {};
  auto half = [](uint64_t reg, int i) {
    return static_cast<uint32_t>(i % 2 == 0 ? reg & 0xffffu : (reg >> 16) & 0xffffu);
  };
  for (int L = 0; L < 32; ++L) {
    const int g = L >> 2, t = L % 4;  // groupID, threadID_in_group
    for (int i = 0; i < 8; ++i) {     // a_i is half i%2 of register i/2
      const int r = (i < 2 || (i >= 4 && i < 6)) ? g : g + 8;
      const int c = t * 2 + (i & 1) + (i >= 4 ? 8 : 0);
      if (seenA[r][c]) fail("mma: A element assembled twice");
      seenA[r][c] = true;
      A[r][c] = bf16_bits_to_float(half(w.in[L][i / 2], i));
    }
    for (int i = 0; i < 4; ++i) {  // b_i is half i%2 of register 4 + i/2
      const int r = t * 2 + (i & 1) + (i >= 2 ? 8 : 0);
      const int c = g;
      if (seenB[r][c]) fail("mma: B element assembled twice");
      seenB[r][c] = true;
      B[r][c] = bf16_bits_to_float(half(w.in[L][4 + i / 2], i));
    }
    for (int i = 0; i < 4; ++i) {
      const int r = g + (i >= 2 ? 8 : 0), c = t * 2 + (i & 1);
      if (seenC[r][c]) fail("mma: C element assembled twice");
      seenC[r][c] = true;
      C[r][c] = bits_float(static_cast<uint32_t>(w.in[L][6 + i]));
    }
  }
  float D[16][8];
  for (int r = 0; r < 16; ++r)
    for (int c = 0; c < 8; ++c) {
      float acc = C[r][c];
      for (int k = 0; k < 16; ++k) acc = std::fma(A[r][k], B[k][c], acc);
      D[r][c] = acc;
    }
  for (int L = 0; L < 32; ++L) {
    const int g = L >> 2, t = L % 4;
    for (int i = 0; i < 4; ++i) w.out[L][i] = float_bits(D[g + (i >= 2 ? 8 : 0)][t * 2 + (i & 1)]);
  }
}

inline void complete_shfl(WarpSlot& w) {
  for (int L = 0; L < 32; ++L) {
    if (w.in[L][1] != w.in[0][1]) fail("__shfl_xor_sync: lanes disagree on the lane mask");
    w.out[L][0] = static_cast<uint32_t>(w.in[L ^ static_cast<int>(w.in[L][1] & 31)][0]);
  }
}

inline void complete(WarpSlot& w) {
  switch (w.op) {
    case Op::Ldsm:
      complete_ldmatrix(w, false);
      break;
    case Op::LdsmTrans:
      complete_ldmatrix(w, true);
      break;
    case Op::Mma:
      complete_mma(w);
      break;
    case Op::Shfl:
      complete_shfl(w);
      break;
    case Op::SyncWarp:
      break;
    case Op::None:
      fail("warp released without a collective");
  }
  w.op = Op::None;
}

// ---- blocks and launches ----

inline void run_block() {
  State& st = state();
  const int n = static_cast<int>(st.fibers.size()), nw = n / 32;
  auto lanes_at = [&](int w, Wait s) {
    int k = 0;
    for (int l = 0; l < 32; ++l) k += st.fibers[32 * w + l].wait == s;
    return k;
  };
  for (;;) {
    for (int kw = 0; kw < nw; ++kw) {
      const int w = st.opts.reverse_order ? nw - 1 - kw : kw;
      for (;;) {
        for (int kl = 0; kl < 32; ++kl) {
          Fiber& f = st.fibers[32 * w + (st.opts.reverse_order ? 31 - kl : kl)];
          if (f.wait != Wait::None) continue;
          switch_to_fiber(f);
          if (!st.error.empty()) throw std::runtime_error(st.error);
        }
        if (!st.opts.warp_greedy || lanes_at(w, Wait::Warp) != 32) break;
        complete(st.warps[w]);
        for (int l = 0; l < 32; ++l) st.fibers[32 * w + l].wait = Wait::None;
      }
    }
    // Every fiber now waits at a collective or a barrier, or has exited.
    int done = 0, at_block = 0;
    for (const Fiber& f : st.fibers) {
      done += f.wait == Wait::Done;
      at_block += f.wait == Wait::Block;
    }
    if (done == n) return;
    bool released = false;
    for (int w = 0; w < nw; ++w) {
      const int at_warp = lanes_at(w, Wait::Warp);
      if (at_warp == 0) continue;
      if (at_warp != 32)
        fail(
            "warp " + std::to_string(w) + " of block (" + std::to_string(st.block_idx.x) + ", " +
            std::to_string(st.block_idx.y) + "): " + std::to_string(at_warp) +
            " lanes wait at a collective that the others (at __syncthreads or exited) never reach");
      complete(st.warps[w]);
      for (int l = 0; l < 32; ++l) st.fibers[32 * w + l].wait = Wait::None;
      released = true;
    }
    if (released) continue;
    // No warp collective pending: everyone left waits at __syncthreads.
    if (done > 0)
      fail("__syncthreads in block (" + std::to_string(st.block_idx.x) + ", " +
           std::to_string(st.block_idx.y) + ") after " + std::to_string(done) + " threads exited");
    if (at_block != n) fail("scheduler: no thread can run");
    for (Fiber& f : st.fibers) f.wait = Wait::None;
  }
}

// A fresh thread i at the start of the kernel. Out of line: getcontext
// "returns twice" for the compiler, which must not affect the caller's loop.
[[gnu::noinline]] inline void init_fiber(Fiber& f, unsigned i) {
  f.tid = Dim3{i, 0, 0};
  f.wait = Wait::None;
  f.open.clear();
  f.pending.clear();
  f.asan_fake_stack = nullptr;
  if (getcontext(&f.ctx) != 0) fail("getcontext failed");
  f.ctx.uc_stack.ss_sp = f.stack.get();
  f.ctx.uc_stack.ss_size = kStackBytes;
  f.ctx.uc_link = nullptr;
  makecontext(&f.ctx, &fiber_main, 0);
}

// Runs body (the kernel call) as a grid of blocks of `threads` threads with
// smem_bytes of dynamic shared memory; blocks one after another.
inline void launch(Dim3 grid, unsigned threads, size_t smem_bytes, const Options& opts,
                   std::function<void()> body) {
  if (threads == 0 || threads % 32 != 0) fail("block size must be a multiple of 32");
  State& st = state();
  st.opts = opts;
  st.grid_dim = grid;
  st.body = std::move(body);
  st.error.clear();
  st.smem_storage.assign((smem_bytes + sizeof(SmemChunk) - 1) / sizeof(SmemChunk), SmemChunk{});
  st.smem = st.smem_storage.empty() ? nullptr : st.smem_storage.front().b;
  st.smem_bytes = smem_bytes;
  st.fibers.clear();
  st.fibers.resize(threads);
  for (Fiber& f : st.fibers) f.stack = std::make_unique<char[]>(kStackBytes);
  st.warps.assign(threads / 32, WarpSlot{});
  for (unsigned y = 0; y < grid.y; ++y)
    for (unsigned x = 0; x < grid.x; ++x) {
      st.block_idx = Dim3{x, y, 0};
      if (st.smem) std::memset(st.smem, 0xFF, smem_bytes);
      for (WarpSlot& w : st.warps) w.op = Op::None;
      for (unsigned i = 0; i < threads; ++i) init_fiber(st.fibers[i], i);
      run_block();
    }
  st.fibers.clear();
}

}  // namespace attn_emu

// ---- What the kernels name: CUDA built-ins and types ----

#define __global__
#define __device__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define threadIdx (::attn_emu::state().cur->tid)
#define blockIdx (::attn_emu::state().block_idx)
#define gridDim (::attn_emu::state().grid_dim)

struct __nv_bfloat16 {
  uint16_t bits;
};
struct alignas(16) uint4 {
  unsigned int x, y, z, w;
};

inline void __syncthreads() { attn_emu::switch_to_scheduler(attn_emu::Wait::Block); }

inline void __syncwarp(unsigned mask = 0xffffffffu) {
  if (mask != 0xffffffffu) attn_emu::fail("__syncwarp with a partial mask");
  attn_emu::arrive(attn_emu::Op::SyncWarp);
}

inline float __shfl_xor_sync(unsigned mask, float v, int lane_mask) {
  if (mask != 0xffffffffu) attn_emu::fail("__shfl_xor_sync with a partial mask");
  attn_emu::WarpSlot& s = attn_emu::slot();
  const int l = attn_emu::lane();
  s.in[l][0] = attn_emu::float_bits(v);
  s.in[l][1] = static_cast<uint64_t>(lane_mask);
  attn_emu::arrive(attn_emu::Op::Shfl);
  return attn_emu::bits_float(s.out[l][0]);
}

// ---- The primitives of attention_tc.cu's PTX section ----

namespace moe::kernels::attn_tc_emulated {

inline void ldsm_x4(uint32_t (&r)[4], const __nv_bfloat16* p) {
  attn_emu::WarpSlot& s = attn_emu::slot();
  const int l = attn_emu::lane();
  s.in[l][0] = reinterpret_cast<uintptr_t>(p);
  attn_emu::arrive(attn_emu::Op::Ldsm);
  for (int m = 0; m < 4; ++m) r[m] = s.out[l][m];
}

inline void ldsm_x4_trans(uint32_t (&r)[4], const __nv_bfloat16* p) {
  attn_emu::WarpSlot& s = attn_emu::slot();
  const int l = attn_emu::lane();
  s.in[l][0] = reinterpret_cast<uintptr_t>(p);
  attn_emu::arrive(attn_emu::Op::LdsmTrans);
  for (int m = 0; m < 4; ++m) r[m] = s.out[l][m];
}

inline void mma_bf16_16816(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  attn_emu::WarpSlot& s = attn_emu::slot();
  const int l = attn_emu::lane();
  for (int i = 0; i < 4; ++i) s.in[l][i] = a[i];
  s.in[l][4] = b0;
  s.in[l][5] = b1;
  for (int i = 0; i < 4; ++i) s.in[l][6 + i] = attn_emu::float_bits(d[i]);
  attn_emu::arrive(attn_emu::Op::Mma);
  for (int i = 0; i < 4; ++i) d[i] = attn_emu::bits_float(s.out[l][i]);
}

inline void cp_async_16(__nv_bfloat16* dst, const __nv_bfloat16* src, bool valid) {
  auto* d = reinterpret_cast<unsigned char*>(dst);
  attn_emu::check_smem(d, 16, "cp.async");
  const unsigned char* s = nullptr;
  if (valid) {
    s = reinterpret_cast<const unsigned char*>(src);
    attn_emu::check_global(s, 16, "cp.async");
  }
  const attn_emu::Copy c{d, s};
  attn_emu::State& st = attn_emu::state();
  if (st.opts.eager_copies)
    attn_emu::perform(c);
  else
    st.cur->open.push_back(c);
}

inline void cp_async_commit() {
  attn_emu::Fiber* f = attn_emu::state().cur;
  f->pending.push_back(std::move(f->open));
  f->open.clear();
}

template <int N>
inline void cp_async_wait() {
  attn_emu::Fiber* f = attn_emu::state().cur;
  while (f->pending.size() > static_cast<size_t>(N)) {
    for (const attn_emu::Copy& c : f->pending.front()) attn_emu::perform(c);
    f->pending.pop_front();
  }
}

inline uint32_t pack_bf16x2(float lo, float hi) {
  return static_cast<uint32_t>(attn_emu::float_to_bf16_bits(lo)) |
         (static_cast<uint32_t>(attn_emu::float_to_bf16_bits(hi)) << 16);
}
inline float bf16x2_lo(uint32_t u) { return attn_emu::bf16_bits_to_float(u & 0xffffu); }
inline float bf16x2_hi(uint32_t u) { return attn_emu::bf16_bits_to_float(u >> 16); }

inline unsigned char* dynamic_smem() { return attn_emu::state().smem; }

}  // namespace moe::kernels::attn_tc_emulated
