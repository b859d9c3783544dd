// What the CPU op families share: the compute type, the fixed reduction
// blocks, and host memory (memory.cpp). Parallel loops run over independent
// outputs with a static schedule and each output is summed in a fixed serial
// order, so results do not depend on the thread count.
#pragma once

#include <cstddef>
#include <type_traits>

#include "core/bf16.h"

namespace moe::cpu {

// The type an op computes in for elements stored as A: float for bf16
// storage (the GPU's fp32 math), A itself otherwise. With A = bf16 every op
// computes in float or double and rounds once when it stores a bf16 result:
// the same points at which the CUDA backend stores bf16.
template <typename A>
using compute_t = std::conditional_t<is_bf16_v<A>, float, A>;

// Deterministic reductions sum fixed-size chunks in parallel, then the chunk
// partials serially: the order never depends on the thread count.
constexpr size_t kReduceChunk = 4096;
// Column block of the column-parallel reductions (embedding, rmsnorm dw).
constexpr int kColBlock = 64;

// ---- memory (memory.cpp): 64-byte aligned and zeroed ----
void* alloc_bytes(size_t bytes);
void free_bytes(void* p);
void copy_bytes(void* dst, const void* src, size_t bytes);
void zero_bytes(void* p, size_t bytes);

}  // namespace moe::cpu
