#include "comm/mpi_comm.h"

#include <algorithm>
#include <climits>
#include <cstring>
#include <cstdlib>
#include <vector>

#include "core/error.h"

namespace moe {

void mpi_check(int rc, const char* what) {
  if (rc == MPI_SUCCESS) return;
  char text[MPI_MAX_ERROR_STRING];
  int len = 0;
  if (MPI_Error_string(rc, text, &len) != MPI_SUCCESS) len = 0;
  throw InternalError(std::string("mpi: ") + what + ": " +
                      (len > 0 ? std::string(text, size_t(len)) : "error " + std::to_string(rc)));
}

MpiComm::MpiComm(MPI_Comm comm, bool owned) : comm_(comm), owned_(owned) {
  // Errors must reach our exception path, not MPI's default abort.
  mpi_check(MPI_Comm_set_errhandler(comm_, MPI_ERRORS_RETURN), "MPI_Comm_set_errhandler");
  mpi_check(MPI_Comm_rank(comm_, &rank_), "MPI_Comm_rank");
  mpi_check(MPI_Comm_size(comm_, &size_), "MPI_Comm_size");
}

MpiComm::~MpiComm() {
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (owned_ && !finalized) MPI_Comm_free(&comm_);
}

void MpiComm::allreduce(void* data, size_t n, MPI_Datatype type) {
  if (n > size_t(INT_MAX)) throw InternalError("mpi: allreduce: " + std::to_string(n) +
                                               " elements exceed INT_MAX");
  mpi_check(MPI_Allreduce(MPI_IN_PLACE, data, int(n), type, MPI_SUM, comm_), "MPI_Allreduce");
}

void MpiComm::allreduce_sum(int64_t* d, size_t n) { allreduce(d, n, MPI_INT64_T); }
void MpiComm::allreduce_sum(float* d, size_t n) { allreduce(d, n, MPI_FLOAT); }
void MpiComm::allreduce_sum(double* d, size_t n) { allreduce(d, n, MPI_DOUBLE); }

namespace {

// MPI counts and displacements are int: convert, refusing what does not fit.
void to_int_layout(const int64_t* counts, int n, std::vector<int>& c, std::vector<int>& displ,
                   const char* side) {
  c.resize(size_t(n));
  displ.resize(size_t(n));
  int64_t offset = 0;
  for (int p = 0; p < n; ++p) {
    if (counts[p] < 0 || counts[p] > INT_MAX || offset > INT_MAX)
      throw InternalError(std::string("mpi: ") + side + " count " +
                          std::to_string(counts[p]) + " at offset " + std::to_string(offset) +
                          " for peer " + std::to_string(p) + " is negative or exceeds INT_MAX");
    c[size_t(p)] = int(counts[p]);
    displ[size_t(p)] = int(offset);
    offset += counts[p];
  }
}

}  // namespace

void MpiComm::alltoallv(const void* send, const int64_t* send_counts, void* recv,
                        const int64_t* recv_counts, MPI_Datatype type) {
  std::vector<int> sc, sd, rc, rd;
  to_int_layout(send_counts, size_, sc, sd, "alltoallv: send");
  to_int_layout(recv_counts, size_, rc, rd, "alltoallv: recv");
  mpi_check(MPI_Alltoallv(send, sc.data(), sd.data(), type, recv, rc.data(), rd.data(), type,
                          comm_),
            "MPI_Alltoallv");
}

void MpiComm::reduce_scatter(void* data, const int64_t* counts, MPI_Datatype type, size_t elem) {
  std::vector<int> c, displ;
  to_int_layout(counts, size_, c, displ, "reduce_scatter");
  // MPI_IN_PLACE would leave the result at the start of the buffer, not at
  // this rank's part: the part is summed into a buffer of its own.
  const size_t mine = size_t(c[size_t(rank_)]);
  std::vector<char> part(std::max<size_t>(mine, 1) * elem);
  mpi_check(MPI_Reduce_scatter(data, part.data(), c.data(), type, MPI_SUM, comm_),
            "MPI_Reduce_scatter");
  std::memcpy(static_cast<char*>(data) + size_t(displ[size_t(rank_)]) * elem, part.data(),
              mine * elem);
}

void MpiComm::allgather(void* data, const int64_t* counts, MPI_Datatype type) {
  std::vector<int> c, displ;
  to_int_layout(counts, size_, c, displ, "allgather");
  mpi_check(MPI_Allgatherv(MPI_IN_PLACE, 0, type, data, c.data(), displ.data(), type, comm_),
            "MPI_Allgatherv");
}

void MpiComm::reduce_scatter_sum(float* d, const int64_t* c) {
  reduce_scatter(d, c, MPI_FLOAT, sizeof(float));
}
void MpiComm::reduce_scatter_sum(double* d, const int64_t* c) {
  reduce_scatter(d, c, MPI_DOUBLE, sizeof(double));
}
void MpiComm::allgather(float* d, const int64_t* c) { allgather(d, c, MPI_FLOAT); }
void MpiComm::allgather(double* d, const int64_t* c) { allgather(d, c, MPI_DOUBLE); }

void MpiComm::alltoallv(const int64_t* s, const int64_t* sc, int64_t* r, const int64_t* rc) {
  alltoallv(s, sc, r, rc, MPI_INT64_T);
}
void MpiComm::alltoallv(const float* s, const int64_t* sc, float* r, const int64_t* rc) {
  alltoallv(s, sc, r, rc, MPI_FLOAT);
}
void MpiComm::alltoallv(const double* s, const int64_t* sc, double* r, const int64_t* rc) {
  alltoallv(s, sc, r, rc, MPI_DOUBLE);
}
void MpiComm::alltoallv(const bf16* s, const int64_t* sc, bf16* r, const int64_t* rc) {
  alltoallv(s, sc, r, rc, MPI_UINT16_T);  // moved, never reduced: the bits are enough
}

void MpiComm::broadcast(void* data, size_t bytes, int root) {
  if (bytes > size_t(INT_MAX))
    throw InternalError("mpi: broadcast: " + std::to_string(bytes) + " bytes exceed INT_MAX");
  mpi_check(MPI_Bcast(data, int(bytes), MPI_BYTE, root, comm_), "MPI_Bcast");
}

void MpiComm::barrier() { mpi_check(MPI_Barrier(comm_), "MPI_Barrier"); }

std::unique_ptr<Comm> MpiComm::split(int color, int key) {
  MPI_Comm sub = MPI_COMM_NULL;
  mpi_check(MPI_Comm_split(comm_, color, key, &sub), "MPI_Comm_split");
  return std::make_unique<MpiComm>(sub, true);
}

void MpiComm::abort(int code) {
  MPI_Abort(comm_, code);
  std::abort();  // MPI_Abort does not return; this keeps [[noreturn]] honest
}

std::string MpiComm::describe() const {
  return "mpi rank " + std::to_string(rank_) + "/" + std::to_string(size_);
}

}  // namespace moe
