// Compiled by g++ (not nvcc): CUDA runtime C API and nccl.h only.
#ifdef MOE_WITH_CUDA

#include "comm/nccl_comm.h"

#include <mpi.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <thread>

#include "backend/cuda/cuda_device.h"
#include "core/error.h"

namespace moe {

namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

// Poll without burning a core for long: spin (yielding) about a millisecond,
// then check every millisecond.
void pause(int spins) {
  if (spins < 1000)
    std::this_thread::yield();
  else
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
}

ncclConfig_t nonblocking_config() {
  // Nonblocking: init, split and finalize return at once, so they too can be
  // bounded by the timeout instead of blocking on a missing peer.
  ncclConfig_t cfg = NCCL_CONFIG_INITIALIZER;
  cfg.blocking = 0;
  return cfg;
}

// Waits until `comm` leaves ncclInProgress; returns its state (ncclInProgress on timeout).
ncclResult_t poll_state(ncclComm_t comm, double timeout_s) {
  auto t0 = Clock::now();
  for (int spins = 0;; ++spins) {
    ncclResult_t state = ncclSuccess;
    ncclResult_t rc = ncclCommGetAsyncError(comm, &state);
    if (rc != ncclSuccess) return rc;
    if (state != ncclInProgress || seconds_since(t0) > timeout_s) return state;
    pause(spins);
  }
}

}  // namespace

NcclComm::NcclComm(Comm& bootstrap, int device, cudaStream_t compute, double timeout_seconds)
    : compute_(compute), device_(device), timeout_s_(timeout_seconds) {
  MOE_CUDA_CHECK(cudaSetDevice(device_));
  ncclUniqueId id{};
  if (bootstrap.rank() == 0) {
    ncclResult_t rc = ncclGetUniqueId(&id);
    if (rc != ncclSuccess)
      throw InternalError(std::string("nccl: ncclGetUniqueId: ") + ncclGetErrorString(rc));
  }
  bootstrap.broadcast(&id, sizeof id, 0);
  ncclConfig_t cfg = nonblocking_config();
  check(ncclCommInitRankConfig(&comm_, bootstrap.size(), id, bootstrap.rank(), &cfg),
        "ncclCommInitRank");
  wait_ready("ncclCommInitRank");
  setup_stream();
}

NcclComm::NcclComm(ncclComm_t comm, int device, cudaStream_t compute, double timeout_seconds)
    : comm_(comm), compute_(compute), device_(device), timeout_s_(timeout_seconds) {
  MOE_CUDA_CHECK(cudaSetDevice(device_));
  wait_ready("ncclCommSplit");  // a split child may still be initializing
  setup_stream();
}

void NcclComm::setup_stream() {
  check(ncclCommCount(comm_, &size_), "ncclCommCount");
  check(ncclCommUserRank(comm_, &rank_), "ncclCommUserRank");
  MOE_CUDA_CHECK(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
  MOE_CUDA_CHECK(cudaEventCreateWithFlags(&ready_, cudaEventDisableTiming));
  MOE_CUDA_CHECK(cudaEventCreateWithFlags(&done_, cudaEventDisableTiming));
  MOE_CUDA_CHECK(cudaMalloc(reinterpret_cast<void**>(&scratch_), sizeof(float)));
  // On NCCL's stream: a cudaMemset would run on the legacy stream, which
  // orders nothing with a non-blocking one.
  MOE_CUDA_CHECK(cudaMemsetAsync(scratch_, 0, sizeof(float), stream_));
}

NcclComm::~NcclComm() {
  if (comm_) {
    // Finalize flushes this rank's outstanding work; bounded, then destroy
    // (or abort when a peer never answers).
    ncclResult_t state = ncclCommFinalize(comm_);
    if (state == ncclSuccess || state == ncclInProgress)
      state = poll_state(comm_, std::min(timeout_s_, 30.0));
    if (state == ncclSuccess)
      ncclCommDestroy(comm_);
    else
      ncclCommAbort(comm_);
  }
  if (scratch_) cudaFree(scratch_);
  if (done_) cudaEventDestroy(done_);
  if (ready_) cudaEventDestroy(ready_);
  if (stream_) cudaStreamDestroy(stream_);
}

void NcclComm::fail(const char* what, const std::string& why) {
  std::string detail = why;
  if (comm_) {
    const char* last = ncclGetLastError(comm_);
    if (last && *last) detail += " (" + std::string(last) + ")";
    ncclCommAbort(comm_);  // releases peers blocked on us and our stuck kernels
    comm_ = nullptr;
  }
  throw InternalError(std::string("nccl: ") + what + ": " + detail);
}

void NcclComm::check(ncclResult_t rc, const char* what) {
  if (rc != ncclSuccess && rc != ncclInProgress) fail(what, ncclGetErrorString(rc));
}

// A non-blocking communicator may return ncclInProgress before the
// operation is on our stream; NCCL's documentation ("Nonblocking
// communicators") requires polling ncclCommGetAsyncError until it leaves
// ncclInProgress before queueing anything else there (our done_ event).
void NcclComm::enqueued(ncclResult_t rc, const char* what) {
  check(rc, what);
  if (rc == ncclInProgress) wait_ready(what);
}

void NcclComm::wait_ready(const char* what) {
  ncclResult_t state = poll_state(comm_, timeout_s_);
  if (state == ncclInProgress)
    fail(what, "timed out after " + std::to_string(int(timeout_s_)) + " s");
  if (state != ncclSuccess) fail(what, ncclGetErrorString(state));
}

// The compute stream is non-blocking (CudaBackend), so nothing but these
// events orders it with NCCL's stream.
void NcclComm::begin(const char* what) {
  if (!comm_) throw InternalError(std::string("nccl: ") + what + ": communicator was aborted");
  MOE_CUDA_CHECK(cudaEventRecord(ready_, compute_));
  MOE_CUDA_CHECK(cudaStreamWaitEvent(stream_, ready_, 0));
}

// The host wait alone would order later compute work only as long as the
// host waits before queueing it; the event orders it on the GPU regardless.
void NcclComm::end(const char* what) {
  MOE_CUDA_CHECK(cudaEventRecord(done_, stream_));
  MOE_CUDA_CHECK(cudaStreamWaitEvent(compute_, done_, 0));
  wait(what);
}

void NcclComm::wait(const char* what) {
  auto t0 = Clock::now();
  for (int spins = 0;; ++spins) {
    ncclResult_t state = ncclSuccess;
    ncclResult_t rc = ncclCommGetAsyncError(comm_, &state);
    if (rc != ncclSuccess) fail(what, std::string("ncclCommGetAsyncError: ") + ncclGetErrorString(rc));
    if (state != ncclSuccess && state != ncclInProgress) fail(what, ncclGetErrorString(state));
    if (state == ncclSuccess) {
      cudaError_t q = cudaStreamQuery(stream_);
      if (q == cudaSuccess) return;
      if (q != cudaErrorNotReady) fail(what, std::string("cuda: ") + cudaGetErrorString(q));
    }
    if (seconds_since(t0) > timeout_s_)
      fail(what, "timed out after " + std::to_string(int(timeout_s_)) +
                     " s (a peer failed or hangs)");
    pause(spins);
  }
}

void NcclComm::allreduce(void* data, size_t n, ncclDataType_t type, const char* what) {
  begin(what);
  enqueued(ncclAllReduce(data, data, n, type, ncclSum, comm_, stream_), what);
  end(what);
}

void NcclComm::allreduce_sum(int64_t* d, size_t n) { allreduce(d, n, ncclInt64, "allreduce"); }
void NcclComm::allreduce_sum(float* d, size_t n) { allreduce(d, n, ncclFloat32, "allreduce"); }
void NcclComm::allreduce_sum(double* d, size_t n) { allreduce(d, n, ncclFloat64, "allreduce"); }

void NcclComm::alltoallv(const void* send, const int64_t* send_counts, void* recv,
                         const int64_t* recv_counts, size_t elem, ncclDataType_t type) {
  for (int p = 0; p < size_; ++p)
    if (send_counts[p] < 0 || recv_counts[p] < 0)
      throw InternalError("nccl: alltoallv: negative count for peer " + std::to_string(p));
  begin("alltoallv");
  // Every send/recv is queued before the group ends, so a rank's order of
  // peers cannot deadlock; zero counts post nothing.
  ncclResult_t first = ncclGroupStart();
  if (first != ncclSuccess) fail("alltoallv", ncclGetErrorString(first));
  auto keep = [&](ncclResult_t rc) {
    if (first == ncclSuccess && rc != ncclSuccess && rc != ncclInProgress) first = rc;
  };
  size_t so = 0, ro = 0;
  for (int p = 0; p < size_; ++p) {
    size_t sc = size_t(send_counts[p]), rc = size_t(recv_counts[p]);
    if (sc > 0) keep(ncclSend(static_cast<const char*>(send) + so * elem, sc, type, p, comm_, stream_));
    if (rc > 0) keep(ncclRecv(static_cast<char*>(recv) + ro * elem, rc, type, p, comm_, stream_));
    so += sc;
    ro += rc;
  }
  const ncclResult_t ended = ncclGroupEnd();  // always close the group, even after a failed call
  keep(ended);
  if (first != ncclSuccess) fail("alltoallv", ncclGetErrorString(first));
  enqueued(ended, "alltoallv");
  end("alltoallv");
}

// reduce: the reduce-scatter, else the all-gather (comm.h), in place.
void NcclComm::partwise(void* data, const int64_t* counts, size_t elem, ncclDataType_t type,
                        bool reduce) {
  const char* what = reduce ? "reduce_scatter" : "allgather";
  bool equal = true;
  for (int p = 0; p < size_; ++p) {
    if (counts[p] < 0)
      throw InternalError(std::string("nccl: ") + what + ": negative count for rank " +
                          std::to_string(p));
    equal = equal && counts[p] == counts[0];
  }
  char* base = static_cast<char*>(data);
  begin(what);
  if (equal) {
    const size_t n = size_t(counts[0]);
    char* mine = base + size_t(rank_) * n * elem;
    if (n > 0) {
      if (reduce)
        enqueued(ncclReduceScatter(base, mine, n, type, ncclSum, comm_, stream_), what);
      else
        enqueued(ncclAllGather(mine, base, n, type, comm_, stream_), what);
    }
    end(what);
    return;
  }
  ncclResult_t first = ncclGroupStart();
  if (first != ncclSuccess) fail(what, ncclGetErrorString(first));
  auto keep = [&](ncclResult_t rc) {
    if (first == ncclSuccess && rc != ncclSuccess && rc != ncclInProgress) first = rc;
  };
  size_t off = 0;
  for (int p = 0; p < size_; ++p) {
    const size_t n = size_t(counts[p]);
    char* part = base + off * elem;
    if (n > 0)
      keep(reduce ? ncclReduce(part, part, n, type, ncclSum, p, comm_, stream_)
                  : ncclBroadcast(part, part, n, type, p, comm_, stream_));
    off += n;
  }
  const ncclResult_t ended = ncclGroupEnd();
  keep(ended);
  if (first != ncclSuccess) fail(what, ncclGetErrorString(first));
  enqueued(ended, what);
  end(what);
}

void NcclComm::reduce_scatter_sum(float* d, const int64_t* c) {
  partwise(d, c, sizeof(float), ncclFloat32, true);
}
void NcclComm::reduce_scatter_sum(double* d, const int64_t* c) {
  partwise(d, c, sizeof(double), ncclFloat64, true);
}
void NcclComm::allgather(float* d, const int64_t* c) {
  partwise(d, c, sizeof(float), ncclFloat32, false);
}
void NcclComm::allgather(double* d, const int64_t* c) {
  partwise(d, c, sizeof(double), ncclFloat64, false);
}

void NcclComm::alltoallv(const int64_t* s, const int64_t* sc, int64_t* r, const int64_t* rc) {
  alltoallv(s, sc, r, rc, sizeof(int64_t), ncclInt64);
}
void NcclComm::alltoallv(const float* s, const int64_t* sc, float* r, const int64_t* rc) {
  alltoallv(s, sc, r, rc, sizeof(float), ncclFloat32);
}
void NcclComm::alltoallv(const double* s, const int64_t* sc, double* r, const int64_t* rc) {
  alltoallv(s, sc, r, rc, sizeof(double), ncclFloat64);
}
void NcclComm::alltoallv(const bf16* s, const int64_t* sc, bf16* r, const int64_t* rc) {
  alltoallv(s, sc, r, rc, sizeof(bf16), ncclBfloat16);
}

void NcclComm::broadcast(void* data, size_t bytes, int root) {
  begin("broadcast");
  enqueued(ncclBroadcast(data, data, bytes, ncclUint8, root, comm_, stream_), "broadcast");
  end("broadcast");
}

void NcclComm::barrier() { allreduce(scratch_, 1, ncclFloat32, "barrier"); }

std::unique_ptr<Comm> NcclComm::split(int color, int key) {
  if (color < 0) throw InternalError("nccl: split: color " + std::to_string(color) + " < 0");
  if (!comm_) throw InternalError("nccl: split: communicator was aborted");
  ncclConfig_t cfg = nonblocking_config();
  ncclComm_t sub = nullptr;
  const ncclResult_t rc = ncclCommSplit(comm_, color, key, &sub, &cfg);
  if (rc != ncclSuccess && rc != ncclInProgress && sub) ncclCommAbort(sub);  // no leak on failure
  check(rc, "ncclCommSplit");
  if (ncclResult_t s = poll_state(comm_, timeout_s_); s != ncclSuccess)
    fail("ncclCommSplit", s == ncclInProgress ? "timed out" : ncclGetErrorString(s));
  return std::unique_ptr<NcclComm>(new NcclComm(sub, device_, compute_, timeout_s_));
}

void NcclComm::abort(int code) {
  if (comm_) ncclCommAbort(comm_);
  comm_ = nullptr;
  // The job is an MPI job: MPI_Abort ends every rank, not only this one.
  int init = 0, fin = 0;
  MPI_Initialized(&init);
  MPI_Finalized(&fin);
  if (init && !fin) MPI_Abort(MPI_COMM_WORLD, code);
  std::_Exit(code);
}

std::string NcclComm::describe() const {
  return "nccl rank " + std::to_string(rank_) + "/" + std::to_string(size_) + " (device " +
         std::to_string(device_) + ")";
}

}  // namespace moe

#endif  // MOE_WITH_CUDA
