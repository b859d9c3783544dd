// bfloat16, the storage type of activations in bf16 training
// (train.precision: bfloat16). Host code computes in float and stores bf16;
// the bits are those of CUDA's __nv_bfloat16 (same layout), so a buffer
// written by either side reads the same on the other.
//
// Conversion from float rounds to nearest even (NaN stays a quiet NaN, the
// sign kept); to float it is exact. The conversions are implicit so that CPU
// op templates read `float v = x[i]` and write `y[i] = v` for any element
// type; arithmetic on bf16 values happens in float.
#pragma once

#include <cstdint>
#include <cstring>
#include <type_traits>

namespace moe {

struct bf16 {
  uint16_t bits = 0;

  bf16() = default;
  template <typename U, typename = std::enable_if_t<std::is_arithmetic_v<U>>>
  bf16(U v) : bits(round(static_cast<float>(v))) {}  // NOLINT: implicit by design
  operator float() const {                          // NOLINT
    const uint32_t u = uint32_t(bits) << 16;
    float f;
    std::memcpy(&f, &u, sizeof f);
    return f;
  }
  bf16& operator+=(float x) { return *this = float(*this) + x; }
  bf16& operator-=(float x) { return *this = float(*this) - x; }
  bf16& operator*=(float x) { return *this = float(*this) * x; }

  static bf16 from_bits(uint16_t b) {
    bf16 h;
    h.bits = b;
    return h;
  }
  static uint16_t round(float f) {
    uint32_t u;
    std::memcpy(&u, &f, sizeof u);
    if ((u & 0x7fffffffu) > 0x7f800000u) return uint16_t((u >> 16) | 0x40u);  // quiet NaN
    u += 0x7fffu + ((u >> 16) & 1u);  // round to nearest, ties to even
    return uint16_t(u >> 16);
  }
};
static_assert(sizeof(bf16) == 2 && std::is_trivially_copyable_v<bf16>);

// Rounds a float to the nearest bf16 and back: what storing it as bf16 keeps.
inline float round_to_bf16(float f) { return float(bf16(f)); }

template <typename A>
inline constexpr bool is_bf16_v = std::is_same_v<A, bf16>;

}  // namespace moe
