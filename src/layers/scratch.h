// Transient backend memory shared by every layer (one owner: the
// Transformer): the gradient scratch of the one layer whose backward is
// running, and the logits of the one loss chunk being computed. A bump
// allocator over one allocation: the owner resets it before each user, and a
// user (with the modules it calls) takes its buffers one after another, so
// nothing it took overlaps. Contents are garbage on take: every user
// overwrites what it reads. Capacity is the largest user's need, which each
// module states in its *_scratch_bytes(), summing Scratch::bytes of every
// take in the same order.
#pragma once

#include <cstddef>
#include <string>

#include "core/error.h"
#include "layers/arena.h"

namespace moe {

class Scratch {
 public:
  static constexpr size_t kAlign = 256;  // each buffer starts on a 256-byte boundary
  template <typename U>
  static size_t bytes(size_t n) {
    return (n * sizeof(U) + kAlign - 1) / kAlign * kAlign;
  }

  void allocate(Arena& arena, size_t bytes) {
    base_ = arena.alloc<char>(bytes);
    capacity_ = bytes;
    used_ = 0;
  }
  void reset() { used_ = 0; }
  template <typename U>
  U* take(size_t n) {
    const size_t b = bytes<U>(n);
    if (used_ + b > capacity_)
      throw InternalError("scratch: a take of " + std::to_string(b) + " bytes exceeds the " +
                          std::to_string(capacity_) + " sized for it (" +
                          std::to_string(used_) + " in use)");
    U* p = reinterpret_cast<U*>(base_ + used_);
    used_ += b;
    return p;
  }
  size_t capacity() const { return capacity_; }

 private:
  char* base_ = nullptr;
  size_t capacity_ = 0, used_ = 0;
};

}  // namespace moe
