// Comm over an MPI communicator, for host buffers: the CPU backend's
// transport, and the bootstrap that carries NCCL's unique id on GPUs.
// MPI errors come back as moe::InternalError (MPI_ERRORS_RETURN is set).
#pragma once

#include <mpi.h>

#include "comm/comm.h"

namespace moe {

class MpiComm final : public Comm {
 public:
  // Takes ownership of `comm` (frees it in the destructor) when `owned`.
  MpiComm(MPI_Comm comm, bool owned);
  ~MpiComm() override;
  MpiComm(const MpiComm&) = delete;
  MpiComm& operator=(const MpiComm&) = delete;

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  MPI_Comm handle() const { return comm_; }

  void allreduce_sum(int64_t* data, size_t n) override;
  void allreduce_sum(float* data, size_t n) override;
  void allreduce_sum(double* data, size_t n) override;

  void reduce_scatter_sum(float* data, const int64_t* counts) override;
  void reduce_scatter_sum(double* data, const int64_t* counts) override;
  void allgather(float* data, const int64_t* counts) override;
  void allgather(double* data, const int64_t* counts) override;

  void alltoallv(const int64_t* send, const int64_t* send_counts, int64_t* recv,
                 const int64_t* recv_counts) override;
  void alltoallv(const float* send, const int64_t* send_counts, float* recv,
                 const int64_t* recv_counts) override;
  void alltoallv(const bf16* send, const int64_t* send_counts, bf16* recv,
                 const int64_t* recv_counts) override;
  void alltoallv(const double* send, const int64_t* send_counts, double* recv,
                 const int64_t* recv_counts) override;

  void broadcast(void* data, size_t bytes, int root) override;
  void barrier() override;
  std::unique_ptr<Comm> split(int color, int key) override;
  [[noreturn]] void abort(int code) override;
  std::string describe() const override;

 private:
  void allreduce(void* data, size_t n, MPI_Datatype type);
  void reduce_scatter(void* data, const int64_t* counts, MPI_Datatype type, size_t elem);
  void allgather(void* data, const int64_t* counts, MPI_Datatype type);
  void alltoallv(const void* send, const int64_t* send_counts, void* recv,
                 const int64_t* recv_counts, MPI_Datatype type);

  MPI_Comm comm_;
  bool owned_;
  int rank_ = 0;
  int size_ = 1;
};

// Throws moe::InternalError "mpi: WHAT: <MPI_Error_string>" unless rc is MPI_SUCCESS.
void mpi_check(int rc, const char* what);

}  // namespace moe
