// The emulated NCCL (emu/src/nccl.cpp) against NCCL's documentation, by
// hand, under mpirun at 2 and 4 ranks: what each collective computes (small
// integers, exact in fp32; bfloat16 and float16 rounding cases), in-place
// forms and overlaps that are not, root 1, split, grouped send/recv, and
// that mismatched calls and a broken non-blocking protocol are reported
// instead of hanging or running. Every rank runs every test in the same
// order; tests avoid ASSERT_* between collectives (a rank that returns early
// would leave the others waiting until EMU_NCCL_TIMEOUT).
#include <gtest/gtest.h>
#include <mpi.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include <cuda_bf16.h>
#include <nccl.h>

#include "emu_test_util.h"
#include "emu/device.h"

namespace {

using emu_test::device;
using emu_test::host;

int world_rank() {
  int r = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &r);
  return r;
}
int world_size() {
  int n = 0;
  MPI_Comm_size(MPI_COMM_WORLD, &n);
  return n;
}

bool contains(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }

class Nccl : public ::testing::Test {
 protected:
  void SetUp() override {
    emu::reset_device();
    unsetenv("EMU_NCCL_INPROGRESS_POLLS");
    rank = world_rank();
    P = world_size();
    ASSERT_EQ(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking), cudaSuccess);
    comm = make_comm(nullptr);
  }
  void TearDown() override {
    ncclCommDestroy(comm);
    emu::reset_device();
    unsetenv("EMU_NCCL_INPROGRESS_POLLS");
  }

  // A communicator over the world; a non-blocking one is polled until ready.
  ncclComm_t make_comm(ncclConfig_t* config) {
    ncclUniqueId id{};
    if (rank == 0) {
      EXPECT_EQ(ncclGetUniqueId(&id), ncclSuccess);
    }
    MPI_Bcast(&id, sizeof id, MPI_BYTE, 0, MPI_COMM_WORLD);
    ncclComm_t c = nullptr;
    const ncclResult_t r = ncclCommInitRankConfig(&c, P, id, rank, config);
    EXPECT_TRUE(r == ncclSuccess || r == ncclInProgress)
        << ncclGetErrorString(r) << ": " << ncclGetLastError(nullptr);
    ncclResult_t state = ncclInProgress;
    while (c && state == ncclInProgress) ncclCommGetAsyncError(c, &state);
    EXPECT_EQ(state, ncclSuccess);
    return c;
  }

  void sync() { EXPECT_EQ(cudaStreamSynchronize(stream), cudaSuccess) << emu::fault_message(); }

  int rank = 0, P = 1;
  cudaStream_t stream = nullptr;
  ncclComm_t comm = nullptr;
};

TEST_F(Nccl, CommunicatorQueries) {
  int v = 0, n = 0, r = -1, d = -1;
  EXPECT_EQ(ncclGetVersion(&v), ncclSuccess);
  EXPECT_EQ(v, NCCL_VERSION_CODE);
  EXPECT_EQ(ncclCommCount(comm, &n), ncclSuccess);
  EXPECT_EQ(n, P);
  EXPECT_EQ(ncclCommUserRank(comm, &r), ncclSuccess);
  EXPECT_EQ(r, rank);
  EXPECT_EQ(ncclCommCuDevice(comm, &d), ncclSuccess);
  EXPECT_EQ(d, 0);
  ncclResult_t state = ncclInternalError;
  EXPECT_EQ(ncclCommGetAsyncError(comm, &state), ncclSuccess);
  EXPECT_EQ(state, ncclSuccess);
  EXPECT_STREQ(ncclGetErrorString(ncclInProgress), "NCCL operation in progress");
  EXPECT_TRUE(contains(ncclGetErrorString(ncclInvalidUsage), "invalid usage"));
}

// Only communicators over the whole MPI job: anything else is a clear error
// on every process, not a hang.
TEST_F(Nccl, InitOverPartOfTheJobIsAnError) {
  ncclUniqueId id{};
  if (rank == 0) ncclGetUniqueId(&id);
  MPI_Bcast(&id, sizeof id, MPI_BYTE, 0, MPI_COMM_WORLD);
  ncclComm_t c = nullptr;
  EXPECT_EQ(ncclCommInitRank(&c, P + 1, id, rank), ncclInvalidUsage);
  EXPECT_EQ(c, nullptr);
  EXPECT_TRUE(contains(ncclGetLastError(nullptr), "MPI_COMM_WORLD")) << ncclGetLastError(nullptr);
  EXPECT_EQ(ncclCommInitRank(&c, P, id, 0), ncclInvalidUsage);  // every process claims rank 0
  EXPECT_TRUE(contains(ncclGetLastError(nullptr), "both passed rank 0")) << ncclGetLastError(nullptr);
}

// Rank r contributes (r + 1) * (i + 1): sums, maxima and minima of small
// integers, exact in every type.
TEST_F(Nccl, AllReduceSumMaxMinAvg) {
  const size_t n = 6;
  std::vector<int32_t> xi(n);
  std::vector<float> xf(n);
  std::vector<int64_t> xl(n);
  for (size_t i = 0; i < n; ++i) {
    xi[i] = (rank + 1) * int(i + 1);
    xf[i] = float(xi[i]);
    xl[i] = (int64_t(rank + 1) << 40) + int64_t(i);
  }
  int32_t* di = device(xi);
  int32_t* sum = device(std::vector<int32_t>(n, -1));
  int32_t* mx = device(std::vector<int32_t>(n, -1));
  int32_t* mn = device(std::vector<int32_t>(n, -1));
  float* df = device(xf);  // avg in place
  int64_t* dl = device(xl);
  int64_t* suml = device(std::vector<int64_t>(n, -1));
  EXPECT_EQ(ncclAllReduce(di, sum, n, ncclInt32, ncclSum, comm, stream), ncclSuccess);
  EXPECT_EQ(ncclAllReduce(di, mx, n, ncclInt32, ncclMax, comm, stream), ncclSuccess);
  EXPECT_EQ(ncclAllReduce(di, mn, n, ncclInt, ncclMin, comm, stream), ncclSuccess);
  EXPECT_EQ(ncclAllReduce(df, df, n, ncclFloat, ncclAvg, comm, stream), ncclSuccess);
  EXPECT_EQ(ncclAllReduce(dl, suml, n, ncclInt64, ncclSum, comm, stream), ncclSuccess);
  sync();
  const auto hs = host(sum, n), hx = host(mx, n), hn = host(mn, n);
  const auto ha = host(df, n);
  const auto hl = host(suml, n);
  for (size_t i = 0; i < n; ++i) {
    const int k = int(i + 1);
    EXPECT_EQ(hs[i], k * P * (P + 1) / 2) << i;
    EXPECT_EQ(hx[i], k * P) << i;
    EXPECT_EQ(hn[i], k) << i;
    EXPECT_EQ(ha[i], float(k) * float(P + 1) / 2.0f) << i;  // 1.5 k or 2.5 k: exact
    EXPECT_EQ(hl[i], (int64_t(P) * (P + 1) / 2 << 40) + int64_t(P) * int64_t(i)) << i;
  }
}

float bf16(float f) { return float(__nv_bfloat16(f)); }

// bfloat16 is summed in fp32 and rounded once, to nearest even. Element 0:
// rank 0 gives 1, the others 2^-8 each (half of bfloat16's spacing at 1).
// At 2 ranks 1 + 2^-8 is a tie between 1 and 1 + 2^-7: even is 1. At 4
// ranks 1 + 3 * 2^-8 ties between 1 + 2^-7 (odd) and 1 + 2^-6: 1.015625,
// where rounding after every addition would have stayed at 1. Element 1:
// rank 0 gives 1 + 2^-7, so the ties break the other way.
TEST_F(Nccl, Bfloat16AndFloat16SumInFp32AndRoundOnce) {
  const float u = 0x1p-8f;
  std::vector<__nv_bfloat16> x = {__nv_bfloat16(rank == 0 ? 1.0f : u),
                                  __nv_bfloat16(rank == 0 ? 1.0f + 2 * u : u),
                                  __nv_bfloat16(float(rank + 1))};
  for (size_t i = 0; i < 2; ++i)
    ASSERT_EQ(float(x[i]), rank == 0 ? 1.0f + 2 * u * float(i) : u);  // exact inputs
  __nv_bfloat16* dx = device(x);
  __nv_bfloat16* sum = device(x);
  __nv_bfloat16* avg = device(x);
  EXPECT_EQ(ncclAllReduce(dx, sum, 2, ncclBfloat16, ncclSum, comm, stream), ncclSuccess);
  EXPECT_EQ(ncclAllReduce(dx + 2, avg + 2, 1, ncclBfloat16, ncclAvg, comm, stream), ncclSuccess);
  // float16 (bits): spacing 2^-10 at 1; rank 0 gives 1 (0x3C00), the
  // others 2^-11 (0x1000). 1 + 2^-9 is 0x3C02.
  std::vector<uint16_t> h = {uint16_t(rank == 0 ? 0x3C00 : 0x1000)};
  uint16_t* dh = device(h);
  EXPECT_EQ(ncclAllReduce(dh, dh, 1, ncclHalf, ncclSum, comm, stream), ncclSuccess);
  sync();
  const auto s = host(sum, 3), a = host(avg, 3);
  const uint16_t hs = host(dh, 1)[0];
  if (P == 2) {
    EXPECT_EQ(float(s[0]), 1.0f);
    EXPECT_EQ(float(s[1]), 1.015625f);  // 1 + 2^-7 + 2^-8: tie, up to even 1 + 2^-6
    EXPECT_EQ(hs, 0x3C00);
  } else if (P == 4) {
    EXPECT_EQ(float(s[0]), 1.015625f);
    EXPECT_EQ(float(s[1]), 1.015625f);  // 1 + 5 * 2^-8: tie, down to even 1 + 2^-6
    EXPECT_EQ(hs, 0x3C02);
  } else {
    EXPECT_EQ(float(s[0]), bf16(1.0f + float(P - 1) * u));
  }
  EXPECT_EQ(float(a[2]), float(P + 1) / 2.0f);
}

// Rank q's element j * m + k of the reduce-scatter input is 100 (q + 1) +
// j m + k: rank r's result is 100 P (P + 1) / 2 + P (r m + k). All-gather:
// rank q gives 10 q + k.
TEST_F(Nccl, ReduceScatterAndAllGatherOutOfPlaceAndInPlace) {
  const size_t m = 3;
  std::vector<float> in(P * m);
  for (size_t j = 0; j < size_t(P); ++j)
    for (size_t k = 0; k < m; ++k) in[j * m + k] = float(100 * (rank + 1) + int(j * m + k));
  float* send = device(in);
  float* recv = device(std::vector<float>(m, -1.0f));
  float* inplace = device(in);
  EXPECT_EQ(ncclReduceScatter(send, recv, m, ncclFloat32, ncclSum, comm, stream), ncclSuccess);
  EXPECT_EQ(ncclReduceScatter(inplace, inplace + rank * m, m, ncclFloat32, ncclSum, comm, stream),
            ncclSuccess);

  std::vector<float> mine(m), gathered_in(P * m, -1.0f);
  for (size_t k = 0; k < m; ++k) mine[k] = gathered_in[rank * m + k] = float(10 * rank + int(k));
  float* ag_send = device(mine);
  float* ag_recv = device(std::vector<float>(P * m, -1.0f));
  float* ag_inplace = device(gathered_in);
  EXPECT_EQ(ncclAllGather(ag_send, ag_recv, m, ncclFloat32, comm, stream), ncclSuccess);
  EXPECT_EQ(ncclAllGather(ag_inplace + rank * m, ag_inplace, m, ncclFloat32, comm, stream), ncclSuccess);
  sync();
  const auto r1 = host(recv, m), r2 = host(inplace, P * m);
  for (size_t k = 0; k < m; ++k) {
    const float want = float(100 * P * (P + 1) / 2 + P * int(rank * m + k));
    EXPECT_EQ(r1[k], want) << k;
    EXPECT_EQ(r2[rank * m + k], want) << k;
  }
  const auto g1 = host(ag_recv, P * m), g2 = host(ag_inplace, P * m);
  for (size_t q = 0; q < size_t(P); ++q)
    for (size_t k = 0; k < m; ++k) {
      EXPECT_EQ(g1[q * m + k], float(10 * int(q) + int(k)));
      EXPECT_EQ(g2[q * m + k], float(10 * int(q) + int(k)));
    }
}

// "In-place Operations": any overlap but the in-place one is rejected at
// the call, naming the rule, and nothing is queued.
TEST_F(Nccl, OverlapsThatAreNotInPlaceAreRejected) {
  const size_t m = 4;
  float* buf = device(std::vector<float>((P + 1) * m, 0.0f));
  EXPECT_EQ(ncclAllGather(buf + rank * m + 1, buf, m, ncclFloat32, comm, stream), ncclInvalidArgument);
  EXPECT_TRUE(contains(ncclGetLastError(comm), "in place means sendbuff == recvbuff + rank * sendcount"))
      << ncclGetLastError(comm);
  EXPECT_EQ(ncclReduceScatter(buf, buf + rank * m + 1, m, ncclFloat32, ncclSum, comm, stream),
            ncclInvalidArgument);
  EXPECT_TRUE(contains(ncclGetLastError(comm), "in place means recvbuff == sendbuff + rank * recvcount"))
      << ncclGetLastError(comm);
  EXPECT_EQ(ncclAllReduce(buf, buf + 1, m, ncclFloat32, ncclSum, comm, stream), ncclInvalidArgument);
  EXPECT_TRUE(contains(ncclGetLastError(comm), "in place means sendbuff == recvbuff"))
      << ncclGetLastError(comm);
  // Past the end of the allocation, and a host pointer.
  EXPECT_EQ(ncclAllReduce(buf, buf + m, (P + 1) * m, ncclFloat32, ncclSum, comm, stream),
            ncclInvalidArgument);
  EXPECT_TRUE(contains(ncclGetLastError(comm), "past the end")) << ncclGetLastError(comm);
  std::vector<float> h(m);
  EXPECT_EQ(ncclAllReduce(h.data(), buf, m, ncclFloat32, ncclSum, comm, stream), ncclInvalidArgument);
  EXPECT_TRUE(contains(ncclGetLastError(comm), "not device memory")) << ncclGetLastError(comm);
  sync();
  EXPECT_EQ(emu::fault_message(), "");
}

// Root 1: the reduction lands on rank 1 only (recvbuff is not used, and
// may be NULL, elsewhere); the broadcast reaches every rank.
TEST_F(Nccl, ReduceAndBroadcastWithRoot1) {
  const size_t n = 5;
  std::vector<int32_t> x(n);
  for (size_t i = 0; i < n; ++i) x[i] = (rank + 1) * int(i + 1);
  int32_t* dx = device(x);
  int32_t* red = rank == 1 ? device(std::vector<int32_t>(n, -7)) : nullptr;
  EXPECT_EQ(ncclReduce(dx, red, n, ncclInt32, ncclSum, 1, comm, stream), ncclSuccess);
  std::vector<double> b(n, -1.0);
  if (rank == 1)
    for (size_t i = 0; i < n; ++i) b[i] = 42.5 + double(i);
  double* bsend = rank == 1 ? device(b) : nullptr;
  double* brecv = device(std::vector<double>(n, -1.0));
  double* binplace = device(b);
  EXPECT_EQ(ncclBroadcast(bsend, brecv, n, ncclFloat64, 1, comm, stream), ncclSuccess);
  EXPECT_EQ(ncclBcast(binplace, n, ncclDouble, 1, comm, stream), ncclSuccess);
  sync();
  if (rank == 1) {
    const auto r = host(red, n);
    for (size_t i = 0; i < n; ++i) EXPECT_EQ(r[i], int(i + 1) * P * (P + 1) / 2) << i;
  }
  const auto r1 = host(brecv, n), r2 = host(binplace, n);
  for (size_t i = 0; i < n; ++i) {
    EXPECT_EQ(r1[i], 42.5 + double(i));
    EXPECT_EQ(r2[i], 42.5 + double(i));
  }
}

// Even and odd ranks: each half sums its world ranks; a NOCOLOR rank gets
// no communicator and the rest are renumbered by key, ties by parent rank.
TEST_F(Nccl, SplitIntoEvenAndOddRanks) {
  ncclComm_t half = nullptr;
  EXPECT_EQ(ncclCommSplit(comm, rank % 2, rank, &half, nullptr), ncclSuccess);
  int n = 0, r = -1;
  EXPECT_EQ(ncclCommCount(half, &n), ncclSuccess);
  EXPECT_EQ(ncclCommUserRank(half, &r), ncclSuccess);
  EXPECT_EQ(n, (P - rank % 2 + 1) / 2);
  EXPECT_EQ(r, rank / 2);
  int64_t* d = device(std::vector<int64_t>{rank});
  EXPECT_EQ(ncclAllReduce(d, d, 1, ncclInt64, ncclSum, half, stream), ncclSuccess);
  sync();
  int64_t want = 0;
  for (int q = rank % 2; q < P; q += 2) want += q;
  EXPECT_EQ(host(d, 1)[0], want);
  EXPECT_EQ(ncclCommDestroy(half), ncclSuccess);

  ncclComm_t rest = nullptr;
  EXPECT_EQ(ncclCommSplit(comm, rank == 0 ? NCCL_SPLIT_NOCOLOR : 7, 0, &rest, nullptr), ncclSuccess);
  if (rank == 0) {
    EXPECT_EQ(rest, nullptr);
  } else {
    EXPECT_EQ(ncclCommCount(rest, &n), ncclSuccess);
    EXPECT_EQ(n, P - 1);
    EXPECT_EQ(ncclCommUserRank(rest, &r), ncclSuccess);
    EXPECT_EQ(r, rank - 1);
    int32_t* one = device(std::vector<int32_t>{1});
    EXPECT_EQ(ncclAllReduce(one, one, 1, ncclInt32, ncclSum, rest, stream), ncclSuccess);
    sync();
    EXPECT_EQ(host(one, 1)[0], P - 1);
    EXPECT_EQ(ncclCommDestroy(rest), ncclSuccess);
  }
}

// A ring (send to the next rank, receive from the previous) and a transfer
// to itself, on two streams in one group.
TEST_F(Nccl, GroupedSendRecvRingWithSendToSelf) {
  const size_t m = 3;
  cudaStream_t other;
  ASSERT_EQ(cudaStreamCreateWithFlags(&other, cudaStreamNonBlocking), cudaSuccess);
  std::vector<int32_t> a(m), c(m);
  for (size_t k = 0; k < m; ++k) {
    a[k] = 100 * rank + int(k);
    c[k] = 1000 * rank + int(k);
  }
  int32_t* da = device(a);
  int32_t* dc = device(c);
  int32_t* from_prev = device(std::vector<int32_t>(m, -1));
  int32_t* from_self = device(std::vector<int32_t>(m, -1));
  const int next = (rank + 1) % P, prev = (rank + P - 1) % P;
  EXPECT_EQ(ncclGroupStart(), ncclSuccess);
  EXPECT_EQ(ncclSend(da, m, ncclInt32, next, comm, stream), ncclSuccess);
  EXPECT_EQ(ncclRecv(from_prev, m, ncclInt32, prev, comm, stream), ncclSuccess);
  EXPECT_EQ(ncclRecv(from_self, m, ncclInt32, rank, comm, other), ncclSuccess);
  EXPECT_EQ(ncclSend(dc, m, ncclInt32, rank, comm, other), ncclSuccess);
  EXPECT_EQ(ncclGroupEnd(), ncclSuccess);
  EXPECT_EQ(cudaStreamSynchronize(other), cudaSuccess) << emu::fault_message();
  sync();
  const auto p = host(from_prev, m), s = host(from_self, m);
  for (size_t k = 0; k < m; ++k) {
    EXPECT_EQ(p[k], 100 * prev + int(k));
    EXPECT_EQ(s[k], 1000 * rank + int(k));
  }
}

// Collectives in one group run in call order when the group ends.
TEST_F(Nccl, GroupOfCollectives) {
  int32_t* x = device(std::vector<int32_t>{rank + 1});
  int32_t* g = device(std::vector<int32_t>(P, -1));
  EXPECT_EQ(ncclGroupStart(), ncclSuccess);
  EXPECT_EQ(ncclAllReduce(x, x, 1, ncclInt32, ncclSum, comm, stream), ncclSuccess);
  EXPECT_EQ(ncclAllGather(x, g, 1, ncclInt32, comm, stream), ncclSuccess);
  EXPECT_EQ(ncclGroupEnd(), ncclSuccess);
  sync();
  for (int32_t v : host(g, P)) EXPECT_EQ(v, P * (P + 1) / 2);
}

// The ranks compare what they called before any data moves: a mismatch is
// a device fault naming both sides, on every rank, not a hang.
TEST_F(Nccl, MismatchedCallsAreAFaultNamingBothSides) {
  float* x = device(std::vector<float>(11 * P, 1.0f));
  float* y = device(std::vector<float>(11 * P, 0.0f));
  EXPECT_EQ(ncclAllReduce(x, y, rank == 0 ? 10 : 11, ncclFloat32, ncclSum, comm, stream), ncclSuccess);
  EXPECT_EQ(cudaStreamSynchronize(stream), cudaErrorLaunchFailure);
  const std::string f = emu::fault_message();
  EXPECT_TRUE(contains(f, "rank 0 called ncclAllReduce count 10 float32 sum")) << f;
  EXPECT_TRUE(contains(f, "rank 1 called ncclAllReduce count 11 float32 sum")) << f;
  ncclResult_t state = ncclSuccess;
  EXPECT_EQ(ncclCommGetAsyncError(comm, &state), ncclSuccess);
  EXPECT_EQ(state, ncclInvalidUsage);
  EXPECT_TRUE(contains(ncclGetLastError(comm), "rank 1 called ncclAllReduce count 11"))
      << ncclGetLastError(comm);
  EXPECT_EQ(ncclAllReduce(x, y, 1, ncclFloat32, ncclSum, comm, stream), ncclInvalidUsage);  // unusable now

  // A different collective altogether.
  ncclCommAbort(comm);
  emu::reset_device();
  ASSERT_EQ(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking), cudaSuccess);
  comm = make_comm(nullptr);
  x = device(std::vector<float>(10 * P, 1.0f));
  y = device(std::vector<float>(10 * P, 0.0f));
  if (rank == 0)
    EXPECT_EQ(ncclAllReduce(x, y, 10, ncclFloat32, ncclSum, comm, stream), ncclSuccess);
  else
    EXPECT_EQ(ncclAllGather(x, y, 5, ncclFloat32, comm, stream), ncclSuccess);
  EXPECT_EQ(cudaStreamSynchronize(stream), cudaErrorLaunchFailure);
  EXPECT_TRUE(contains(
      emu::fault_message(),
      "rank 0 called ncclAllReduce count 10 float32 sum, rank 1 called ncclAllGather count 5 float32"))
      << emu::fault_message();
}

// Non-blocking communicators: init and each operation return ncclInProgress
// and stay so for EMU_NCCL_INPROGRESS_POLLS polls of ncclCommGetAsyncError;
// the operation is queued at the poll that returns ncclSuccess.
TEST_F(Nccl, NonBlockingPollingGivesTheResult) {
  setenv("EMU_NCCL_INPROGRESS_POLLS", "2", 1);
  ncclConfig_t cfg = NCCL_CONFIG_INITIALIZER;
  cfg.blocking = 0;
  ncclUniqueId id{};
  if (rank == 0) ncclGetUniqueId(&id);
  MPI_Bcast(&id, sizeof id, MPI_BYTE, 0, MPI_COMM_WORLD);
  ncclComm_t nb = nullptr;
  EXPECT_EQ(ncclCommInitRankConfig(&nb, P, id, rank, &cfg), ncclInProgress);
  int n = 0;
  EXPECT_EQ(ncclCommCount(nb, &n), ncclInvalidUsage);  // not ready yet
  ncclResult_t state = ncclInProgress;
  int polls = 0;
  for (; state == ncclInProgress; ++polls) EXPECT_EQ(ncclCommGetAsyncError(nb, &state), ncclSuccess);
  EXPECT_EQ(state, ncclSuccess);
  EXPECT_EQ(polls, 3);

  int32_t* x = device(std::vector<int32_t>{rank + 1, 2 * (rank + 1)});
  EXPECT_EQ(ncclAllReduce(x, x, 2, ncclInt32, ncclSum, nb, stream), ncclInProgress);
  EXPECT_EQ(cudaStreamQuery(stream), cudaSuccess);  // nothing queued yet
  // Another operation on the communicator before polling: a usage error.
  EXPECT_EQ(ncclAllReduce(x, x, 2, ncclInt32, ncclSum, nb, stream), ncclInvalidUsage);
  EXPECT_TRUE(contains(ncclGetLastError(nb), "poll ncclCommGetAsyncError")) << ncclGetLastError(nb);
  for (polls = 0, state = ncclInProgress; state == ncclInProgress; ++polls) ncclCommGetAsyncError(nb, &state);
  EXPECT_EQ(state, ncclSuccess);
  EXPECT_EQ(polls, 3);
  sync();
  const auto h = host(x, 2);
  EXPECT_EQ(h[0], P * (P + 1) / 2);
  EXPECT_EQ(h[1], P * (P + 1));
  EXPECT_EQ(ncclCommFinalize(nb), ncclInProgress);
  for (state = ncclInProgress; state == ncclInProgress;) ncclCommGetAsyncError(nb, &state);
  EXPECT_EQ(state, ncclSuccess);
  EXPECT_EQ(ncclCommDestroy(nb), ncclSuccess);
}

// Work queued on the stream before the operation was polled to completion
// would run before it: a device fault naming the operation and the rule.
TEST_F(Nccl, NonBlockingWorkQueuedBeforePollingIsAFault) {
  setenv("EMU_NCCL_INPROGRESS_POLLS", "2", 1);
  ncclConfig_t cfg = NCCL_CONFIG_INITIALIZER;
  cfg.blocking = 0;
  for (int variant = 0; variant < 2; ++variant) {
    emu::reset_device();
    ASSERT_EQ(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking), cudaSuccess);
    ncclComm_t nb = make_comm(&cfg);
    float* x = device(std::vector<float>(4, 1.0f));
    EXPECT_EQ(ncclAllReduce(x, x, 4, ncclFloat32, ncclSum, nb, stream), ncclInProgress);
    std::string what;
    if (variant == 0) {
      cudaEvent_t ev;
      ASSERT_EQ(cudaEventCreate(&ev), cudaSuccess);
      EXPECT_EQ(cudaEventRecord(ev, stream), cudaErrorLaunchFailure);
      what = "cudaEventRecord queued on stream ";
    } else {
      emu::enqueue_kernel(emu::Site{"later_kernel", "test_emu_nccl.cpp", 1}, nullptr, dim3(1), dim3(1), 0,
                          stream, [] {});
      EXPECT_EQ(cudaGetLastError(), cudaErrorLaunchFailure);
      what = "kernel later_kernel (test_emu_nccl.cpp:1) queued on stream ";
    }
    const std::string f = emu::fault_message();
    EXPECT_TRUE(contains(f, what)) << f;
    EXPECT_TRUE(contains(f,
                         "while ncclAllReduce is still in progress (ncclInProgress): poll "
                         "ncclCommGetAsyncError until ncclSuccess first"))
        << f;
    EXPECT_EQ(ncclCommDestroy(nb), ncclSuccess);  // drops the operation never polled
  }
}

// A collective reads what earlier work on its stream wrote: the copy into
// its input runs first, when the stream is drained.
TEST_F(Nccl, CollectivesRunInStreamOrder) {
  const size_t n = 8;
  std::vector<float> v(n);
  for (size_t i = 0; i < n; ++i) v[i] = float(rank * 10 + int(i));
  float* src = device(v);
  float* in = nullptr;
  ASSERT_EQ(cudaMalloc(&in, n * sizeof(float)), cudaSuccess);  // poisoned (NaN) until the copy runs
  float* out = device(std::vector<float>(n, -1.0f));
  EXPECT_EQ(cudaMemcpyAsync(in, src, n * sizeof(float), cudaMemcpyDeviceToDevice, stream), cudaSuccess);
  EXPECT_EQ(ncclAllReduce(in, out, n, ncclFloat32, ncclSum, comm, stream), ncclSuccess);
  EXPECT_EQ(cudaMemsetAsync(in, 0xFF, n * sizeof(float), stream), cudaSuccess);  // after: does not change out
  sync();
  const auto h = host(out, n);
  for (size_t i = 0; i < n; ++i) EXPECT_EQ(h[i], float(10 * P * (P - 1) / 2 + P * int(i))) << i;
}

// What a non-zero rank prints: its failures only, tagged with its rank.
class RankFailurePrinter : public ::testing::EmptyTestEventListener {
 public:
  explicit RankFailurePrinter(int rank) : rank_(rank) {}
  void OnTestPartResult(const ::testing::TestPartResult& r) override {
    if (r.failed())
      std::fprintf(stderr, "[rank %d] %s:%d: Failure\n%s\n", rank_, r.file_name() ? r.file_name() : "?",
                   r.line_number(), r.message());
  }

 private:
  int rank_;
};

}  // namespace

int main(int argc, char** argv) {
  MPI_Init(&argc, &argv);
  ::testing::InitGoogleTest(&argc, argv);
  const int rank = world_rank();
  if (rank != 0) {
    auto& listeners = ::testing::UnitTest::GetInstance()->listeners();
    delete listeners.Release(listeners.default_result_printer());
    listeners.Append(new RankFailurePrinter(rank));
  }
  int failed = RUN_ALL_TESTS() != 0 ? 1 : 0, any = 0;
  MPI_Allreduce(&failed, &any, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
  std::fflush(stdout);
  if (rank == 0 && any) std::fprintf(stderr, "[mpi] a rank failed\n");
  MPI_Finalize();
  return any;
}
