// Helper of test_mpi_comm (not a test itself): a job that fails on purpose.
//   mpi_fail_probe MODE    under mpirun -np 2 (or more)
//     abort: rank 1 calls Comm::abort(3) while the others wait in a barrier
//     throw: rank 1 throws; main catches and calls MpiEnvironment::abort
//     exit:  rank 1 exits with 1 without finalizing (a crash)
//     ok:    everyone passes the barrier (the control: exit 0)
//   mpi_fail_probe single | single-skip    without mpirun
//     single: MpiEnvironment as an OpenMPI singleton; single-skip: only_if_launched
// Survivors print "probe: rank R passed", which a failing mode must never show.
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <stdexcept>
#include <string>

#include "comm/mpi_env.h"

int main(int argc, char** argv) {
  std::string mode = argc > 1 ? argv[1] : "ok";
  if (mode == "single" || mode == "single-skip") {
    moe::MpiEnvironment env(mode == "single-skip");
    auto world = env.world();
    std::printf("probe: active %d launched %d world %s local %d/%d\n", int(env.active()),
                int(moe::launched_under_mpi()), world->describe().c_str(), env.local_rank(),
                env.local_size());
    world->barrier();
    return 0;
  }
  moe::MpiEnvironment env;
  auto world = env.world();
  try {
    if (world->rank() == 1) {
      if (mode == "abort") world->abort(3);
      if (mode == "throw") throw std::runtime_error("probe: rank 1 failed on purpose");
      if (mode == "exit") std::_Exit(1);
    }
    world->barrier();
    std::printf("probe: rank %d passed\n", world->rank());
    std::fflush(stdout);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    env.abort(1);  // ends every rank: the others are blocked in the barrier
  }
  return 0;
}
