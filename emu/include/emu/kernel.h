// Device-side built-ins for kernel sources compiled as C++ on the emulated
// device (emu/). emu/rewrite.py puts this header first in every rewritten
// .cu file and turns `k<<<grid, block, smem, stream>>>(args)` into
// `::emu::launch(k, site, grid, block, smem, stream)(args)`, each
// `__shared__` declaration into a reference to the block's shared memory,
// and each inline asm statement into a call of ::emu::ptx::exec
// (emu/ptx.h, the PTX instructions).
// Semantics follow the CUDA C++ Programming Guide ("Built-in Variables",
// "Synchronization Functions", "Warp Shuffle Functions", "Warp Match
// Functions", "Atomic Functions") and the PTX ISA for the instructions.
#pragma once

#include <math.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>
#include <tuple>
#include <type_traits>
#include <utility>

#include <cuda_runtime.h>

#include "emu/device.h"
#include "emu/exec.h"
#include "emu/ptx.h"

#define threadIdx (::emu::detail::current->idx)
#define blockIdx (::emu::detail::current->block->idx)
#define blockDim (::emu::detail::current->block->dim)
#define gridDim (::emu::detail::current->block->grid)
#define warpSize 32

inline void __syncthreads() { ::emu::detail::sync_block(); }
inline void __syncwarp(unsigned mask = 0xffffffffu) {
  ::emu::detail::warp_op(::emu::detail::WarpOp::SyncWarp, mask, 0, 0, 32);
}

namespace emu::detail {
template <class T>
uint64_t to_bits(T v) {
  static_assert(std::is_trivially_copyable_v<T> && sizeof(T) <= 8, "shuffle of a value over 8 bytes");
  uint64_t b = 0;
  std::memcpy(&b, &v, sizeof v);
  return b;
}
template <class T>
T from_bits(uint64_t b) {
  T v;
  std::memcpy(&v, &b, sizeof v);
  return v;
}
template <class T>
T shuffle(WarpOp op, unsigned mask, T v, int arg, int width) {
  return from_bits<T>(warp_op(op, mask, to_bits(v), arg, width));
}
}  // namespace emu::detail

template <class T>
T __shfl_sync(unsigned mask, T v, int src_lane, int width = 32) {
  return ::emu::detail::shuffle(::emu::detail::WarpOp::ShflIdx, mask, v, src_lane, width);
}
template <class T>
T __shfl_up_sync(unsigned mask, T v, unsigned delta, int width = 32) {
  return ::emu::detail::shuffle(::emu::detail::WarpOp::ShflUp, mask, v, int(delta), width);
}
template <class T>
T __shfl_down_sync(unsigned mask, T v, unsigned delta, int width = 32) {
  return ::emu::detail::shuffle(::emu::detail::WarpOp::ShflDown, mask, v, int(delta), width);
}
template <class T>
T __shfl_xor_sync(unsigned mask, T v, int lane_mask, int width = 32) {
  return ::emu::detail::shuffle(::emu::detail::WarpOp::ShflXor, mask, v, lane_mask, width);
}
template <class T>
unsigned __match_any_sync(unsigned mask, T v) {
  return unsigned(::emu::detail::warp_op(::emu::detail::WarpOp::MatchAny, mask,
                                         ::emu::detail::to_bits(v), 0, 32));
}
inline unsigned __ballot_sync(unsigned mask, int pred) {
  return unsigned(::emu::detail::warp_op(::emu::detail::WarpOp::Ballot, mask, pred != 0, 0, 32));
}
inline int __any_sync(unsigned mask, int pred) {
  return int(::emu::detail::warp_op(::emu::detail::WarpOp::Any, mask, pred != 0, 0, 32));
}
inline int __all_sync(unsigned mask, int pred) {
  return int(::emu::detail::warp_op(::emu::detail::WarpOp::All, mask, pred != 0, 0, 32));
}

// Atomics: the block's threads and all blocks run on one host thread, one
// at a time, so a read-modify-write is indivisible as on the device.
namespace emu::detail {
template <class T, class F>
T read_modify_write(T* address, F f) {
  const T old = *address;
  *address = f(old);
  return old;
}
}  // namespace emu::detail
template <class T>
T atomicAdd(T* address, std::type_identity_t<T> v) {
  return ::emu::detail::read_modify_write(address, [v](T o) { return o + v; });
}
template <class T>
T atomicMax(T* address, std::type_identity_t<T> v) {
  return ::emu::detail::read_modify_write(address, [v](T o) { return o < v ? v : o; });
}
template <class T>
T atomicMin(T* address, std::type_identity_t<T> v) {
  return ::emu::detail::read_modify_write(address, [v](T o) { return v < o ? v : o; });
}
template <class T>
T atomicExch(T* address, std::type_identity_t<T> v) {
  return ::emu::detail::read_modify_write(address, [v](T) { return v; });
}
template <class T>
T atomicCAS(T* address, std::type_identity_t<T> compare, std::type_identity_t<T> v) {
  return ::emu::detail::read_modify_write(address, [=](T o) { return o == compare ? v : o; });
}

// Integer and bit intrinsics (CUDA Math API, "Integer Intrinsics", "Type
// Casting Intrinsics").
inline int __popc(unsigned x) { return __builtin_popcount(x); }
inline int __popcll(unsigned long long x) { return __builtin_popcountll(x); }
inline int __clz(int x) { return x == 0 ? 32 : __builtin_clz(unsigned(x)); }
inline int __ffs(int x) { return __builtin_ffs(x); }
inline float __int_as_float(int x) { return ::emu::detail::from_bits<float>(uint32_t(x)); }
inline float __uint_as_float(unsigned x) { return ::emu::detail::from_bits<float>(x); }
inline int __float_as_int(float x) { return int(uint32_t(::emu::detail::to_bits(x))); }
inline unsigned __float_as_uint(float x) { return uint32_t(::emu::detail::to_bits(x)); }
inline double __longlong_as_double(long long x) { return ::emu::detail::from_bits<double>(uint64_t(x)); }
inline long long __double_as_longlong(double x) { return (long long)::emu::detail::to_bits(x); }
// The device's min and max for mixed arithmetic arguments (CUDA's
// math_functions.hpp overloads), in the usual arithmetic conversions.
template <class A, class B>
  requires std::is_arithmetic_v<A> && std::is_arithmetic_v<B>
std::common_type_t<A, B> min(A a, B b) {
  using C = std::common_type_t<A, B>;
  return C(b) < C(a) ? C(b) : C(a);
}
template <class A, class B>
  requires std::is_arithmetic_v<A> && std::is_arithmetic_v<B>
std::common_type_t<A, B> max(A a, B b) {
  using C = std::common_type_t<A, B>;
  return C(a) < C(b) ? C(b) : C(a);
}
inline void __trap() { ::emu::detail::kernel_fail("__trap()"); }

// Address space conversion (CUDA Math API, "Address Space Conversion
// Intrinsics"): a shared-window address is the offset in the block's shared
// memory, which ldmatrix and cp.async map back (emu/include/emu/ptx.h).
inline size_t __cvta_generic_to_shared(const void* p) {
  return ::emu::detail::shared_address(p, "__cvta_generic_to_shared");
}
inline void* __cvta_shared_to_generic(size_t a) {
  return ::emu::detail::shared_window(a, 0, "__cvta_shared_to_generic");
}

// Device math the kernels call unqualified: single-precision functions are
// the C library's (within an ulp or two of the device's, see docs/cuda.md).
inline float rsqrtf(float x) { return 1.0f / std::sqrt(x); }
inline float __expf(float x) { return std::exp(x); }
inline float __logf(float x) { return std::log(x); }
inline float __fdividef(float a, float b) { return a / b; }
inline float __saturatef(float x) { return x < 0.f ? 0.f : (x > 1.f ? 1.f : x); }

namespace emu {

// Where and how a kernel is launched; enqueue() runs call(args...) on every
// thread of the grid when the stream gets there. id: the kernel's address,
// which cudaFuncSetAttribute names (null for a deduced template).
struct LaunchConfig {
  Site site;
  const void* id;
  dim3 grid, block;
  size_t smem;
  cudaStream_t stream;
  template <class Call, class Args>
  void enqueue(Call call, Args args) const {
    enqueue_kernel(site, id, grid, block, smem, stream,
                   [call, args = std::move(args)]() { std::apply(call, args); });
  }
};

// The arguments are converted to the parameters' types and copied at the
// launch, as CUDA does.
template <class... P>
struct Launcher {
  void (*fn)(P...);
  LaunchConfig config;
  template <class... A>
  void operator()(A&&... a) const {
    static_assert(sizeof...(A) == sizeof...(P), "kernel launched with the wrong number of arguments");
    config.enqueue(fn, std::tuple<std::decay_t<P>...>(std::forward<A>(a)...));
  }
};

// A template kernel whose template arguments the call deduces: `call` is a
// generic lambda that calls it. cudaFuncSetAttribute cannot name such a
// launch (it names a specialisation), so it gets the default limits.
template <class Call>
struct DeducedLauncher {
  Call call;
  LaunchConfig config;
  template <class... A>
  void operator()(A&&... a) const {
    config.enqueue(call, std::tuple<std::decay_t<A>...>(std::forward<A>(a)...));
  }
};

template <class Call>
DeducedLauncher<Call> launch_deduced(Call call, Site site, dim3 grid, dim3 block, size_t smem = 0,
                                     cudaStream_t stream = 0) {
  return DeducedLauncher<Call>{call, LaunchConfig{site, nullptr, grid, block, smem, stream}};
}

template <class... P>
Launcher<P...> launch(void (*fn)(P...), Site site, dim3 grid, dim3 block, size_t smem = 0,
                      cudaStream_t stream = 0) {
  return Launcher<P...>{
      fn, LaunchConfig{site, reinterpret_cast<const void*>(fn), grid, block, smem, stream}};
}

// __shared__ __align__(A) T name: storage aligned to A bytes.
template <class T, size_t A>
struct alignas(A) Aligned {
  T value;
};

// A __shared__ declaration: the same storage for every thread of the block.
template <class T, int Id>
T& shared_var(const char* name) {
  static const char tag = 0;
  return *static_cast<T*>(detail::static_shared(&tag, sizeof(T), alignof(T), name));
}
// extern __shared__ T name[]: the block's dynamic shared memory.
template <class T>
T* shared_dynamic() {
  return static_cast<T*>(detail::dynamic_shared(alignof(T)));
}

}  // namespace emu
