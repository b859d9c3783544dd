#include "support/mpi_test_main.h"

#include <gtest/gtest.h>

#include <cstdio>

namespace moe::test {

namespace {

MpiEnvironment* g_env = nullptr;
Comm* g_world = nullptr;

// What a non-zero rank prints: its failures only, tagged with its rank.
class RankFailurePrinter : public ::testing::EmptyTestEventListener {
 public:
  explicit RankFailurePrinter(int rank) : rank_(rank) {}
  void OnTestPartResult(const ::testing::TestPartResult& r) override {
    if (r.failed())
      std::fprintf(stderr, "[rank %d] %s:%d: Failure\n%s\n", rank_,
                   r.file_name() ? r.file_name() : "?", r.line_number(), r.message());
  }
  void OnTestEnd(const ::testing::TestInfo& t) override {
    if (t.result()->Failed())
      std::fprintf(stderr, "[rank %d] FAILED %s.%s\n", rank_, t.test_suite_name(), t.name());
  }

 private:
  int rank_;
};

}  // namespace

Comm& world() { return *g_world; }
const MpiEnvironment& mpi_env() { return *g_env; }

}  // namespace moe::test

int main(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);
  moe::MpiEnvironment env;
  int64_t failed_ranks = 0;
  {
    auto world = env.world();  // freed before MPI_Finalize
    moe::test::g_env = &env;
    moe::test::g_world = world.get();
    if (world->rank() != 0) {
      auto& listeners = ::testing::UnitTest::GetInstance()->listeners();
      delete listeners.Release(listeners.default_result_printer());
      listeners.Append(new moe::test::RankFailurePrinter(world->rank()));
    }
    failed_ranks = RUN_ALL_TESTS() != 0 ? 1 : 0;
    world->allreduce_sum(&failed_ranks, 1);  // any rank's failure fails the job
    std::fflush(stdout);
    if (world->rank() == 0 && failed_ranks > 0)
      std::fprintf(stderr, "[mpi] %lld of %d rank(s) failed\n",
                   static_cast<long long>(failed_ranks), world->size());
    moe::test::g_world = nullptr;
  }
  return failed_ranks > 0 ? 1 : 0;
}
