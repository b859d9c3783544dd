// bfloat16 for the emulated device (emu/): the storage type and conversions
// of the toolkit's cuda_bf16.h that moe-lfb uses. A bfloat16 is the top 16
// bits of a float; float -> bfloat16 rounds to nearest, ties to even, and
// any NaN becomes the canonical 0x7FFF, as __float2bfloat16_rn does.
#pragma once

#include <cstdint>
#include <cstring>

#include "cuda_runtime.h"

struct alignas(2) __nv_bfloat16 {
  unsigned short __x;
  __nv_bfloat16() = default;
  __nv_bfloat16(float f);  // NOLINT: implicit, as the toolkit's host conversions
  operator float() const;  // NOLINT
};

struct alignas(4) __nv_bfloat162 {
  __nv_bfloat16 x, y;
};

inline unsigned short emu_float_to_bf16_bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, sizeof u);
  if ((u & 0x7F800000u) == 0x7F800000u && (u & 0x007FFFFFu) != 0) return 0x7FFF;
  u += 0x7FFFu + ((u >> 16) & 1u);
  return static_cast<unsigned short>(u >> 16);
}

inline __nv_bfloat16::__nv_bfloat16(float f) : __x(emu_float_to_bf16_bits(f)) {}

inline __nv_bfloat16::operator float() const {
  const uint32_t u = static_cast<uint32_t>(__x) << 16;
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
}

inline __nv_bfloat16 __float2bfloat16_rn(float f) { return __nv_bfloat16(f); }
inline __nv_bfloat16 __float2bfloat16(float f) { return __nv_bfloat16(f); }
// Round toward zero: the top 16 bits (NaN stays a NaN).
inline __nv_bfloat16 __float2bfloat16_rz(float f) {
  uint32_t u;
  std::memcpy(&u, &f, sizeof u);
  __nv_bfloat16 h;
  h.__x = ((u & 0x7F800000u) == 0x7F800000u && (u & 0x007FFFFFu) != 0)
              ? static_cast<unsigned short>(0x7FFF)
              : static_cast<unsigned short>(u >> 16);
  return h;
}
inline float __bfloat162float(__nv_bfloat16 h) { return static_cast<float>(h); }
inline __nv_bfloat162 __floats2bfloat162_rn(float a, float b) {
  return __nv_bfloat162{__nv_bfloat16(a), __nv_bfloat16(b)};
}
inline __nv_bfloat162 __float22bfloat162_rn(float2 f) { return __floats2bfloat162_rn(f.x, f.y); }
inline float2 __bfloat1622float2(__nv_bfloat162 h) {
  return float2{static_cast<float>(h.x), static_cast<float>(h.y)};
}
