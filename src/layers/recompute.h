// Where the activations of a layer live under train.recompute
// (docs/parallel.md, "Activation recomputation"). A buffer is either kept
// (its own memory, per layer, as every buffer is under `none`) or redone:
// recomputed before the layer's backward, or dead after the forward that
// wrote it. Only one layer runs (forward, or recompute and backward) at a
// time, so the redone buffers of all layers overlay one block, sized for the
// largest layer: the memory is really saved, and the plan (built on a
// counting backend) shows it.
//
// Each layer's redone buffers start where the common ones end: buffers taken
// before the first begin_layer() are one set for all layers (the Transformer's
// norm outputs), never overlaid by a layer's own. Pointers are set by
// commit(), after every module has taken its buffers (the owners of the
// pointers stay where they are until then: modules are held by unique_ptr).
#pragma once

#include <algorithm>
#include <functional>
#include <vector>

#include "config/config.h"
#include "core/error.h"
#include "layers/arena.h"
#include "layers/scratch.h"

namespace moe {

class Activations {
 public:
  Activations(Arena& arena, Recompute policy) : arena_(arena), policy_(policy) {}
  Activations(const Activations&) = delete;
  Activations& operator=(const Activations&) = delete;

  Recompute policy() const { return policy_; }
  bool full() const { return policy_ == Recompute::Full; }
  bool selective_or_full() const { return policy_ != Recompute::None; }

  // Kept for backward: its own allocation.
  template <typename U>
  void keep(U*& p, size_t n) {
    p = arena_.alloc<U>(n);
  }
  // Redone: a place in the shared block, set by commit().
  template <typename U>
  void redo(U*& p, size_t n) {
    MOE_CHECK(!committed_, "activations: a buffer taken after commit");
    p = nullptr;
    const size_t at = used_;
    fixups_.push_back([&p, at](char* base) { p = reinterpret_cast<U*>(base + at); });
    used_ += Scratch::bytes<U>(n);
    capacity_ = std::max(capacity_, used_);
  }
  // Redone when `redone`, else kept.
  template <typename U>
  void take(U*& p, size_t n, bool redone) {
    if (redone)
      redo(p, n);
    else
      keep(p, n);
  }

  // The next buffers are a new layer's: they overlay every earlier layer's.
  void begin_layer() {
    if (!in_layers_) common_ = used_, in_layers_ = true;
    used_ = common_;
  }
  // Allocates the shared block and sets every redone pointer.
  void commit() {
    MOE_CHECK(!committed_, "activations: committed twice");
    committed_ = true;
    if (capacity_ == 0) return;
    char* base = arena_.alloc<char>(capacity_);
    for (auto& f : fixups_) f(base);
    fixups_.clear();
  }
  // Bytes of the shared block.
  size_t shared_bytes() const { return capacity_; }

 private:
  Arena& arena_;
  Recompute policy_;
  std::vector<std::function<void(char*)>> fixups_;
  size_t used_ = 0, common_ = 0, capacity_ = 0;
  bool in_layers_ = false, committed_ = false;
};

}  // namespace moe
