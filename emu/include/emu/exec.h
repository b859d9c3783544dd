// The executor's interface to kernel code (emu/include/emu/kernel.h) and to
// the runtime (emu/src/runtime.cpp). Every CUDA thread of a block is a fiber;
// the block's scheduler (emu/src/executor.cpp) runs them until each reaches a
// barrier, a warp collective or its end, then completes what all
// participants have reached, as the hardware defines it.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <stdexcept>
#include <string>

#include "emu/vector_types.h"

namespace emu {

// Where a kernel was launched, for diagnostics.
struct Site {
  const char* kernel;
  const char* file;
  int line;
};

// The legal timings the executor picks from. Forward / Reverse / Random:
// the order in which blocks run and, within a block, in which threads (or
// warps) are resumed. warp_greedy: each warp runs as far as it can (to a
// block barrier or its end) before the next, so warps drift apart between
// barriers; otherwise the warps advance together, one step each in turn.
enum class Order { Forward, Reverse, Random };
struct Schedule {
  Order order = Order::Forward;
  bool warp_greedy = false;
  uint64_t seed = 1;
};
// The schedule in force: set by tests, or by EMU_SCHEDULE=forward|reverse|
// random[:SEED][,greedy] in the environment.
Schedule& schedule();

// What a launch ran on: grid and block shape, dynamic shared memory bytes,
// and the opt-in limit for it set with cudaFuncSetAttribute.
struct GridShape {
  dim3 grid, block;
  size_t dynamic_smem = 0;
  size_t smem_limit = 48 * 1024;  // static + dynamic bytes a block may use
};

// A kernel broke a rule of the execution model (a barrier or collective
// that not every participant reaches, shared memory past its end, a trap).
struct KernelError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// Runs every block of the grid, each thread calling body(); throws
// emu::KernelError naming the kernel, block and thread on a violation.
void run_grid(const Site& site, const GridShape& shape, const std::function<void()>& body);

namespace detail {

struct BlockView {
  uint3 idx;
  dim3 dim, grid;
};
// Per-thread state that a device feature keeps beside the registers (the
// PTX emulation's outstanding cp.async copies): made on first use, gone
// with the thread at the end of its block.
struct ThreadExtension {
  virtual ~ThreadExtension() = default;
};
struct ThreadView {
  uint3 idx;
  const BlockView* block;
  std::unique_ptr<ThreadExtension> ext;
};
// The thread whose code runs now (set by the scheduler before each resume).
// constinit: no dynamic initialisation, so an access from another
// translation unit is a plain TLS load, without the TLS-init-function check
// (around which GCC 12's -fsanitize=null check read stale flags and
// reported a null &current in the attention kernels).
extern constinit thread_local ThreadView* current;

enum class WarpOp : uint8_t { SyncWarp, ShflIdx, ShflUp, ShflDown, ShflXor, MatchAny, Ballot, Any, All, Custom };
// A warp collective: blocks the calling thread until every lane of `mask`
// has reached the same collective, then returns this lane's result.
uint64_t warp_op(WarpOp op, unsigned mask, uint64_t value, int arg, int width);
// A warp collective whose inputs and results do not fit one 64-bit value
// (ldmatrix, mma.sync): each lane passes its own record; once every lane of
// `mask` waits at the same Collective (the same object), complete() runs
// once, in the scheduler, with lanes[l] the record of lane l (null outside
// the mask), reads every lane's inputs and writes every lane's results. A
// KernelError it throws is the kernel's fault, reported for the warp.
struct Collective {
  const char* name;
  void (*complete)(const Collective& self, void* const lanes[32], unsigned mask);
};
void warp_collective(const Collective& c, unsigned mask, void* lane_record);
// __syncthreads.
void sync_block();
// Shared memory of the running block: a __shared__ declaration (one tag per
// declaration and type) or the dynamic extern array.
void* static_shared(const void* tag, size_t bytes, size_t align, const char* name);
void* dynamic_shared(size_t align);
// The shared-window address of a generic pointer into the running block's
// shared memory (its offset there: __cvta_generic_to_shared); a pointer
// anywhere else is a fault naming `what`.
uint32_t shared_address(const void* p, const char* what);
// The generic pointer to `bytes` bytes at shared-window address `addr`;
// a fault naming `what` unless they lie in the block's dynamic shared
// memory or in one __shared__ declaration.
void* shared_window(uint64_t addr, size_t bytes, const char* what);
// A bad EMU_* setting: one line naming it and what is expected, exit 2.
[[noreturn]] void bad_setting(const char* name, const char* value, const char* expected);
// A kernel-side failure (a trap): stops the kernel with a KernelError.
[[noreturn]] void kernel_fail(const std::string& what);

}  // namespace detail
}  // namespace emu
