// Shared main of the tests/mpi/test_mpi_*.cpp executables (mpi_test_main.cpp):
// initializes MPI, runs every test on every rank, prints rank 0's gtest
// output (other ranks print only their failures, tagged [rank r]) and exits
// non-zero when any rank failed. Every rank runs the same tests in the same
// order, so tests may call collectives; avoid ASSERT_* before a collective
// (a rank that returns early leaves the others waiting until the ctest timeout).
#pragma once

#include "comm/comm.h"
#include "comm/mpi_env.h"

namespace moe::test {

Comm& world();                    // the job's world (a LocalComm at np 1)
const MpiEnvironment& mpi_env();  // local rank/size, whether MPI is active

}  // namespace moe::test
