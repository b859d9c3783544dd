// Inline PTX on the emulated device. emu/rewrite.py turns each GNU asm
// statement of a kernel source into
//   ::emu::ptx::exec(site, "template", operands...)
// with the operands in the asm's numbering (%0 = the first output), each
// wrapped by its constraint: out<'r'>(lvalue), inout<'f'>(lvalue),
// in<'l'>(value), imm<(constant)>(). exec() parses the template once (a
// string literal: its address keys the cache), substitutes the operands and
// runs the instructions as the PTX ISA defines them:
//   ldmatrix.sync.aligned.m8n8.{x1,x2,x4}{.trans}{.shared{::cta}}.b16
//   mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32
//   cp.async.{ca,cg}.shared{::cta}.global [dst], [src], cp-size{, src-size}
//   cp.async.commit_group, cp.async.wait_group N, cp.async.wait_all
// Anything else is a fault naming the instruction and the asm's line.
// ldmatrix and mma.sync are warp collectives (all 32 lanes, the executor's
// detail::warp_collective): every lane's inputs are combined and every lane
// gets its results, from the ISA's tables, not from any kernel's indexing.
// cp.async copies are queued per thread and performed by wait_group (lazy,
// the latest the hardware may land them) or at issue (eager, the earliest):
// EMU_CP_ASYNC=lazy|eager, default lazy, or cp_async_mode() in tests.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <type_traits>

#include "emu/exec.h"

namespace emu {

enum class CpAsync { Lazy, Eager };
// From EMU_CP_ASYNC=lazy|eager (default lazy); tests may set it.
CpAsync& cp_async_mode();

namespace ptx {

// One asm operand: its constraint letter, its value (inputs, in-outs and
// immediates, as the bits of a register of that size) and where a result
// goes (outputs, in-outs).
struct Operand {
  enum class Dir : uint8_t { In, Out, InOut, Imm };
  Dir dir;
  char letter;     // r, l, h, f, d or n
  uint8_t bytes;   // register size: 2, 4 or 8
  uint64_t bits;   // the value read
  void* target;    // the lvalue written
};

namespace detail {
template <char C>
constexpr uint8_t register_bytes() {
  static_assert(C == 'r' || C == 'l' || C == 'h' || C == 'f' || C == 'd', "asm constraint not emulated");
  return C == 'h' ? 2 : (C == 'l' || C == 'd') ? 8 : 4;
}
// The type rules nvcc applies to each constraint: r an integer of 32 bits,
// l one of 64 bits or a pointer, h 16 bits, f a float, d a double.
template <char C, class T>
constexpr bool fits() {
  using U = std::remove_cv_t<T>;
  if constexpr (C == 'f') return std::is_same_v<U, float>;
  else if constexpr (C == 'd') return std::is_same_v<U, double>;
  else if constexpr (C == 'l') return (std::is_integral_v<U> || std::is_enum_v<U> || std::is_pointer_v<U>) && sizeof(U) == 8;
  else return std::is_trivially_copyable_v<U> && !std::is_floating_point_v<U> && sizeof(U) == register_bytes<C>();
}
template <class T>
uint64_t bits_of(const T& v) {
  uint64_t b = 0;
  std::memcpy(&b, &v, sizeof v);
  return b;
}
}  // namespace detail

// "=C"(x): x receives the instruction's result.
template <char C, class T>
Operand out(T& x) {
  static_assert(detail::fits<C, T>(), "asm output of a type its constraint letter does not allow");
  return Operand{Operand::Dir::Out, C, detail::register_bytes<C>(), 0, &x};
}
// "+C"(x): read, then written.
template <char C, class T>
Operand inout(T& x) {
  static_assert(detail::fits<C, T>(), "asm in-out operand of a type its constraint letter does not allow");
  return Operand{Operand::Dir::InOut, C, detail::register_bytes<C>(), detail::bits_of(x), &x};
}
// "C"(v): a value, converted to the register's type as nvcc does (an
// integer of at most the register's width, zero- or sign-extended).
template <char C, class T>
Operand in(const T& v) {
  constexpr uint8_t n = detail::register_bytes<C>();
  using U = std::remove_cv_t<T>;
  if constexpr ((C == 'r' || C == 'l' || C == 'h') && (std::is_integral_v<U> || std::is_enum_v<U>) && sizeof(U) <= n) {
    const uint64_t b = uint64_t(int64_t(v));
    return Operand{Operand::Dir::In, C, n, n == 8 ? b : b & ((uint64_t(1) << (8 * n)) - 1), nullptr};
  } else {
    static_assert(detail::fits<C, T>(), "asm input of a type its constraint letter does not allow");
    return Operand{Operand::Dir::In, C, n, detail::bits_of(v), nullptr};
  }
}
// "n"(V): an immediate, which must be a constant expression.
template <auto V>
Operand imm() {
  static_assert(std::is_integral_v<decltype(V)>, "asm immediate (\"n\") of a non-integer type");
  return Operand{Operand::Dir::Imm, 'n', 8, uint64_t(int64_t(V)), nullptr};
}

// Runs the template's instructions with operands ops[0..n).
void execute(const Site& site, const char* text, const Operand* ops, size_t n);

template <class... O>
void exec(const Site& site, const char* text, O... ops) {
  const std::array<Operand, sizeof...(O)> a{ops...};
  execute(site, text, a.data(), a.size());
}

}  // namespace ptx
}  // namespace emu
