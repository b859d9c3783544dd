// Philox4x32-10 counter-based RNG (Salmon et al., SC'11). Every random number
// is a pure function of (key, counter), so parameter init and data sampling
// are the same on any backend, world size or thread count.
#pragma once

#include <array>
#include <cmath>
#include <cstdint>
#include <string_view>

namespace moe {

using Philox4 = std::array<uint32_t, 4>;

inline Philox4 philox4x32(Philox4 ctr, std::array<uint32_t, 2> key) {
  constexpr uint32_t M0 = 0xD2511F53u, M1 = 0xCD9E8D57u;
  constexpr uint32_t W0 = 0x9E3779B9u, W1 = 0xBB67AE85u;
  for (int round = 0; round < 10; ++round) {
    const uint64_t p0 = uint64_t(M0) * ctr[0];
    const uint64_t p1 = uint64_t(M1) * ctr[2];
    ctr = {uint32_t(p1 >> 32) ^ ctr[1] ^ key[0], uint32_t(p1), uint32_t(p0 >> 32) ^ ctr[3] ^ key[1],
           uint32_t(p0)};
    key[0] += W0;
    key[1] += W1;
  }
  return ctr;
}

// Random bits for (seed, stream, index): stream separates independent uses
// (one per parameter tensor, one for the data sampler, ...).
inline Philox4 philox_bits(uint64_t seed, uint64_t stream, uint64_t index) {
  return philox4x32({uint32_t(index), uint32_t(index >> 32), uint32_t(stream), uint32_t(stream >> 32)},
                    {uint32_t(seed), uint32_t(seed >> 32)});
}

// Uniform in (0, 1] from 32 bits.
inline double uniform_from_bits(uint32_t bits) { return (double(bits) + 1.0) / 4294967296.0; }

// Standard normal number `index` of a stream (Box-Muller on one Philox block).
inline double philox_normal(uint64_t seed, uint64_t stream, uint64_t index) {
  const Philox4 r = philox_bits(seed, stream, index);
  const double u1 = uniform_from_bits(r[0]), u2 = uniform_from_bits(r[1]);
  return std::sqrt(-2.0 * std::log(u1)) * std::cos(6.283185307179586 * u2);
}

// Uniform integer in [0, n) for number `index` of a stream (64 random bits, so
// the modulo bias is negligible for any n a token file can have).
inline uint64_t philox_uniform_int(uint64_t seed, uint64_t stream, uint64_t index, uint64_t n) {
  const Philox4 r = philox_bits(seed, stream, index);
  return ((uint64_t(r[0]) << 32) | r[1]) % n;
}

// FNV-1a: a stable stream id from a name (parameter names).
inline uint64_t stable_hash(std::string_view s) {
  uint64_t h = 1469598103934665603ull;
  for (unsigned char c : s) h = (h ^ c) * 1099511628211ull;
  return h;
}

}  // namespace moe
