// Communication between ranks. Model and trainer code call these collectives
// at the places a multi-rank run needs them; LocalComm (one rank) makes each
// a no-op. MpiComm (host buffers) and NcclComm (device buffers) implement the
// same interface for multi-rank runs.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>

namespace moe {

class Comm {
 public:
  virtual ~Comm() = default;
  virtual int rank() const = 0;
  virtual int size() const = 0;
  // In-place sums over all ranks of the group.
  virtual void allreduce_sum(int64_t* data, size_t n) = 0;
  virtual void allreduce_sum(float* data, size_t n) = 0;
  virtual void allreduce_sum(double* data, size_t n) = 0;
  virtual void barrier() = 0;
};

// A world of one rank.
class LocalComm final : public Comm {
 public:
  int rank() const override { return 0; }
  int size() const override { return 1; }
  void allreduce_sum(int64_t*, size_t) override {}
  void allreduce_sum(float*, size_t) override {}
  void allreduce_sum(double*, size_t) override {}
  void barrier() override {}
};

}  // namespace moe
