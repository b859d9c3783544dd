// Backend memory owned by one model component, allocated once at construction
// and freed with it (the step loop never allocates).
#pragma once

#include <vector>

#include "backend/backend.h"

namespace moe {

class Arena {
 public:
  explicit Arena(BackendBase& be) : be_(&be) {}
  Arena(const Arena&) = delete;
  Arena& operator=(const Arena&) = delete;
  ~Arena() {
    for (void* p : blocks_) be_->free_bytes(p);
  }
  template <typename U>
  U* alloc(size_t n) {
    U* p = alloc_array<U>(*be_, n == 0 ? 1 : n);
    blocks_.push_back(p);
    return p;
  }

 private:
  BackendBase* be_;
  std::vector<void*> blocks_;
};

}  // namespace moe
