#include "comm/mpi_env.h"

#include <mpi.h>

#include <cstdlib>

#include "comm/mpi_comm.h"

namespace moe {

namespace {

// Read at program load: OpenMPI's singleton MPI_Init sets these variables itself.
const bool g_launched = std::getenv("OMPI_COMM_WORLD_SIZE") || std::getenv("PMI_SIZE") ||
                        std::getenv("PMIX_RANK");

}  // namespace

bool launched_under_mpi() { return g_launched; }

MpiEnvironment::MpiEnvironment(bool only_if_launched) {
  if (only_if_launched && !launched_under_mpi()) return;
  int initialized = 0;
  mpi_check(MPI_Initialized(&initialized), "MPI_Initialized");
  if (!initialized) {
    int provided = 0;
    mpi_check(MPI_Init_thread(nullptr, nullptr, MPI_THREAD_FUNNELED, &provided),
              "MPI_Init_thread");
    owns_ = true;
  }
  active_ = true;
  MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
  mpi_check(MPI_Comm_rank(MPI_COMM_WORLD, &world_rank_), "MPI_Comm_rank");
  mpi_check(MPI_Comm_size(MPI_COMM_WORLD, &world_size_), "MPI_Comm_size");
  MPI_Comm node = MPI_COMM_NULL;
  mpi_check(MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, world_rank_,
                                MPI_INFO_NULL, &node),
            "MPI_Comm_split_type");
  MpiComm node_comm(node, true);
  local_rank_ = node_comm.rank();
  local_size_ = node_comm.size();
  node_id_ = world_rank_;  // node rank 0 has the lowest world rank (the split's key)
  node_comm.broadcast(&node_id_, sizeof(node_id_), 0);
}

MpiEnvironment::~MpiEnvironment() {
  int finalized = 0;
  if (owns_ && MPI_Finalized(&finalized) == MPI_SUCCESS && !finalized) MPI_Finalize();
}

void MpiEnvironment::abort(int code) const {
  int finalized = 1;
  if (active_) MPI_Finalized(&finalized);
  if (!finalized && world_size_ > 1) MPI_Abort(MPI_COMM_WORLD, code);
  if (!finalized && owns_) MPI_Finalize();  // one rank: nobody to wait for
  std::exit(code);
}

std::unique_ptr<Comm> MpiEnvironment::world() const {
  if (!active_ || world_size_ == 1) return std::make_unique<LocalComm>();
  MPI_Comm dup = MPI_COMM_NULL;
  mpi_check(MPI_Comm_dup(MPI_COMM_WORLD, &dup), "MPI_Comm_dup");
  return std::make_unique<MpiComm>(dup, true);
}

}  // namespace moe
