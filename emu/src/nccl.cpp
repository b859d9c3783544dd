// NCCL over MPI for the emulated device (emu/include/nccl.h). Semantics
// follow NVIDIA's NCCL documentation: "Creating a Communicator" (unique id,
// ncclCommInitRank, ncclCommInitRankConfig with `blocking`, ncclCommSplit),
// "Collective Operations", "In-place Operations", "Group Calls",
// "Point-to-point communication", "CUDA Stream Semantics" and "Error handling
// and communicator abort" (ncclInProgress, ncclCommGetAsyncError).
//
// Every process is one rank with its own emulated device. A communicator is
// an MPI communicator of its own (duplicated or split, never MPI_COMM_WORLD
// itself). A call checks its arguments and queues the operation on its CUDA
// stream (emu::enqueue); when the stream reaches it, the ranks first compare
// what each called (an MPI_Iallgather of a small descriptor), then move the
// data with MPI on host memory (device memory is host memory here) and
// reduce in rank order. Anything wrong there is a device fault naming it.

// The standard headers first: the shim's cuda_runtime.h defines
// __noinline__, which libstdc++ uses as an attribute name.
#include <mpi.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <type_traits>
#include <vector>

#include <cuda_bf16.h>
#include <nccl.h>

#include "emu/device.h"

namespace {

// ------------------------------------------------------------- state --

enum class Kind : int32_t { AllReduce, Reduce, Broadcast, AllGather, ReduceScatter, Send, Recv };

const char* name_of(Kind k) {
  switch (k) {
    case Kind::AllReduce: return "ncclAllReduce";
    case Kind::Reduce: return "ncclReduce";
    case Kind::Broadcast: return "ncclBroadcast";
    case Kind::AllGather: return "ncclAllGather";
    case Kind::ReduceScatter: return "ncclReduceScatter";
    case Kind::Send: return "ncclSend";
    case Kind::Recv: return "ncclRecv";
  }
  return "?";
}

bool is_p2p(Kind k) { return k == Kind::Send || k == Kind::Recv; }
bool reduces(Kind k) { return k == Kind::AllReduce || k == Kind::Reduce || k == Kind::ReduceScatter; }
bool rooted(Kind k) { return k == Kind::Reduce || k == Kind::Broadcast; }

struct Launch;

struct CommState {
  MPI_Comm mpi = MPI_COMM_NULL;
  int rank = 0, size = 1;
  bool blocking = true;
  int busy_polls = 0;                // init, split or finalize "in progress" for this many more polls
  std::string busy_what;             // which of them
  std::shared_ptr<Launch> pending;   // a non-blocking operation not yet queued on its stream
  ncclResult_t async = ncclSuccess;  // an error of queued work; the communicator is unusable after it
  std::string last_error;
  bool finalized = false;
  bool freed = false;   // destroyed or aborted: queued work skips it
  uint64_t queued = 0;  // launches queued on streams and not yet run
};

// One call: a collective, or one side of a point-to-point transfer (`root`
// is the peer then).
struct Item {
  Kind kind;
  const void* send;
  void* recv;
  size_t count;
  ncclDataType_t type;
  ncclRedOp_t op;
  int root;
  std::shared_ptr<CommState> comm;
  cudaStream_t stream;
};

// What one call or one group queues: one operation on the first stream,
// ordered after and before the others' work (a group over several streams
// behaves as if posted on every one of them, "CUDA Stream Semantics").
struct Launch {
  std::vector<Item> items;
  std::vector<cudaStream_t> streams;
  std::vector<std::shared_ptr<CommState>> comms;
  std::string name;
  int polls_left = 0;
};

struct Group {
  int depth = 0;
  std::vector<Item> items;
  ncclResult_t error = ncclSuccess;
};
thread_local Group group;

std::string global_last_error;

// ------------------------------------------------------------- helpers --

size_t size_of(ncclDataType_t t) {
  switch (t) {
    case ncclInt8:
    case ncclUint8: return 1;
    case ncclFloat16:
    case ncclBfloat16: return 2;
    case ncclInt32:
    case ncclUint32:
    case ncclFloat32: return 4;
    case ncclInt64:
    case ncclUint64:
    case ncclFloat64: return 8;
    default: return 0;  // not emulated
  }
}

std::string type_name(ncclDataType_t t) {
  switch (t) {
    case ncclInt8: return "int8";
    case ncclUint8: return "uint8";
    case ncclInt32: return "int32";
    case ncclUint32: return "uint32";
    case ncclInt64: return "int64";
    case ncclUint64: return "uint64";
    case ncclFloat16: return "float16";
    case ncclFloat32: return "float32";
    case ncclFloat64: return "float64";
    case ncclBfloat16: return "bfloat16";
    case ncclFloat8e4m3: return "float8e4m3";
    case ncclFloat8e5m2: return "float8e5m2";
    default: return "datatype " + std::to_string(int(t));
  }
}

std::string op_name(ncclRedOp_t op) {
  switch (op) {
    case ncclSum: return "sum";
    case ncclProd: return "prod";
    case ncclMax: return "max";
    case ncclMin: return "min";
    case ncclAvg: return "avg";
    default: return "redop " + std::to_string(int(op));
  }
}

std::string ptr(const void* p) {
  char b[32];
  std::snprintf(b, sizeof b, "%p", p);
  return b;
}

// Records an error of a call: the communicator's last error (and the
// process's, for ncclGetLastError(NULL)), printed like the runtime's.
ncclResult_t fail(CommState* c, ncclResult_t code, const std::string& why) {
  std::fprintf(stderr, "emu nccl: %s\n", why.c_str());
  global_last_error = why;
  if (c) c->last_error = why;
  return code;
}

// An error while queued work runs: the communicator's asynchronous error,
// and a device fault (emu::KernelError) naming it.
[[noreturn]] void fault(CommState& c, ncclResult_t code, const std::string& why) {
  if (c.async == ncclSuccess) c.async = code;
  c.last_error = global_last_error = why;
  throw emu::KernelError(why);
}

// EMU_NCCL_INPROGRESS_POLLS: how many ncclCommGetAsyncError polls a
// non-blocking operation stays ncclInProgress for (default 2; 0: done at the
// call). Read at each use, so tests may set it.
int inprogress_polls() {
  const char* e = std::getenv("EMU_NCCL_INPROGRESS_POLLS");
  if (!e) return 2;
  char* end = nullptr;
  const long v = std::strtol(e, &end, 10);
  if (end == e || *end != '\0' || v < 0 || v > 1000000)
    emu::detail::bad_setting("EMU_NCCL_INPROGRESS_POLLS", e, "a count of polls, 0 or more");
  return int(v);
}

// EMU_NCCL_TIMEOUT: seconds a rank waits for the others at one operation
// before it is a fault instead of a hang (default 300).
double timeout_s() {
  static const double t = [] {
    const char* e = std::getenv("EMU_NCCL_TIMEOUT");
    if (!e) return 300.0;
    char* end = nullptr;
    const double v = std::strtod(e, &end);
    if (end == e || *end != '\0' || !(v > 0))
      emu::detail::bad_setting("EMU_NCCL_TIMEOUT", e, "seconds, more than 0");
    return v;
  }();
  return t;
}

std::string mpi_error(int rc) {
  char buf[MPI_MAX_ERROR_STRING];
  int len = 0;
  MPI_Error_string(rc, buf, &len);
  return std::string(buf, size_t(len));
}

void mpi_check(CommState& c, int rc, const std::string& what) {
  if (rc != MPI_SUCCESS) fault(c, ncclSystemError, what + ": MPI error: " + mpi_error(rc));
}

// Waits for MPI requests, polling, so that a rank that never comes is a
// fault after timeout_s() rather than a hang.
void wait_all(CommState& c, std::vector<MPI_Request>& reqs, const std::string& what) {
  if (reqs.empty()) return;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::duration<double>(timeout_s());
  for (long spins = 0;; ++spins) {
    int done = 0;
    mpi_check(c, MPI_Testall(int(reqs.size()), reqs.data(), &done, MPI_STATUSES_IGNORE), what);
    if (done) return;
    if (std::chrono::steady_clock::now() > deadline)
      fault(c, ncclRemoteError,
            what + ": rank " + std::to_string(c.rank) + " waited " + std::to_string(int(timeout_s())) +
                " s for the other ranks (one never made the matching call, or is stuck; EMU_NCCL_TIMEOUT)");
    if (spins < 2000)
      std::this_thread::yield();
    else
      std::this_thread::sleep_for(std::chrono::microseconds(200));
  }
}

// ----------------------------------------------------- 16-bit floats --

// float16 by hand (clang 14 has no _Float16 on x86-64); checked against
// GCC's _Float16 conversions for every half and every float.
float half_to_float(uint16_t h) {
  const uint32_t sign = uint32_t(h & 0x8000u) << 16, exp = (h >> 10) & 0x1Fu, mant = h & 0x3FFu;
  uint32_t bits;
  if (exp == 0) {  // zero or subnormal: mant * 2^-24, exact in fp32
    const float v = std::ldexp(float(mant), -24);
    std::memcpy(&bits, &v, 4);
    bits |= sign;
  } else if (exp == 31) {  // infinity, NaN
    bits = sign | 0x7F800000u | (mant << 13);
  } else {
    bits = sign | ((exp + 112) << 23) | (mant << 13);
  }
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}
// Rounds to nearest, ties to even.
uint16_t float_to_half(float f) {
  uint32_t x;
  std::memcpy(&x, &f, 4);
  const auto sign = uint16_t((x >> 16) & 0x8000u);
  const uint32_t ax = x & 0x7FFFFFFFu;
  if (ax > 0x7F800000u) return sign | 0x7E00u;   // NaN
  if (ax >= 0x477FF000u) return sign | 0x7C00u;  // 65520 and above round to infinity
  if (ax < 0x38800000u)                          // below 2^-14: subnormal, in steps of 2^-24
    return sign | uint16_t(std::nearbyint(std::fabs(f) * 0x1p24f));
  uint32_t h = (ax >> 13) - (112u << 10);
  const uint32_t rest = ax & 0x1FFFu;
  if (rest > 0x1000u || (rest == 0x1000u && (h & 1u))) ++h;
  return sign | uint16_t(h);
}
float bf16_to_float(uint16_t b) {
  const uint32_t u = uint32_t(b) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

// ----------------------------------------------------------- reductions --

// out[i] = op over ranks r (in rank order) of the element i of part r; the
// parts lie `stride` bytes apart. Integers wrap; bfloat16 and float16 are
// reduced in fp32 and rounded once at the end (to nearest even); Avg divides
// the sum by the number of ranks.
template <class T, class Acc, class Load, class Store>
void reduce_parts(const unsigned char* parts, size_t stride, int nparts, unsigned char* out, size_t n,
                  ncclRedOp_t op, Load load, Store store) {
  using Wrap = typename std::conditional_t<std::is_integral_v<Acc>, std::make_unsigned<Acc>,
                                           std::type_identity<Acc>>::type;
  for (size_t i = 0; i < n; ++i) {
    auto at = [&](int r) {
      T v;
      std::memcpy(&v, parts + size_t(r) * stride + i * sizeof(T), sizeof(T));
      return load(v);
    };
    Acc acc = at(0);
    for (int r = 1; r < nparts; ++r) {
      const Acc x = at(r);
      switch (op) {
        case ncclSum:
        case ncclAvg: acc = Acc(Wrap(acc) + Wrap(x)); break;
        case ncclProd: acc = Acc(Wrap(acc) * Wrap(x)); break;
        case ncclMax: acc = x > acc ? x : acc; break;
        case ncclMin: acc = x < acc ? x : acc; break;
        default: break;
      }
    }
    if (op == ncclAvg) acc = Acc(acc / Acc(nparts));
    const T v = store(acc);
    std::memcpy(out + i * sizeof(T), &v, sizeof(T));
  }
}

void reduce_any(ncclDataType_t t, ncclRedOp_t op, const unsigned char* parts, size_t stride, int nparts,
                void* out_v, size_t n) {
  auto* out = static_cast<unsigned char*>(out_v);
  auto same = [](auto v) { return v; };
  switch (t) {
    case ncclInt8: return reduce_parts<int8_t, int8_t>(parts, stride, nparts, out, n, op, same, same);
    case ncclUint8: return reduce_parts<uint8_t, uint8_t>(parts, stride, nparts, out, n, op, same, same);
    case ncclInt32: return reduce_parts<int32_t, int32_t>(parts, stride, nparts, out, n, op, same, same);
    case ncclUint32: return reduce_parts<uint32_t, uint32_t>(parts, stride, nparts, out, n, op, same, same);
    case ncclInt64: return reduce_parts<int64_t, int64_t>(parts, stride, nparts, out, n, op, same, same);
    case ncclUint64: return reduce_parts<uint64_t, uint64_t>(parts, stride, nparts, out, n, op, same, same);
    case ncclFloat32: return reduce_parts<float, float>(parts, stride, nparts, out, n, op, same, same);
    case ncclFloat64: return reduce_parts<double, double>(parts, stride, nparts, out, n, op, same, same);
    case ncclFloat16:
      return reduce_parts<uint16_t, float>(parts, stride, nparts, out, n, op, half_to_float, float_to_half);
    case ncclBfloat16:
      return reduce_parts<uint16_t, float>(parts, stride, nparts, out, n, op, bf16_to_float,
                                           emu_float_to_bf16_bits);
    default: return;
  }
}

// Elements per step of the gathering collectives: each rank's part of a
// step stays under 64 MiB in all (and every MPI count fits an int).
size_t chunk_elems(size_t elem, int nranks, size_t n) {
  const size_t per = (size_t(64) << 20) / (elem * size_t(std::max(nranks, 1)));
  return std::max<size_t>(1, std::min(n, per));
}

// ----------------------------------------------------- argument checks --

bool overlap(const void* a, size_t na, const void* b, size_t nb) {
  const auto x = reinterpret_cast<uintptr_t>(a), y = reinterpret_cast<uintptr_t>(b);
  return na > 0 && nb > 0 && x < y + nb && y < x + na;
}

// "" when [p, p + bytes) is device memory, else why not.
std::string range_problem(const void* p, size_t bytes, const std::string& what) {
  if (bytes == 0) return "";
  try {
    emu::check_device_range(p, bytes, what.c_str());
  } catch (const emu::KernelError& e) {
    return e.what();
  }
  return "";
}

// The bytes each buffer of `it` covers on this rank (0: not used here).
struct Extent {
  size_t send = 0, recv = 0;
};
Extent extent_of(const Item& it, int rank, int size) {
  const size_t b = it.count * size_of(it.type);
  switch (it.kind) {
    case Kind::AllReduce: return {b, b};
    case Kind::Reduce: return {b, rank == it.root ? b : 0};     // recvbuff: only used on root
    case Kind::Broadcast: return {rank == it.root ? b : 0, b};  // sendbuff: only used on root
    case Kind::AllGather: return {b, b * size_t(size)};
    case Kind::ReduceScatter: return {b * size_t(size), b};
    case Kind::Send: return {b, 0};
    case Kind::Recv: return {0, b};
  }
  return {};
}

// "" when `it` may be issued on `c`, else why not (ncclInvalidArgument).
std::string argument_problem(const CommState& c, const Item& it) {
  const std::string name = name_of(it.kind);
  const size_t e = size_of(it.type);
  if (e == 0)
    return name + ": " + type_name(it.type) +
           " is not emulated (int8, uint8, int32, uint32, int64, uint64, float16, float32, float64, "
           "bfloat16)";
  if (reduces(it.kind) && (int(it.op) < 0 || int(it.op) >= int(ncclNumOps)))
    return name + ": " + op_name(it.op) + " is not a built-in reduction (sum, prod, max, min, avg)";
  if ((rooted(it.kind) || is_p2p(it.kind)) && (it.root < 0 || it.root >= c.size))
    return name + ": " + (is_p2p(it.kind) ? "peer " : "root ") + std::to_string(it.root) +
           " is not a rank of this " + std::to_string(c.size) + "-rank communicator";
  if (it.count > (size_t(1) << 50) / e / size_t(c.size))
    return name + ": count " + std::to_string(it.count) + " is too large";
  const Extent x = extent_of(it, c.rank, c.size);
  if (std::string w = range_problem(it.send, x.send, name + " sendbuff"); !w.empty()) return w;
  if (std::string w = range_problem(it.recv, x.recv, name + " recvbuff"); !w.empty()) return w;
  if (!overlap(it.send, x.send, it.recv, x.recv)) return "";
  // The in-place forms ("In-place Operations"); any other overlap is an error.
  const size_t b = it.count * e;
  const auto* s = static_cast<const unsigned char*>(it.send);
  const auto* r = static_cast<const unsigned char*>(it.recv);
  const std::string here =
      " (rank " + std::to_string(c.rank) + ", sendbuff " + ptr(s) + ", recvbuff " + ptr(r) + ")";
  switch (it.kind) {
    case Kind::AllGather:
      if (s == r + size_t(c.rank) * b) return "";
      return name +
             ": sendbuff overlaps recvbuff without being in place: in place means sendbuff == recvbuff + "
             "rank * sendcount" +
             here;
    case Kind::ReduceScatter:
      if (r == s + size_t(c.rank) * b) return "";
      return name +
             ": recvbuff overlaps sendbuff without being in place: in place means recvbuff == sendbuff + "
             "rank * recvcount" +
             here;
    default:
      if (s == r) return "";
      return name +
             ": sendbuff and recvbuff overlap without being equal: in place means sendbuff == recvbuff" +
             here;
  }
}

// "" when operations may be issued on c now, else why not.
std::string usage_problem(const CommState& c, const std::string& name) {
  if (c.async != ncclSuccess)
    return name + ": the communicator has an asynchronous error (" + ncclGetErrorString(c.async) + ": " +
           c.last_error + "); abort it";
  if (c.finalized) return name + ": the communicator was finalized";
  if (c.busy_polls > 0)
    return name + ": " + c.busy_what +
           " is still in progress (ncclInProgress): poll ncclCommGetAsyncError until ncclSuccess first";
  if (c.pending)
    return name + ": " + c.pending->name +
           " is still in progress (ncclInProgress): poll ncclCommGetAsyncError until ncclSuccess first";
  return "";
}

// ------------------------------------------------------------ execution --

struct Desc {  // what a rank called, compared across the communicator
  int32_t kind, type, op, root;
  uint64_t count;
  bool operator==(const Desc&) const = default;
};

std::string describe(const Desc& d) {
  const Kind k = Kind(d.kind);
  std::string s =
      std::string(name_of(k)) + " count " + std::to_string(d.count) + " " + type_name(ncclDataType_t(d.type));
  if (reduces(k)) s += " " + op_name(ncclRedOp_t(d.op));
  if (rooted(k)) s += " root " + std::to_string(d.root);
  return s;
}

// Every rank of the communicator called the same collective, or a fault
// naming rank 0's call and the first that differs.
void agree(CommState& c, const Item& it) {
  const Desc mine{int32_t(it.kind), int32_t(it.type), reduces(it.kind) ? int32_t(it.op) : -1,
                  rooted(it.kind) ? it.root : -1, it.count};
  std::vector<Desc> all(size_t(c.size));
  std::vector<MPI_Request> req(1);
  const std::string name = name_of(it.kind);
  mpi_check(
      c, MPI_Iallgather(&mine, sizeof mine, MPI_BYTE, all.data(), sizeof mine, MPI_BYTE, c.mpi, req.data()),
      name);
  wait_all(c, req, describe(mine));
  for (int r = 1; r < c.size; ++r)
    if (!(all[size_t(r)] == all[0]))
      fault(c, ncclInvalidUsage,
            name + ": the ranks called different collectives: rank 0 called " + describe(all[0]) + ", rank " +
                std::to_string(r) + " called " + describe(all[size_t(r)]));
}

void run_collective(const Item& it) {
  CommState& c = *it.comm;
  const std::string name = name_of(it.kind);
  agree(c, it);
  const Extent x = extent_of(it, c.rank, c.size);
  if (x.send) emu::check_device_range(it.send, x.send, (name + " sendbuff").c_str());
  if (x.recv) emu::check_device_range(it.recv, x.recv, (name + " recvbuff").c_str());
  const size_t e = size_of(it.type), n = it.count;
  if (n == 0) return;
  const auto* send = static_cast<const unsigned char*>(it.send);
  auto* recv = static_cast<unsigned char*>(it.recv);
  const int P = c.size;
  const size_t m_max = chunk_elems(e, P, n);
  std::vector<unsigned char> tmp, pack;
  for (size_t off = 0; off < n; off += m_max) {
    const size_t m = std::min(m_max, n - off);
    const int bytes = int(m * e);
    switch (it.kind) {
      case Kind::AllReduce:
        tmp.resize(size_t(P) * m * e);
        mpi_check(c, MPI_Allgather(send + off * e, bytes, MPI_BYTE, tmp.data(), bytes, MPI_BYTE, c.mpi),
                  name);
        reduce_any(it.type, it.op, tmp.data(), m * e, P, recv + off * e, m);
        break;
      case Kind::Reduce:
        tmp.resize(c.rank == it.root ? size_t(P) * m * e : 0);
        mpi_check(c, MPI_Gather(send + off * e, bytes, MPI_BYTE, tmp.data(), bytes, MPI_BYTE, it.root, c.mpi),
                  name);
        if (c.rank == it.root) reduce_any(it.type, it.op, tmp.data(), m * e, P, recv + off * e, m);
        break;
      case Kind::Broadcast:
        if (c.rank == it.root && send != recv) std::memcpy(recv + off * e, send + off * e, m * e);
        mpi_check(c, MPI_Bcast(recv + off * e, bytes, MPI_BYTE, it.root, c.mpi), name);
        break;
      case Kind::AllGather:
        tmp.resize(size_t(P) * m * e);
        mpi_check(c, MPI_Allgather(send + off * e, bytes, MPI_BYTE, tmp.data(), bytes, MPI_BYTE, c.mpi),
                  name);
        for (int r = 0; r < P; ++r)
          std::memcpy(recv + (size_t(r) * n + off) * e, tmp.data() + size_t(r) * m * e, m * e);
        break;
      case Kind::ReduceScatter:
        // Rank j gets every rank's elements [j n + off, j n + off + m).
        pack.resize(size_t(P) * m * e);
        tmp.resize(size_t(P) * m * e);
        for (int j = 0; j < P; ++j)
          std::memcpy(pack.data() + size_t(j) * m * e, send + (size_t(j) * n + off) * e, m * e);
        mpi_check(c, MPI_Alltoall(pack.data(), bytes, MPI_BYTE, tmp.data(), bytes, MPI_BYTE, c.mpi), name);
        reduce_any(it.type, it.op, tmp.data(), m * e, P, recv + off * e, m);
        break;
      default: break;
    }
  }
}

// The point-to-point calls of one launch: each side first sends the other
// its count and type (both directions, so both sides can name a mismatch),
// then the matched pairs move their data; NCCL's and MPI's order of
// matching calls between two ranks is the same (issue order).
struct P2p {
  struct Hdr {
    int64_t count;
    int32_t type;
    int32_t pad = 0;
  };
  std::vector<const Item*> items;
  std::vector<Hdr> mine, theirs;
  std::vector<MPI_Request> hdr_reqs;
  enum Tag { kForward = 0x4e01, kBack = 0x4e02, kData = 0x4e03 };

  void post_headers() {
    mine.resize(items.size());
    theirs.resize(items.size());
    for (size_t i = 0; i < items.size(); ++i) {
      const Item& it = *items[i];
      CommState& c = *it.comm;
      mine[i] = Hdr{int64_t(it.count), int32_t(it.type)};
      const bool send = it.kind == Kind::Send;
      MPI_Request a, b;
      mpi_check(c, MPI_Isend(&mine[i], sizeof(Hdr), MPI_BYTE, it.root, send ? kForward : kBack, c.mpi, &a),
                name_of(it.kind));
      mpi_check(c, MPI_Irecv(&theirs[i], sizeof(Hdr), MPI_BYTE, it.root, send ? kBack : kForward, c.mpi, &b),
                name_of(it.kind));
      hdr_reqs.push_back(a);
      hdr_reqs.push_back(b);
    }
  }

  // Completes the headers, moves the data of the pairs that agree, then
  // faults naming the first pair that does not.
  void finish() {
    if (items.empty()) return;
    CommState& c0 = *items[0]->comm;
    wait_all(c0, hdr_reqs, "ncclSend/ncclRecv (waiting for the matching calls of the peers)");
    std::vector<MPI_Request> data;
    std::string mismatch;
    CommState* bad = nullptr;
    for (size_t i = 0; i < items.size(); ++i) {
      const Item& it = *items[i];
      CommState& c = *it.comm;
      const bool send = it.kind == Kind::Send;
      if (mine[i].count != theirs[i].count || mine[i].type != theirs[i].type) {
        if (mismatch.empty()) {
          const std::string me = std::to_string(c.rank), peer = std::to_string(it.root);
          auto what = [](const Hdr& h) {
            return "count " + std::to_string(h.count) + " " + type_name(ncclDataType_t(h.type));
          };
          mismatch = std::string(name_of(it.kind)) + ": rank " + me + " called " + name_of(it.kind) +
                     (send ? " to rank " : " from rank ") + peer + " " + what(mine[i]) + ", rank " + peer +
                     " called its matching " + (send ? "ncclRecv from rank " : "ncclSend to rank ") + me +
                     " " + what(theirs[i]);
          bad = &c;
        }
        continue;
      }
      const size_t e = size_of(it.type), total = it.count * e;
      if (send)
        emu::check_device_range(it.send, total, "ncclSend sendbuff");
      else
        emu::check_device_range(it.recv, total, "ncclRecv recvbuff");
      const size_t step = size_t(1) << 30;
      for (size_t off = 0; off < total; off += step) {
        const int n = int(std::min(step, total - off));
        MPI_Request r;
        if (send)
          mpi_check(c,
                    MPI_Isend(static_cast<const unsigned char*>(it.send) + off, n, MPI_BYTE, it.root, kData,
                              c.mpi, &r),
                    "ncclSend");
        else
          mpi_check(
              c,
              MPI_Irecv(static_cast<unsigned char*>(it.recv) + off, n, MPI_BYTE, it.root, kData, c.mpi, &r),
              "ncclRecv");
        data.push_back(r);
      }
    }
    wait_all(c0, data, "ncclSend/ncclRecv (the data)");
    if (bad) fault(*bad, ncclInvalidUsage, mismatch);
  }
};

// Runs a launch when its stream reaches it: the point-to-point headers are
// posted first, then the collectives run in call order, then the transfers
// complete, so that a group's operations do not wait on each other.
void execute(const Launch& l) {
  for (const auto& c : l.comms)
    if (c->queued > 0) --c->queued;
  try {
    P2p p2p;
    for (const Item& it : l.items)
      if (is_p2p(it.kind) && !it.comm->freed) p2p.items.push_back(&it);
    p2p.post_headers();
    try {
      for (const Item& it : l.items)
        if (!is_p2p(it.kind) && !it.comm->freed) run_collective(it);
    } catch (...) {
      // Headers are small and every peer posts its own: complete them so
      // that MPI keeps no pointer into this launch.
      if (!p2p.hdr_reqs.empty()) {
        try {
          wait_all(*p2p.items[0]->comm, p2p.hdr_reqs, "ncclSend/ncclRecv");
        } catch (...) {
        }
      }
      throw;
    }
    p2p.finish();
  } catch (const emu::KernelError& e) {
    for (const auto& c : l.comms)
      if (c->async == ncclSuccess) {
        c->async = ncclInvalidUsage;
        c->last_error = e.what();
      }
    throw;
  }
}

// Queues the launch on its streams: one operation on the first, after the
// others' earlier work, and their later work after it.
cudaError_t queue(const std::shared_ptr<Launch>& l) {
  for (const auto& c : l->comms) ++c->queued;
  std::function<void()> fn = [l] { execute(*l); };
  const auto& s = l->streams;
  cudaError_t e = cudaSuccess;
  auto keep = [&](cudaError_t r) {
    if (e == cudaSuccess) e = r;
  };
  for (size_t i = 1; i < s.size(); ++i) {
    cudaEvent_t ev;
    keep(cudaEventCreateWithFlags(&ev, cudaEventDisableTiming));
    keep(cudaEventRecord(ev, s[i]));
    keep(cudaStreamWaitEvent(s[0], ev, 0));
    cudaEventDestroy(ev);
  }
  keep(emu::enqueue(s[0], l->name, std::move(fn)));
  if (s.size() > 1) {
    cudaEvent_t ev;
    keep(cudaEventCreateWithFlags(&ev, cudaEventDisableTiming));
    keep(cudaEventRecord(ev, s[0]));
    for (size_t i = 1; i < s.size(); ++i) keep(cudaStreamWaitEvent(s[i], ev, 0));
    cudaEventDestroy(ev);
  }
  if (e != cudaSuccess)
    for (const auto& c : l->comms) c->queued = 0;
  return e;
}

std::string cuda_problem(const std::string& name, cudaError_t e) {
  const std::string& f = emu::fault_message();
  return name + ": queuing on the stream failed: " + cudaGetErrorString(e) +
         (f.empty() ? "" : " (" + f + ")");
}

void release(Launch& l) {
  for (cudaStream_t s : l.streams) emu::release_stream(s);
  for (const auto& c : l.comms)
    if (c->pending.get() == &l) c->pending.reset();
}

// Queues a launch now (blocking communicators, or no polls asked for), or
// holds its streams until ncclCommGetAsyncError has been polled enough.
ncclResult_t submit(std::vector<Item> items, const std::string& name) {
  auto l = std::make_shared<Launch>();
  l->name = name;
  for (const Item& it : items) {
    if (std::find(l->streams.begin(), l->streams.end(), it.stream) == l->streams.end())
      l->streams.push_back(it.stream);
    if (std::find(l->comms.begin(), l->comms.end(), it.comm) == l->comms.end()) l->comms.push_back(it.comm);
  }
  l->items = std::move(items);
  CommState& first = *l->comms[0];
  for (const auto& c : l->comms)
    if (c->blocking != first.blocking)
      return fail(&first, ncclInvalidUsage, name + ": blocking and non-blocking communicators in one group");
  const int polls = first.blocking ? 0 : inprogress_polls();
  if (polls == 0) {
    if (cudaError_t e = queue(l); e != cudaSuccess)
      return fail(&first, ncclUnhandledCudaError, cuda_problem(name, e));
    return ncclSuccess;
  }
  const std::string reason =
      name + " is still in progress (ncclInProgress): poll ncclCommGetAsyncError until ncclSuccess first";
  for (size_t i = 0; i < l->streams.size(); ++i) {
    if (cudaError_t e = emu::hold_stream(l->streams[i], name, reason); e != cudaSuccess) {
      for (size_t j = 0; j < i; ++j) emu::release_stream(l->streams[j]);
      return fail(&first, ncclUnhandledCudaError, cuda_problem(name, e));
    }
  }
  l->polls_left = polls;
  for (const auto& c : l->comms) c->pending = l;
  return ncclInProgress;
}

ncclResult_t issue(ncclComm_t comm, Item it);

// A non-blocking communicator is "in progress" for some polls after init,
// split and finalize.
ncclResult_t busy(CommState& c, const char* what) {
  if (c.blocking) return ncclSuccess;
  c.busy_polls = inprogress_polls();
  c.busy_what = what;
  return c.busy_polls > 0 ? ncclInProgress : ncclSuccess;
}

// "" when config is usable; *blocking is its `blocking` (default 1).
std::string config_problem(const ncclConfig_t* config, bool* blocking) {
  if (!config) return "";
  if (config->magic != 0xcafebeef || config->size != sizeof(ncclConfig_t))
    return "config was not initialized with NCCL_CONFIG_INITIALIZER";
  if (config->blocking == NCCL_CONFIG_UNDEF_INT) return "";
  if (config->blocking != 0 && config->blocking != 1)
    return "config.blocking is " + std::to_string(config->blocking) + ", not 0 or 1";
  *blocking = config->blocking == 1;
  return "";
}

void set_errhandler(MPI_Comm c) { MPI_Comm_set_errhandler(c, MPI_ERRORS_RETURN); }

std::shared_ptr<CommState> make_state(MPI_Comm mpi, bool blocking) {
  auto s = std::make_shared<CommState>();
  s->mpi = mpi;
  MPI_Comm_rank(mpi, &s->rank);
  MPI_Comm_size(mpi, &s->size);
  s->blocking = blocking;
  return s;
}

void free_comm(CommState& c) {
  int fin = 0;
  MPI_Finalized(&fin);
  if (!fin && c.mpi != MPI_COMM_NULL) MPI_Comm_free(&c.mpi);
  c.mpi = MPI_COMM_NULL;
  c.freed = true;
}

// Drops a non-blocking operation never polled to completion.
void drop_pending(CommState& c) {
  if (!c.pending) return;
  std::shared_ptr<Launch> l = c.pending;
  release(*l);
}

}  // namespace

struct ncclComm {
  std::shared_ptr<CommState> s;
};

namespace {

ncclResult_t issue(ncclComm_t comm, Item it) {
  const std::string name = name_of(it.kind);
  if (!comm) {
    if (group.depth > 0 && group.error == ncclSuccess) group.error = ncclInvalidArgument;
    return fail(nullptr, ncclInvalidArgument, name + ": comm is NULL");
  }
  CommState& c = *comm->s;
  it.comm = comm->s;
  std::string why = usage_problem(c, name);
  ncclResult_t code = ncclInvalidUsage;
  if (why.empty()) {
    why = argument_problem(c, it);
    code = ncclInvalidArgument;
  }
  if (!why.empty()) {
    if (group.depth > 0 && group.error == ncclSuccess) group.error = code;
    return fail(&c, code, why);
  }
  if (group.depth > 0) {
    group.items.push_back(std::move(it));
    return ncclSuccess;
  }
  return submit({std::move(it)}, name);
}

}  // namespace

// ------------------------------------------------------------ the API --

extern "C" {

ncclResult_t ncclGetVersion(int* version) {
  if (!version) return fail(nullptr, ncclInvalidArgument, "ncclGetVersion: version is NULL");
  *version = NCCL_VERSION_CODE;
  return ncclSuccess;
}

const char* ncclGetErrorString(ncclResult_t result) {
  switch (result) {
    case ncclSuccess: return "no error";
    case ncclUnhandledCudaError: return "unhandled cuda error (run with NCCL_DEBUG=INFO for details)";
    case ncclSystemError: return "unhandled system error (run with NCCL_DEBUG=INFO for details)";
    case ncclInternalError: return "internal error - please report this issue to the NCCL developers";
    case ncclInvalidArgument: return "invalid argument (run with NCCL_DEBUG=WARN for details)";
    case ncclInvalidUsage: return "invalid usage (run with NCCL_DEBUG=WARN for details)";
    case ncclRemoteError: return "remote process exited or there was a network error";
    case ncclInProgress: return "NCCL operation in progress";
    default: return "unknown result code";
  }
}

const char* ncclGetLastError(ncclComm_t comm) {
  if (comm && !comm->s->last_error.empty()) return comm->s->last_error.c_str();
  return global_last_error.c_str();
}

ncclResult_t ncclGetUniqueId(ncclUniqueId* uniqueId) {
  if (!uniqueId) return fail(nullptr, ncclInvalidArgument, "ncclGetUniqueId: uniqueId is NULL");
  std::memset(uniqueId, 0, sizeof *uniqueId);
  std::memcpy(uniqueId->internal, "emu-nccl", 8);
  std::random_device rd;
  for (size_t i = 8; i + 4 <= NCCL_UNIQUE_ID_BYTES; i += 4) {
    const uint32_t v = rd();
    std::memcpy(uniqueId->internal + i, &v, 4);
  }
  return ncclSuccess;
}

// Collective over the processes that pass the same id: here, all of
// MPI_COMM_WORLD (nranks == its size), ordered by `rank`.
ncclResult_t ncclCommInitRankConfig(ncclComm_t* comm, int nranks, ncclUniqueId commId, int rank,
                                    ncclConfig_t* config) {
  const std::string name = "ncclCommInitRank";
  if (!comm) return fail(nullptr, ncclInvalidArgument, name + ": comm is NULL");
  *comm = nullptr;
  int init = 0, fin = 0;
  MPI_Initialized(&init);
  MPI_Finalized(&fin);
  if (!init && !fin && nranks == 1) {
    // A one-rank communicator in a program without MPI (the real NCCL needs
    // none): this process becomes a singleton MPI job, finalized at exit.
    int provided = 0;
    MPI_Init_thread(nullptr, nullptr, MPI_THREAD_FUNNELED, &provided);
    std::atexit([] {
      int f = 0;
      MPI_Finalized(&f);
      if (!f) MPI_Finalize();
    });
    init = 1;
  }
  if (!init || fin)
    return fail(nullptr, ncclInvalidUsage,
                name + ": MPI is " + (fin ? "finalized" : "not initialized") +
                    " (the emulated NCCL runs over MPI: call MPI_Init first)");
  bool blocking = true;
  if (std::string w = config_problem(config, &blocking); !w.empty())
    return fail(nullptr, ncclInvalidArgument, name + ": " + w);
  int world = 0;
  MPI_Comm_size(MPI_COMM_WORLD, &world);
  if (nranks != world)
    return fail(nullptr, ncclInvalidUsage,
                name + ": nranks " + std::to_string(nranks) + ", but the MPI job has " +
                    std::to_string(world) +
                    " processes: the emulated NCCL makes communicators over all of MPI_COMM_WORLD only "
                    "(nranks == its size; make smaller ones with ncclCommSplit)");
  // Checked together, so that every process returns the same answer.
  MPI_Comm dup;
  MPI_Comm_dup(MPI_COMM_WORLD, &dup);
  set_errhandler(dup);
  struct Who {
    ncclUniqueId id;
    int rank;
  } mine{commId, rank};
  std::vector<Who> all(static_cast<size_t>(world));
  MPI_Allgather(&mine, sizeof mine, MPI_BYTE, all.data(), sizeof mine, MPI_BYTE, dup);
  std::string why;
  std::vector<int> owner(size_t(world), -1);
  for (int p = 0; p < world && why.empty(); ++p) {
    const Who& w = all[size_t(p)];
    if (std::memcmp(&w.id, &all[0].id, sizeof w.id) != 0)
      why = "MPI processes 0 and " + std::to_string(p) + " passed different ncclUniqueIds";
    else if (w.rank < 0 || w.rank >= world)
      why = "MPI process " + std::to_string(p) + " passed rank " + std::to_string(w.rank) + ", not in [0, " +
            std::to_string(world) + ")";
    else if (owner[size_t(w.rank)] >= 0)
      why = "MPI processes " + std::to_string(owner[size_t(w.rank)]) + " and " + std::to_string(p) +
            " both passed rank " + std::to_string(w.rank);
    else
      owner[size_t(w.rank)] = p;
  }
  if (!why.empty()) {
    MPI_Comm_free(&dup);
    return fail(nullptr, ncclInvalidUsage, name + ": " + why);
  }
  MPI_Comm mpi;
  MPI_Comm_split(dup, 0, rank, &mpi);
  MPI_Comm_free(&dup);
  set_errhandler(mpi);
  *comm = new ncclComm{make_state(mpi, blocking)};
  return busy(*(*comm)->s, "ncclCommInitRankConfig");
}

ncclResult_t ncclCommInitRank(ncclComm_t* comm, int nranks, ncclUniqueId commId, int rank) {
  return ncclCommInitRankConfig(comm, nranks, commId, rank, nullptr);
}

// Collective over the parent: MPI_Comm_split(color, key); NCCL_SPLIT_NOCOLOR
// gives a NULL communicator. A NULL config inherits the parent's.
ncclResult_t ncclCommSplit(ncclComm_t comm, int color, int key, ncclComm_t* newcomm, ncclConfig_t* config) {
  const std::string name = "ncclCommSplit";
  if (!comm || !newcomm) return fail(nullptr, ncclInvalidArgument, name + ": comm or newcomm is NULL");
  *newcomm = nullptr;
  CommState& p = *comm->s;
  if (std::string w = usage_problem(p, name); !w.empty()) return fail(&p, ncclInvalidUsage, w);
  bool blocking = p.blocking;
  std::string why = config_problem(config, &blocking);
  if (why.empty() && color < 0 && color != NCCL_SPLIT_NOCOLOR)
    why = "color " + std::to_string(color) + " is negative and not NCCL_SPLIT_NOCOLOR";
  // A bad argument still takes part in the split (as no color), so that
  // the other ranks do not wait for it.
  MPI_Comm sub = MPI_COMM_NULL;
  const int rc = MPI_Comm_split(p.mpi, (color < 0 || !why.empty()) ? MPI_UNDEFINED : color, key, &sub);
  if (rc != MPI_SUCCESS) return fail(&p, ncclSystemError, name + ": MPI error: " + mpi_error(rc));
  if (!why.empty()) {
    if (sub != MPI_COMM_NULL) MPI_Comm_free(&sub);
    return fail(&p, ncclInvalidArgument, name + ": " + why);
  }
  if (sub == MPI_COMM_NULL) return ncclSuccess;
  set_errhandler(sub);
  *newcomm = new ncclComm{make_state(sub, blocking)};
  return busy(*(*newcomm)->s, "ncclCommSplit");
}

// Flushes the communicator's queued work (the device runs what is queued).
ncclResult_t ncclCommFinalize(ncclComm_t comm) {
  if (!comm) return fail(nullptr, ncclInvalidArgument, "ncclCommFinalize: comm is NULL");
  CommState& c = *comm->s;
  if (c.pending || c.busy_polls > 0) return fail(&c, ncclInvalidUsage, usage_problem(c, "ncclCommFinalize"));
  if (c.queued > 0) emu::drain();
  c.queued = 0;
  c.finalized = true;
  return c.async != ncclSuccess ? c.async : busy(c, "ncclCommFinalize");
}

ncclResult_t ncclCommDestroy(ncclComm_t comm) {
  if (!comm) return ncclSuccess;
  CommState& c = *comm->s;
  drop_pending(c);
  if (c.queued > 0) emu::drain();
  c.queued = 0;
  free_comm(c);
  delete comm;
  return ncclSuccess;
}

// Queued operations of the communicator that have not run are skipped; a
// peer already waiting inside MPI for this rank is not released.
ncclResult_t ncclCommAbort(ncclComm_t comm) {
  if (!comm) return ncclSuccess;
  drop_pending(*comm->s);
  free_comm(*comm->s);
  delete comm;
  return ncclSuccess;
}

// The communicator's state: an asynchronous error, ncclInProgress while a
// non-blocking init, split, finalize or operation counts down its polls (the
// operation is queued on its stream at the poll that reports ncclSuccess).
ncclResult_t ncclCommGetAsyncError(ncclComm_t comm, ncclResult_t* asyncError) {
  if (!comm || !asyncError)
    return fail(nullptr, ncclInvalidArgument, "ncclCommGetAsyncError: comm or asyncError is NULL");
  CommState& c = *comm->s;
  if (c.async != ncclSuccess) {
    *asyncError = c.async;
    return ncclSuccess;
  }
  if (c.busy_polls > 0) {
    --c.busy_polls;
    *asyncError = ncclInProgress;
    return ncclSuccess;
  }
  if (c.pending) {
    std::shared_ptr<Launch> l = c.pending;
    if (l->polls_left > 0) {
      --l->polls_left;
      *asyncError = ncclInProgress;
      return ncclSuccess;
    }
    release(*l);
    if (cudaError_t e = queue(l); e != cudaSuccess) {
      for (const auto& o : l->comms)
        if (o->async == ncclSuccess) o->async = ncclUnhandledCudaError;
      fail(&c, ncclUnhandledCudaError, cuda_problem(l->name, e));
      *asyncError = c.async;
      return ncclSuccess;
    }
  }
  *asyncError = ncclSuccess;
  return ncclSuccess;
}

ncclResult_t ncclCommCount(const ncclComm_t comm, int* count) {
  if (!comm || !count) return fail(nullptr, ncclInvalidArgument, "ncclCommCount: comm or count is NULL");
  if (comm->s->busy_polls > 0)
    return fail(comm->s.get(), ncclInvalidUsage, usage_problem(*comm->s, "ncclCommCount"));
  *count = comm->s->size;
  return ncclSuccess;
}

ncclResult_t ncclCommUserRank(const ncclComm_t comm, int* rank) {
  if (!comm || !rank) return fail(nullptr, ncclInvalidArgument, "ncclCommUserRank: comm or rank is NULL");
  if (comm->s->busy_polls > 0)
    return fail(comm->s.get(), ncclInvalidUsage, usage_problem(*comm->s, "ncclCommUserRank"));
  *rank = comm->s->rank;
  return ncclSuccess;
}

ncclResult_t ncclCommCuDevice(const ncclComm_t comm, int* device) {
  if (!comm || !device) return fail(nullptr, ncclInvalidArgument, "ncclCommCuDevice: comm or device is NULL");
  *device = 0;  // the emulated device
  return ncclSuccess;
}

ncclResult_t ncclAllReduce(const void* sendbuff, void* recvbuff, size_t count, ncclDataType_t datatype,
                           ncclRedOp_t op, ncclComm_t comm, cudaStream_t stream) {
  return issue(comm, Item{Kind::AllReduce, sendbuff, recvbuff, count, datatype, op, -1, nullptr, stream});
}

ncclResult_t ncclReduce(const void* sendbuff, void* recvbuff, size_t count, ncclDataType_t datatype,
                        ncclRedOp_t op, int root, ncclComm_t comm, cudaStream_t stream) {
  return issue(comm, Item{Kind::Reduce, sendbuff, recvbuff, count, datatype, op, root, nullptr, stream});
}

ncclResult_t ncclBroadcast(const void* sendbuff, void* recvbuff, size_t count, ncclDataType_t datatype,
                           int root, ncclComm_t comm, cudaStream_t stream) {
  return issue(comm,
               Item{Kind::Broadcast, sendbuff, recvbuff, count, datatype, ncclSum, root, nullptr, stream});
}

ncclResult_t ncclBcast(void* buff, size_t count, ncclDataType_t datatype, int root, ncclComm_t comm,
                       cudaStream_t stream) {
  return ncclBroadcast(buff, buff, count, datatype, root, comm, stream);
}

ncclResult_t ncclAllGather(const void* sendbuff, void* recvbuff, size_t sendcount, ncclDataType_t datatype,
                           ncclComm_t comm, cudaStream_t stream) {
  return issue(comm,
               Item{Kind::AllGather, sendbuff, recvbuff, sendcount, datatype, ncclSum, -1, nullptr, stream});
}

ncclResult_t ncclReduceScatter(const void* sendbuff, void* recvbuff, size_t recvcount,
                               ncclDataType_t datatype, ncclRedOp_t op, ncclComm_t comm,
                               cudaStream_t stream) {
  return issue(comm,
               Item{Kind::ReduceScatter, sendbuff, recvbuff, recvcount, datatype, op, -1, nullptr, stream});
}

ncclResult_t ncclSend(const void* sendbuff, size_t count, ncclDataType_t datatype, int peer, ncclComm_t comm,
                      cudaStream_t stream) {
  return issue(comm, Item{Kind::Send, sendbuff, nullptr, count, datatype, ncclSum, peer, nullptr, stream});
}

ncclResult_t ncclRecv(void* recvbuff, size_t count, ncclDataType_t datatype, int peer, ncclComm_t comm,
                      cudaStream_t stream) {
  return issue(comm, Item{Kind::Recv, nullptr, recvbuff, count, datatype, ncclSum, peer, nullptr, stream});
}

ncclResult_t ncclGroupStart(void) {
  ++group.depth;
  return ncclSuccess;
}

// The outermost end queues what the group collected as one launch (or, on
// non-blocking communicators, returns ncclInProgress, as a collective does).
ncclResult_t ncclGroupEnd(void) {
  if (group.depth == 0) return fail(nullptr, ncclInvalidUsage, "ncclGroupEnd without ncclGroupStart");
  if (--group.depth > 0) return ncclSuccess;
  std::vector<Item> items = std::move(group.items);
  const ncclResult_t error = group.error;
  group = Group{};
  if (error != ncclSuccess) {
    fail(items.empty() ? nullptr : items[0].comm.get(), error,
         "ncclGroupEnd: an operation of the group failed (" + global_last_error + "); the group was not run");
    return error;
  }
  if (items.empty()) return ncclSuccess;
  std::string name = items.size() == 1 ? std::string(name_of(items[0].kind)) : "ncclGroupEnd (";
  if (items.size() > 1) {
    std::vector<std::pair<Kind, int>> counts;
    for (const Item& it : items) {
      auto f = std::find_if(counts.begin(), counts.end(), [&](auto& p) { return p.first == it.kind; });
      if (f == counts.end())
        counts.emplace_back(it.kind, 1);
      else
        ++f->second;
    }
    for (size_t i = 0; i < counts.size(); ++i)
      name += (i ? ", " : "") + std::string(name_of(counts[i].first)) +
              (counts[i].second > 1 ? " x" + std::to_string(counts[i].second) : "");
    name += ")";
  }
  return submit(std::move(items), name);
}

}  // extern "C"
