// MPI's lifetime for a process. Construct one in main, before anything that
// communicates; communicators from world() must be destroyed before it.
#pragma once

#include <memory>

#include "comm/comm.h"

namespace moe {

// True when a launcher (mpirun, srun with PMI/PMIx) started this process
// (its environment at program start, before any MPI_Init).
bool launched_under_mpi();

class MpiEnvironment {
 public:
  // Initializes MPI (MPI_THREAD_FUNNELED) unless it already is. Without a
  // launcher OpenMPI runs as a singleton (a world of one; about 0.5 s to start);
  // only_if_launched skips MPI entirely then, and world() is a LocalComm.
  explicit MpiEnvironment(bool only_if_launched = false);
  ~MpiEnvironment();  // finalizes MPI if this object initialized it
  MpiEnvironment(const MpiEnvironment&) = delete;
  MpiEnvironment& operator=(const MpiEnvironment&) = delete;

  // An MpiComm over a dup of MPI_COMM_WORLD when the world has more than one
  // rank, else a LocalComm (single-process runs stay MPI-free in collectives).
  std::unique_ptr<Comm> world() const;
  int world_rank() const { return world_rank_; }
  int world_size() const { return world_size_; }
  // Rank among the processes on this node, and their number (GPU selection).
  int local_rank() const { return local_rank_; }
  int local_size() const { return local_size_; }
  // The lowest world rank on this node: the same for every process of a node.
  int node_id() const { return node_id_; }
  bool active() const { return active_; }  // MPI is initialized and usable

  // Ends the whole job with `code`: MPI_Abort on MPI_COMM_WORLD when it has
  // several ranks, else std::exit. For a main's catch block: a rank that
  // returns instead waits in MPI_Finalize for peers blocked in a collective.
  [[noreturn]] void abort(int code) const;

 private:
  bool active_ = false;
  bool owns_ = false;
  int world_rank_ = 0, world_size_ = 1, local_rank_ = 0, local_size_ = 1, node_id_ = 0;
};

}  // namespace moe
