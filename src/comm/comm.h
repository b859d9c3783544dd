// Communication between ranks. Model and trainer code call these collectives
// at the places a multi-rank run needs them; LocalComm (one rank) makes each
// a no-op or a copy. MpiComm (host buffers: the CPU backend's transport) and
// NcclComm (device buffers) implement the same interface.
//
// Every collective must be called by every rank of the communicator, in the
// same order. Counts are in elements, not bytes.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <string>

#include "core/bf16.h"

namespace moe {

class Comm {
 public:
  virtual ~Comm() = default;
  virtual int rank() const = 0;
  virtual int size() const = 0;

  // In-place sums over all ranks.
  virtual void allreduce_sum(int64_t* data, size_t n) = 0;
  virtual void allreduce_sum(float* data, size_t n) = 0;
  virtual void allreduce_sum(double* data, size_t n) = 0;

  // The two halves of an all-reduce, over `data` split into consecutive parts,
  // counts[p] elements for rank p (the same counts on every rank), in place.
  // reduce_scatter_sum: this rank's part ends up holding the sum of that part
  // over all ranks; the other parts are left unspecified. allgather: every
  // rank's part, as that rank holds it, is copied into every rank's `data`.
  virtual void reduce_scatter_sum(float* data, const int64_t* counts) = 0;
  virtual void reduce_scatter_sum(double* data, const int64_t* counts) = 0;
  virtual void allgather(float* data, const int64_t* counts) = 0;
  virtual void allgather(double* data, const int64_t* counts) = 0;

  // All-to-all with per-peer counts: rank r sends send_counts[p] elements
  // (consecutive in `send`, peers in rank order) to peer p and receives
  // recv_counts[p] elements from p (consecutive in `recv`, in rank order).
  virtual void alltoallv(const int64_t* send, const int64_t* send_counts, int64_t* recv,
                         const int64_t* recv_counts) = 0;
  virtual void alltoallv(const float* send, const int64_t* send_counts, float* recv,
                         const int64_t* recv_counts) = 0;
  virtual void alltoallv(const double* send, const int64_t* send_counts, double* recv,
                         const int64_t* recv_counts) = 0;
  // bf16 activation rows (expert parallelism in bf16 training).
  virtual void alltoallv(const bf16* send, const int64_t* send_counts, bf16* recv,
                         const int64_t* recv_counts) = 0;

  // Copies `bytes` from rank `root` to every rank.
  virtual void broadcast(void* data, size_t bytes, int root) = 0;
  virtual void barrier() = 0;

  // A communicator of the ranks that pass the same color, ordered by key.
  virtual std::unique_ptr<Comm> split(int color, int key) = 0;

  // Ends the whole job (every rank) with this exit code; never returns.
  [[noreturn]] virtual void abort(int code) = 0;
  virtual std::string describe() const = 0;
};

// A world of one rank.
class LocalComm final : public Comm {
 public:
  int rank() const override { return 0; }
  int size() const override { return 1; }
  void allreduce_sum(int64_t*, size_t) override {}
  void allreduce_sum(float*, size_t) override {}
  void allreduce_sum(double*, size_t) override {}
  void reduce_scatter_sum(float*, const int64_t*) override {}
  void reduce_scatter_sum(double*, const int64_t*) override {}
  void allgather(float*, const int64_t*) override {}
  void allgather(double*, const int64_t*) override {}
  void alltoallv(const int64_t* s, const int64_t* sc, int64_t* r, const int64_t*) override {
    copy(s, sc, r);
  }
  void alltoallv(const float* s, const int64_t* sc, float* r, const int64_t*) override {
    copy(s, sc, r);
  }
  void alltoallv(const double* s, const int64_t* sc, double* r, const int64_t*) override {
    copy(s, sc, r);
  }
  void alltoallv(const bf16* s, const int64_t* sc, bf16* r, const int64_t*) override {
    copy(s, sc, r);
  }
  void broadcast(void*, size_t, int) override {}
  void barrier() override {}
  std::unique_ptr<Comm> split(int, int) override { return std::make_unique<LocalComm>(); }
  [[noreturn]] void abort(int code) override;
  std::string describe() const override { return "local (1 rank)"; }

 private:
  template <typename U>
  static void copy(const U* s, const int64_t* counts, U* r) {
    if (s != r && counts[0] > 0) std::memcpy(r, s, size_t(counts[0]) * sizeof(U));
  }
};

}  // namespace moe
