// The communication layer under mpirun at np 1, 2 and 4: collectives against
// closed forms, adversarial all-to-all-v, splits against Topology, topology
// errors, and (at np 1) that a failing job ends within seconds.
#include <gtest/gtest.h>
#include <mpi.h>

#include <chrono>
#include <climits>
#include <cstdio>
#include <fcntl.h>
#include <fstream>
#include <numeric>
#include <spawn.h>
#include <sstream>
#include <string>
#include <sys/wait.h>
#include <unistd.h>
#include <vector>

#include "core/error.h"
#include "comm/mpi_comm.h"
#include "comm/topology.h"
#include "support/mpi_test_main.h"

#ifdef MOE_WITH_CUDA
#include <cuda_runtime_api.h>

#include "comm/nccl_comm.h"
#endif

extern char** environ;

namespace moe {
namespace {

using test::world;

// Host values, staged in device memory for NcclComm (on_device) or used in place.
template <typename T>
class Buf {
 public:
  Buf(std::vector<T> values, bool on_device) : host_(std::move(values)), dev_(on_device) {
#ifdef MOE_WITH_CUDA
    if (dev_) {
      EXPECT_EQ(cudaMalloc(reinterpret_cast<void**>(&ptr_), (host_.size() + 1) * sizeof(T)),
                cudaSuccess);
      EXPECT_EQ(cudaMemcpy(ptr_, host_.data(), host_.size() * sizeof(T),
                           cudaMemcpyHostToDevice),
                cudaSuccess);
    }
#endif
  }
  ~Buf() {
#ifdef MOE_WITH_CUDA
    if (dev_) cudaFree(ptr_);
#endif
  }
  Buf(const Buf&) = delete;
  Buf& operator=(const Buf&) = delete;
  T* ptr() { return dev_ ? ptr_ : host_.data(); }
  const std::vector<T>& values() {  // after a collective
#ifdef MOE_WITH_CUDA
    if (dev_) {
      EXPECT_EQ(cudaMemcpy(host_.data(), ptr_, host_.size() * sizeof(T),
                           cudaMemcpyDeviceToHost),
                cudaSuccess);
    }
#endif
    return host_;
  }

 private:
  std::vector<T> host_;
  bool dev_;
  T* ptr_ = nullptr;
};

// An MpiComm over a dup of MPI_COMM_SELF: exercises the MPI code path even at np 1.
std::unique_ptr<MpiComm> self_comm() {
  MPI_Comm c = MPI_COMM_NULL;
  mpi_check(MPI_Comm_dup(MPI_COMM_SELF, &c), "MPI_Comm_dup");
  return std::make_unique<MpiComm>(c, true);
}

TEST(MpiEnv, LaunchedAndLocalRanks) {
  EXPECT_TRUE(launched_under_mpi());  // ctest always starts these under mpirun
  EXPECT_TRUE(test::mpi_env().active());
  EXPECT_EQ(test::mpi_env().world_size(), world().size());
  EXPECT_EQ(test::mpi_env().world_rank(), world().rank());
  EXPECT_EQ(test::mpi_env().local_size(), world().size());  // one node
  EXPECT_EQ(test::mpi_env().local_rank(), world().rank());
  if (world().size() == 1)
    EXPECT_EQ(world().describe(), "local (1 rank)");
  else
    EXPECT_EQ(world().describe(), "mpi rank " + std::to_string(world().rank()) + "/" +
                                      std::to_string(world().size()));
}

// Rank r adds (r+1)*(i+1) (scaled per type): the sum is (i+1)*W(W+1)/2, exact in every type
// and in any summation order, since every partial sum is an integer number of `scale` below
// 2^24 (float: i < 4096, so for W < 90), hence the exact checks.
template <typename T>
void check_allreduce(Comm& c, size_t n, T scale, bool dev = false) {
  const int W = c.size(), r = c.rank();
  std::vector<T> init(n);
  for (size_t i = 0; i < n; ++i) init[i] = T(r + 1) * T(i + 1) * scale;
  Buf<T> buf(init, dev);
  c.allreduce_sum(buf.ptr(), n);
  const std::vector<T>& v = buf.values();
  size_t bad = 0, first = n;
  for (size_t i = 0; i < n; ++i)
    if (v[i] != T(i + 1) * T(W * (W + 1) / 2) * scale && bad++ == 0) first = i;
  EXPECT_EQ(bad, 0u) << "n " << n << ", first wrong element " << first;
}

TEST(MpiComm, AllreduceClosedForm) {
  auto self = self_comm();
  for (Comm* c : {&world(), static_cast<Comm*>(self.get())}) {
    for (size_t n : {size_t(0), size_t(1), size_t(1000), size_t(100000)}) {
      check_allreduce<int64_t>(*c, n, 1);
      check_allreduce<float>(*c, n % 4096, 0.25f);  // small enough to stay exact
      check_allreduce<double>(*c, n, 0.125);
    }
  }
}

// Parts of `data` for reduce_scatter_sum / allgather: even (every rank the
// same) or uneven with an empty part (rank 0's) and a large last one.
std::vector<int64_t> part_counts(int W, bool even) {
  std::vector<int64_t> c(static_cast<size_t>(W));
  for (int p = 0; p < W; ++p)
    c[size_t(p)] = even ? 300 : (p == 0 && W > 1 ? 0 : 7 * p + 1000 * (p == W - 1));
  return c;
}

// Rank r holds (r+1)*(i+1)*scale everywhere: after the reduce-scatter its own
// part holds (i+1)*W(W+1)/2*scale (exact in any order: integer numbers of
// 0.25 below 2^24 of them, i < 1000), the other parts are not read.
// Then each rank writes r-specific values in its part, and the all-gather
// must bring every rank's part to every rank.
template <typename T>
void check_reduce_scatter_allgather(Comm& c, bool even, bool dev = false) {
  const int W = c.size(), r = c.rank();
  const std::vector<int64_t> counts = part_counts(W, even);
  int64_t n = 0, mine = 0;
  for (int p = 0; p < W; ++p) {
    if (p == r) mine = n;
    n += counts[size_t(p)];
  }
  std::vector<T> init(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) init[size_t(i)] = T(r + 1) * T(i % 1000 + 1) * T(0.25);
  Buf<T> buf(init, dev);
  c.reduce_scatter_sum(buf.ptr(), counts.data());
  std::vector<T> v = buf.values();
  size_t bad = 0;
  for (int64_t i = mine; i < mine + counts[size_t(r)]; ++i)
    bad += v[size_t(i)] != T(i % 1000 + 1) * T(W * (W + 1) / 2) * T(0.25);
  EXPECT_EQ(bad, 0u) << "reduce_scatter, even " << even;

  int64_t off = 0;
  for (int p = 0; p < W; ++p) {
    for (int64_t i = off; i < off + counts[size_t(p)]; ++i)
      v[size_t(i)] = p == r ? T(p * 100000 + (i - off)) : T(-1);
    off += counts[size_t(p)];
  }
  Buf<T> gathered(v, dev);
  c.allgather(gathered.ptr(), counts.data());
  const std::vector<T>& g = gathered.values();
  bad = 0;
  off = 0;
  for (int p = 0; p < W; ++p) {
    for (int64_t i = off; i < off + counts[size_t(p)]; ++i)
      bad += g[size_t(i)] != T(p * 100000 + (i - off));
    off += counts[size_t(p)];
  }
  EXPECT_EQ(bad, 0u) << "allgather, even " << even;
}

TEST(MpiComm, ReduceScatterAndAllgatherParts) {
  auto self = self_comm();
  for (Comm* c : {&world(), static_cast<Comm*>(self.get())})
    for (bool even : {true, false}) {
      check_reduce_scatter_allgather<float>(*c, even);
      check_reduce_scatter_allgather<double>(*c, even);
    }
  LocalComm local;
  check_reduce_scatter_allgather<float>(local, false);
}

TEST(MpiComm, AllreduceInt64BeyondInt32) {
  int64_t v = (int64_t(1) << 40) + world().rank();
  world().allreduce_sum(&v, 1);
  const int64_t W = world().size();
  EXPECT_EQ(v, W * (int64_t(1) << 40) + W * (W - 1) / 2);
}

// Elements from src to dst: uneven, with zeros; the last rank sends nothing at
// all (at W > 1), and rank 0 sends a large block to the last rank.
int64_t count(int src, int dst, int W) {
  if (W > 1 && src == W - 1) return 0;
  if (src == 0 && dst == W - 1) return 5000;
  return (src * 3 + dst * 5 + 1) % 4;
}
double value(int src, int dst, int64_t i, int W) { return double((src * W + dst) * 10000 + i); }

template <typename T>
void check_alltoallv(Comm& c, bool dev = false) {
  const int W = c.size(), r = c.rank();
  std::vector<int64_t> sc(static_cast<size_t>(W)), rc(static_cast<size_t>(W));
  std::vector<T> send;
  for (int p = 0; p < W; ++p) {
    sc[size_t(p)] = count(r, p, W);
    rc[size_t(p)] = count(p, r, W);
    for (int64_t i = 0; i < sc[size_t(p)]; ++i) send.push_back(T(value(r, p, i, W)));
  }
  const int64_t total = std::accumulate(rc.begin(), rc.end(), int64_t(0));
  const size_t slack = 7;  // must stay untouched
  Buf<T> send_buf(send, dev), recv_buf(std::vector<T>(size_t(total) + slack, T(-1)), dev);
  c.alltoallv(send_buf.ptr(), sc.data(), recv_buf.ptr(), rc.data());
  const std::vector<T>& recv = recv_buf.values();
  size_t k = 0, bad = 0;
  std::string first;
  for (int p = 0; p < W; ++p)
    for (int64_t i = 0; i < rc[size_t(p)]; ++i, ++k)
      if (recv[k] != T(value(p, r, i, W)) && bad++ == 0)
        first = "from rank " + std::to_string(p) + " element " + std::to_string(i);
  for (size_t j = 0; j < slack; ++j)
    if (recv[k + j] != T(-1) && bad++ == 0) first = "written past the end";
  EXPECT_EQ(bad, 0u) << "rank " << r << ": first wrong: " << first;
}

TEST(MpiComm, AlltoallvUnevenWithZerosAndSilentPeer) {
  auto self = self_comm();
  for (Comm* c : {&world(), static_cast<Comm*>(self.get())}) {
    check_alltoallv<int64_t>(*c);
    check_alltoallv<float>(*c);
    check_alltoallv<double>(*c);
  }
}

TEST(MpiComm, AlltoallvAllZero) {
  const size_t W = size_t(world().size());
  std::vector<int64_t> zeros(W, 0);
  float dummy = 0;
  world().alltoallv(&dummy, zeros.data(), &dummy, zeros.data());
  EXPECT_EQ(dummy, 0.0f);
}

TEST(MpiComm, AlltoallvRefusesCountsBeyondInt) {
  auto self = self_comm();  // local checks: throw before any communication
  double d = 0;
  int64_t big = int64_t(INT_MAX) + 1, one = 1, neg = -1;
  EXPECT_THROW(self->alltoallv(&d, &big, &d, &one), InternalError);
  EXPECT_THROW(self->alltoallv(&d, &one, &d, &big), InternalError);
  EXPECT_THROW(self->alltoallv(&d, &neg, &d, &one), InternalError);
  try {
    self->alltoallv(&d, &big, &d, &one);
  } catch (const InternalError& e) {
    EXPECT_NE(std::string(e.what()).find("INT_MAX"), std::string::npos) << e.what();
  }
}

void check_broadcast(Comm& c, bool dev = false) {
  for (size_t bytes : {size_t(0), size_t(1), size_t(4097)}) {
    for (int root = 0; root < c.size(); ++root) {
      std::vector<unsigned char> b(bytes, 0);
      if (c.rank() == root)
        for (size_t i = 0; i < bytes; ++i) b[i] = static_cast<unsigned char>(i * 7 + root + 1);
      Buf<unsigned char> buf(b, dev);
      c.broadcast(buf.ptr(), bytes, root);
      size_t bad = 0;
      for (size_t i = 0; i < bytes; ++i)
        bad += buf.values()[i] != static_cast<unsigned char>(i * 7 + root + 1);
      EXPECT_EQ(bad, 0u) << "root " << root << ", " << bytes << " bytes";
    }
  }
  c.barrier();
}

TEST(MpiComm, BroadcastFromEveryRoot) { check_broadcast(world()); }

// The world ranks of a communicator's members, in its rank order.
std::vector<int> members(Comm& c, bool dev = false) {
  std::vector<int64_t> v(size_t(c.size()), 0);
  v[size_t(c.rank())] = world().rank();
  Buf<int64_t> buf(v, dev);
  c.allreduce_sum(buf.ptr(), v.size());
  return std::vector<int>(buf.values().begin(), buf.values().end());
}

TEST(MpiComm, SplitByColorOrdersByKey) {
  const int W = world().size(), r = world().rank();
  auto sub = world().split(r % 2, -r);  // reverse order inside each color
  std::vector<int> expect;
  for (int q = W - 1; q >= 0; --q)
    if (q % 2 == r % 2) expect.push_back(q);
  EXPECT_EQ(members(*sub), expect);
}

void check_communicators(Comm& w, bool dev = false) {
  const int W = w.size(), r = w.rank();
  for (int ep : {1, 2, 4}) {
    if (W % ep != 0) continue;
    Topology t(r, W, ep, 8);
    Communicators c = make_communicators(w, t);
    EXPECT_EQ(c.world->size(), W);
    EXPECT_EQ(c.world->rank(), r);
    EXPECT_EQ(c.ep->size(), ep);
    EXPECT_EQ(c.ep->rank(), t.ep_rank);
    EXPECT_EQ(c.replica->size(), t.dp_size);
    EXPECT_EQ(c.replica->rank(), t.ep_group);
    EXPECT_EQ(members(*c.ep, dev), t.ep_group_ranks()) << "ep_size " << ep;
    EXPECT_EQ(members(*c.replica, dev), t.replica_ranks()) << "ep_size " << ep;
    EXPECT_EQ(members(*c.world, dev), members(w, dev));
    // The groups work as communicators: an all-to-all-v inside the EP group.
    check_alltoallv<float>(*c.ep, dev);
  }
}

TEST(MpiComm, CommunicatorsMatchTopology) { check_communicators(world()); }

#ifdef MOE_WITH_CUDA
// NcclComm on device buffers: one GPU per rank (device = local rank), else skipped.
TEST(NcclComm, CollectivesOnDevice) {
  int devices = 0;
  if (cudaGetDeviceCount(&devices) != cudaSuccess) devices = 0;
  int64_t short_of_gpus = devices < test::mpi_env().local_size() ? 1 : 0;
  world().allreduce_sum(&short_of_gpus, 1);  // every rank skips, or none
  if (short_of_gpus > 0) GTEST_SKIP() << "needs a GPU per rank on each node";
  // Buffers are written and read with blocking cudaMemcpy: the legacy stream's order.
  NcclComm nc(world(), test::mpi_env().local_rank(), cudaStreamLegacy, 60.0);
  EXPECT_EQ(nc.compute_stream(), cudaStreamLegacy);
  EXPECT_EQ(nc.size(), world().size());
  EXPECT_EQ(nc.rank(), world().rank());
  for (size_t n : {size_t(0), size_t(1), size_t(100000)}) {
    check_allreduce<int64_t>(nc, n, 1, true);
    check_allreduce<float>(nc, n % 4096, 0.25f, true);
    check_allreduce<double>(nc, n, 0.125, true);
  }
  check_alltoallv<int64_t>(nc, true);
  check_alltoallv<float>(nc, true);
  check_alltoallv<double>(nc, true);
  for (bool even : {true, false}) {
    check_reduce_scatter_allgather<float>(nc, even, true);
    check_reduce_scatter_allgather<double>(nc, even, true);
  }
  check_broadcast(nc, true);
  check_communicators(nc, true);
  EXPECT_NE(nc.describe().find("nccl rank"), std::string::npos);
}
#endif

TEST(Topology, Layout) {
  Topology t(5, 8, 4, 64);
  EXPECT_EQ(t.ep_rank, 1);
  EXPECT_EQ(t.ep_group, 1);
  EXPECT_EQ(t.dp_size, 2);
  EXPECT_EQ(t.experts_per_rank, 16);
  EXPECT_EQ(t.first_expert, 16);
  EXPECT_EQ(t.owner_of(0), 0);
  EXPECT_EQ(t.owner_of(31), 1);
  EXPECT_EQ(t.owner_of(63), 3);
  EXPECT_TRUE(t.holds(16));
  EXPECT_FALSE(t.holds(32));
  EXPECT_EQ(t.ep_group_ranks(), (std::vector<int>{4, 5, 6, 7}));
  EXPECT_EQ(t.replica_ranks(), (std::vector<int>{1, 5}));
  const std::string d = t.describe();
  EXPECT_NE(d.find("world 8 ranks, ep_size 4"), std::string::npos) << d;
  EXPECT_NE(d.find("experts 16-31 on ranks 1,5"), std::string::npos) << d;
  EXPECT_NE(d.find("EP group 1: ranks 4,5,6,7"), std::string::npos) << d;
}

TEST(Topology, SingleRank) {
  Topology t(0, 1, 1, 8);
  EXPECT_EQ(t.experts_per_rank, 8);
  EXPECT_EQ(t.dp_size, 1);
  LocalComm local;
  Communicators c = make_communicators(local, t);
  EXPECT_EQ(c.ep->describe(), "local (1 rank)");
  EXPECT_EQ(c.replica->describe(), "local (1 rank)");
  EXPECT_EQ(c.world->size(), 1);
}

void expect_config_error(int world_size, int ep, int n_routed, const std::string& part) {
  try {
    Topology t(0, world_size, ep, n_routed);
    ADD_FAILURE() << "no error for world " << world_size << " ep " << ep << " n " << n_routed;
  } catch (const ConfigError& e) {
    const std::string m = e.what();
    EXPECT_EQ(m.rfind("config: parallel.ep_size: ", 0), 0u) << m;
    EXPECT_NE(m.find(part), std::string::npos) << m;
  }
}

TEST(Topology, Errors) {
  expect_config_error(4, 3, 63, "3 does not divide the number of ranks 4");
  expect_config_error(4, 2, 7, "2 does not divide moe.n_routed 7");
  expect_config_error(4, 0, 8, "0 must be > 0");
  expect_config_error(2, -2, 8, "-2 must be > 0");
  EXPECT_THROW(Topology(4, 4, 1, 8), InternalError);  // rank outside the world
}

// ---- whole-job behaviour, through helper processes (only at np 1) ----

struct JobResult {
  int status = -1;  // exit code; 128+signal when killed
  double seconds = 0;
  std::string output;
};

// Runs argv with the launcher's variables removed from the environment (so a
// nested mpirun, or a plain process, starts a job of its own), bounded by timeout(1).
JobResult run_clean(std::vector<std::string> args, int limit_s) {
  args.insert(args.begin(), {"/usr/bin/timeout", "-k", "5", std::to_string(limit_s)});
  std::vector<char*> env;
  for (char** e = environ; *e; ++e) {
    std::string s = *e;
    bool launcher = s.rfind("OMPI_", 0) == 0 || s.rfind("PMIX_", 0) == 0 ||
                    s.rfind("PMI_", 0) == 0 || s.rfind("OPAL_", 0) == 0;
    if (!launcher || s.rfind("OMPI_ALLOW_RUN_AS_ROOT", 0) == 0) env.push_back(*e);
  }
  env.push_back(nullptr);
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  const std::string log = std::string(MOE_BINARY_DIR) + "/mpi_probe_" +
                          std::to_string(getpid()) + ".log";
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_addopen(&fa, 1, log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  posix_spawn_file_actions_adddup2(&fa, 1, 2);
  JobResult run;
  auto t0 = std::chrono::steady_clock::now();
  pid_t pid = 0;
  int rc = posix_spawn(&pid, argv[0], &fa, nullptr, argv.data(), env.data());
  posix_spawn_file_actions_destroy(&fa);
  if (rc != 0) {
    run.output = "posix_spawn failed";
    return run;
  }
  int st = 0;
  waitpid(pid, &st, 0);
  run.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  run.status = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
  std::ifstream in(log);
  std::stringstream ss;
  ss << in.rdbuf();
  run.output = ss.str();
  std::remove(log.c_str());
  return run;
}

JobResult probe_job(const std::string& mode) {
  return run_clean({MOE_MPIEXEC, "--oversubscribe", "--allow-run-as-root", "-np", "2",
                    MOE_FAIL_PROBE, mode},
                   60);
}

TEST(MpiJob, FailingRankEndsTheJobWithinSeconds) {
  if (world().size() != 1) GTEST_SKIP() << "runs nested jobs from the np 1 run only";
  JobResult ok = probe_job("ok");
  EXPECT_EQ(ok.status, 0) << ok.output;
  EXPECT_NE(ok.output.find("probe: rank 0 passed"), std::string::npos) << ok.output;
  EXPECT_NE(ok.output.find("probe: rank 1 passed"), std::string::npos) << ok.output;
  for (const char* mode : {"abort", "throw", "exit"}) {
    JobResult r = probe_job(mode);
    EXPECT_NE(r.status, 0) << mode << "\n" << r.output;
    EXPECT_NE(r.status, 124) << mode << ": hung until timeout(1)\n" << r.output;
    EXPECT_LT(r.seconds, 20.0) << mode << "\n" << r.output;
    EXPECT_EQ(r.output.find("probe: rank 0 passed"), std::string::npos) << mode << "\n"
                                                                          << r.output;
    if (std::string(mode) == "abort") {
      EXPECT_EQ(r.status, 3) << r.output;
    }
    if (std::string(mode) == "throw") {
      EXPECT_NE(r.output.find("error: probe: rank 1 failed on purpose"), std::string::npos)
          << r.output;
    }
  }
}

TEST(MpiJob, LaunchScript) {
  if (world().size() != 1) GTEST_SKIP() << "runs nested jobs from the np 1 run only";
  const std::string script = std::string(MOE_SOURCE_DIR) + "/scripts/launch.sh";
  auto launch = [&](std::vector<std::string> args) {
    args.insert(args.begin(), {"env", std::string("MPIRUN=") + MOE_MPIEXEC, "bash", script});
    return run_clean(args, 60);
  };
  JobResult dry = launch({"-n", "3", "--dry-run", "--", MOE_FAIL_PROBE, "ok"});
  EXPECT_EQ(dry.status, 0) << dry.output;
  for (const char* part : {"-np 3", "--bind-to none", "-x OMP_WAIT_POLICY", MOE_FAIL_PROBE})
    EXPECT_NE(dry.output.find(part), std::string::npos) << part << "\n" << dry.output;
  EXPECT_EQ(dry.output.find("probe:"), std::string::npos) << dry.output;  // nothing ran
  JobResult ok = launch({"-n", "2", "--", MOE_FAIL_PROBE, "ok"});
  EXPECT_EQ(ok.status, 0) << ok.output;
  EXPECT_NE(ok.output.find("probe: rank 1 passed"), std::string::npos) << ok.output;
  JobResult abort = launch({"-n", "2", "--", MOE_FAIL_PROBE, "abort"});
  EXPECT_EQ(abort.status, 3) << abort.output;
  JobResult bad = launch({"-n", "0", "--", MOE_FAIL_PROBE});
  EXPECT_EQ(bad.status, 2) << bad.output;
}

TEST(MpiJob, RunsWithoutMpirun) {
  if (world().size() != 1) GTEST_SKIP() << "runs plain processes from the np 1 run only";
  JobResult single = run_clean({MOE_FAIL_PROBE, "single"}, 60);
  EXPECT_EQ(single.status, 0) << single.output;
  EXPECT_NE(single.output.find("probe: active 1 launched 0 world local (1 rank) local 0/1"),
            std::string::npos)
      << single.output;
  JobResult skip = run_clean({MOE_FAIL_PROBE, "single-skip"}, 60);
  EXPECT_EQ(skip.status, 0) << skip.output;
  EXPECT_NE(skip.output.find("probe: active 0 launched 0 world local (1 rank) local 0/1"),
            std::string::npos)
      << skip.output;
}

}  // namespace
}  // namespace moe
