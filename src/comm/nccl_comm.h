// Comm over NCCL, for DEVICE buffers (counts arrays stay on the host). Built
// only with the CUDA backend. Each collective runs on the communicator's own
// stream, ordered by events on the GPU both ways: after the work already
// queued on the compute stream (the backend's, which writes the buffers), and
// before any work queued there afterwards (which reads the results). It also
// returns only once it is done; a failing or hung peer makes it abort the
// communicator and throw moe::InternalError naming the collective, never hang.
#pragma once

#ifdef MOE_WITH_CUDA

#include <cuda_runtime_api.h>
#include <nccl.h>

#include "comm/comm.h"

namespace moe {

class NcclComm final : public Comm {
 public:
  // Collective over `bootstrap` (a host communicator, MpiComm or LocalComm):
  // its rank 0 makes the NCCL unique id and broadcasts it. Uses `device`
  // (cudaSetDevice; usually MpiEnvironment::local_rank()). `compute`: the
  // stream whose work the collectives are ordered with, borrowed (the
  // backend's, Backend::native_stream(); it must outlive this object);
  // cudaStreamLegacy for buffers written with blocking cudaMemcpy. Split
  // communicators share it.
  NcclComm(Comm& bootstrap, int device, cudaStream_t compute, double timeout_seconds = 600.0);
  ~NcclComm() override;
  NcclComm(const NcclComm&) = delete;
  NcclComm& operator=(const NcclComm&) = delete;

  cudaStream_t compute_stream() const { return compute_; }
  cudaStream_t stream() const { return stream_; }  // NCCL's own

  int rank() const override { return rank_; }
  int size() const override { return size_; }

  void allreduce_sum(int64_t* data, size_t n) override;
  void allreduce_sum(float* data, size_t n) override;
  void allreduce_sum(double* data, size_t n) override;

  // Equal parts run as ncclReduceScatter / ncclAllGather in place; unequal
  // ones as one grouped ncclReduce / ncclBroadcast per part.
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
  NcclComm(ncclComm_t comm, int device, cudaStream_t compute, double timeout_seconds);  // split
  void setup_stream();
  void begin(const char* what);  // NCCL's stream waits for the compute stream's work so far
  void end(const char* what);    // the compute stream waits for NCCL's work, then wait()
  void check(ncclResult_t rc, const char* what);
  void enqueued(ncclResult_t rc, const char* what);  // check, then wait out ncclInProgress
  void wait_ready(const char* what);  // communicator init/split finished
  void wait(const char* what);        // stream finished, or abort + throw
  [[noreturn]] void fail(const char* what, const std::string& why);
  void allreduce(void* data, size_t n, ncclDataType_t type, const char* what);
  void alltoallv(const void* send, const int64_t* send_counts, void* recv,
                 const int64_t* recv_counts, size_t elem, ncclDataType_t type);
  void partwise(void* data, const int64_t* counts, size_t elem, ncclDataType_t type,
                bool reduce);

  ncclComm_t comm_ = nullptr;
  cudaStream_t stream_ = nullptr;
  cudaStream_t compute_;                     // borrowed: the backend owns it
  cudaEvent_t ready_ = nullptr, done_ = nullptr;  // compute -> NCCL, NCCL -> compute
  float* scratch_ = nullptr;  // barrier's one-element all-reduce
  int device_ = 0, rank_ = 0, size_ = 1;
  double timeout_s_;
};

}  // namespace moe

#endif  // MOE_WITH_CUDA
