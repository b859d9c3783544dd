// The emulated device's CUDA runtime: memory with red zones and poisoned
// contents, every copy checked against the allocation table, streams as
// ordered queues that run at synchronisation points (with the legacy
// default stream's implicit barriers and events as markers), and kernel
// launches checked against the architecture's limits. Semantics follow the
// CUDA Runtime API reference: "API synchronization behavior" (which calls
// block the host), "Stream synchronization behavior" (legacy default stream
// vs cudaStreamNonBlocking) and the Memory, Stream and Event Management
// sections.
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <vector>

#include "emu/device.h"
#include "emu/exec.h"

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/asan_interface.h>
#define EMU_POISON(p, n) ASAN_POISON_MEMORY_REGION(p, n)
#define EMU_UNPOISON(p, n) ASAN_UNPOISON_MEMORY_REGION(p, n)
#else
#define EMU_POISON(p, n) ((void)(p), (void)(n))
#define EMU_UNPOISON(p, n) ((void)(p), (void)(n))
#endif

struct CUstream_st {
  bool blocking = true;  // synchronises with the legacy default stream
  bool legacy = false;
  std::deque<uint64_t> queue;  // operation ids, in issue order
  std::string held;  // why no work may be queued now (emu::hold_stream); "" when it may
};

struct CUevent_st {
  unsigned flags = 0;
  uint64_t op = 0;  // the marker of the last cudaEventRecord (0: never recorded)
  std::chrono::steady_clock::time_point when{};
};

namespace emu {
namespace {

constexpr size_t kRedZone = 256;  // bytes before and after every allocation
constexpr unsigned char kRedByte = 0xFA;
constexpr unsigned char kPoison = 0xFF;  // fresh memory reads as NaN
constexpr size_t kTotalMemory = size_t(80) << 30;

// One cudaMalloc: `size` bytes at `user` (256-byte aligned), with kRedZone
// bytes of kRedByte right before and after it.
struct Alloc {
  std::unique_ptr<unsigned char[]> raw;
  unsigned char* user = nullptr;
  size_t size = 0;
  size_t raw_bytes() const { return size + 2 * kRedZone + 256; }
};

struct Op {
  uint64_t id;
  CUstream_st* stream;
  std::string what;
  std::function<void()> run;
  std::vector<uint64_t> after;  // operations that must complete first
};

struct Device {
  std::recursive_mutex mu;
  std::map<uintptr_t, Alloc> allocs;  // by user address
  std::vector<std::pair<uintptr_t, Alloc>> freed;  // quarantine: recently freed, still poisoned
  std::map<uintptr_t, size_t> pinned;  // cudaMallocHost blocks: base -> bytes
  std::map<const void*, int> max_dynamic_smem;  // cudaFuncSetAttribute
  std::set<CUstream_st*> streams;
  std::set<CUevent_st*> events;
  CUstream_st legacy;
  std::map<uint64_t, Op> pending;
  uint64_t next_id = 1;
  cudaError_t last_error = cudaSuccess;
  cudaError_t sticky = cudaSuccess;
  std::string fault;
  size_t allocated = 0;

  Device() { legacy.legacy = true; }
};

Device& dev() {
  static Device* d = new Device;  // never destroyed: static destructors may still free memory
  return *d;
}

cudaError_t fail(Device& d, cudaError_t e, const std::string& why) {
  std::fprintf(stderr, "emu: %s\n", why.c_str());
  d.last_error = e;
  return e;
}

cudaError_t ok(Device& d) { return d.sticky != cudaSuccess ? d.sticky : cudaSuccess; }

CUstream_st* stream_of(Device& d, cudaStream_t s) {
  if (s == nullptr || s == cudaStreamLegacy || s == cudaStreamPerThread) return &d.legacy;
  return d.streams.count(s) ? s : nullptr;
}

// The entry of a map keyed by base address whose block [base, base +
// size_of(entry)) holds p (a block of 0 bytes holds its base), or end().
template <class Map, class SizeOf>
typename Map::const_iterator holding(const Map& m, const void* p, SizeOf size_of) {
  const auto a = reinterpret_cast<uintptr_t>(p);
  auto it = m.upper_bound(a);
  if (it == m.begin()) return m.end();
  --it;
  return a < it->first + std::max<size_t>(size_of(it->second), 1) ? it : m.end();
}

const Alloc* find(Device& d, const void* p, uintptr_t* base) {
  const auto it = holding(d.allocs, p, [](const Alloc& a) { return a.size; });
  if (it == d.allocs.end()) return nullptr;
  if (base) *base = it->first;
  return &it->second;
}

bool was_freed(Device& d, const void* p) {
  const auto a = reinterpret_cast<uintptr_t>(p);
  for (const auto& [b, al] : d.freed)
    if (a >= b && a < b + std::max<size_t>(al.size, 1)) return true;
  return false;
}

std::string ptr(const void* p) {
  char b[32];
  std::snprintf(b, sizeof b, "%p", p);
  return b;
}

// A stream held by a library (emu::hold_stream) takes no work: queuing
// `what` there is a sticky fault naming the holder's reason. True when
// `what` may be queued on s.
bool admit(Device& d, CUstream_st* s, const std::string& what) {
  if (s->held.empty()) return true;
  if (d.sticky == cudaSuccess) {
    d.sticky = d.last_error = cudaErrorLaunchFailure;
    d.fault = what + " queued on " + (s->legacy ? std::string("the legacy default stream") : "stream " + ptr(s)) +
              " while " + s->held;
    std::fprintf(stderr, "emu: device fault: %s\n", d.fault.c_str());
  }
  return false;
}

// "" when [p, p + n) lies in one live allocation, else why not.
std::string device_range_problem(Device& d, const void* p, size_t n) {
  uintptr_t base = 0;
  const Alloc* a = find(d, p, &base);
  if (!a) {
    if (was_freed(d, p)) return ptr(p) + " lies in device memory already freed";
    return ptr(p) + " is not device memory (a host pointer passed as a device one?)";
  }
  const size_t off = reinterpret_cast<uintptr_t>(p) - base;
  if (off + n > a->size)
    return ptr(p) + " + " + std::to_string(n) + " bytes runs " + std::to_string(off + n - a->size) +
           " bytes past the end of its " + std::to_string(a->size) + "-byte allocation";
  return "";
}

// The red zones of every live allocation are intact; else which is not.
std::string red_zone_problem(Device& d) {
  static const std::vector<unsigned char> pattern(kRedZone, kRedByte);
  for (auto& [base, a] : d.allocs) {
    const unsigned char* before = a.user - kRedZone;
    const unsigned char* after = a.user + a.size;
    EMU_UNPOISON(before, kRedZone);
    EMU_UNPOISON(after, kRedZone);
    const bool bad_before = std::memcmp(before, pattern.data(), kRedZone) != 0;
    const bool bad_after = std::memcmp(after, pattern.data(), kRedZone) != 0;
    EMU_POISON(before, kRedZone);
    EMU_POISON(after, kRedZone);
    if (bad_before)
      return "memory before the " + std::to_string(a.size) + "-byte allocation at " +
             ptr(reinterpret_cast<void*>(base)) + " was written";
    if (bad_after)
      return "memory past the end of the " + std::to_string(a.size) + "-byte allocation at " +
             ptr(reinterpret_cast<void*>(base)) + " was written";
  }
  return "";
}

// Runs one operation; a fault makes the device's error sticky and drops
// all queued work, as a device context that faulted is unusable.
void execute(Device& d, uint64_t id) {
  Op op = std::move(d.pending.extract(id).mapped());
  auto& q = op.stream->queue;
  if (!q.empty() && q.front() == op.id) q.pop_front();
  if (d.sticky != cudaSuccess) return;
  // EMU_TRACE=1: each operation as it runs, in the order the device ran them.
  static const bool trace = [] {
    const char* e = std::getenv("EMU_TRACE");
    if (!e || std::string(e) == "0") return false;
    if (std::string(e) != "1") detail::bad_setting("EMU_TRACE", e, "0 or 1");
    return true;
  }();
  if (trace) std::fprintf(stderr, "emu: run #%llu %s on stream %p\n", (unsigned long long)op.id,
                          op.what.c_str(), static_cast<void*>(op.stream));
  cudaError_t code = cudaSuccess;
  std::string why;
  try {
    op.run();
    why = red_zone_problem(d);
    if (!why.empty()) {
      code = cudaErrorIllegalAddress;
      why = op.what + ": " + why;
    }
  } catch (const KernelError& e) {
    code = cudaErrorLaunchFailure;
    why = e.what();
  }
  if (code == cudaSuccess) return;
  d.sticky = code;
  d.last_error = code;
  d.fault = why;
  std::fprintf(stderr, "emu: device fault: %s\n", why.c_str());
  for (auto& [id, o] : d.pending) o.stream->queue.clear();
  d.pending.clear();
}

bool ready(Device& d, const Op& op) {
  if (op.stream->queue.empty() || op.stream->queue.front() != op.id) return false;
  for (uint64_t a : op.after)
    if (d.pending.count(a)) return false;
  return true;
}

// The operations that must run before `target` can: the earlier ones of its
// stream and, transitively, those they wait for (events, legacy barriers).
std::set<uint64_t> needed_for(Device& d, uint64_t target) {
  std::set<uint64_t> need;
  std::vector<uint64_t> todo{target};
  while (!todo.empty()) {
    const uint64_t x = todo.back();
    todo.pop_back();
    auto it = d.pending.find(x);
    if (it == d.pending.end() || !need.insert(x).second) continue;
    for (uint64_t q : it->second.stream->queue) {
      if (q == x) break;
      todo.push_back(q);
    }
    for (uint64_t a : it->second.after) todo.push_back(a);
  }
  return need;
}

// Runs queued operations until done() holds: the oldest ready one first. In
// adversarial mode only what `target` (0: everything) needs, newest ready
// first: work that nothing the host waits for depends on runs as late as
// possible, so a consumer whose event wait is missing runs before its
// producer.
template <class Done>
void run_until(Device& d, Done done, uint64_t target = 0) {
  const bool adversarial = stream_mode() == StreamMode::Adversarial;
  // Running an operation queues nothing, so what the target needs only
  // shrinks as its members run: computed once.
  const std::set<uint64_t> need =
      adversarial && target != 0 ? needed_for(d, target) : std::set<uint64_t>{};
  while (!done() && !d.pending.empty()) {
    uint64_t pick = 0;
    for (auto& [id, op] : d.pending) {
      if (!ready(d, op) || (!need.empty() && !need.count(id))) continue;
      pick = id;
      if (!adversarial) break;
    }
    if (pick == 0) {
      std::fprintf(stderr, "emu: internal error: queued work waits on itself\n");
      std::abort();
    }
    execute(d, pick);
  }
}

uint64_t push(Device& d, CUstream_st* s, std::string what, std::function<void()> fn) {
  Op op{d.next_id++, s, std::move(what), std::move(fn), {}};
  // The legacy default stream waits for all work queued on blocking
  // streams, and blocking streams wait for work queued on it.
  if (s->legacy) {
    for (CUstream_st* o : d.streams)
      if (o->blocking && !o->queue.empty()) op.after.push_back(o->queue.back());
  } else if (s->blocking && !d.legacy.queue.empty()) {
    op.after.push_back(d.legacy.queue.back());
  }
  s->queue.push_back(op.id);
  const uint64_t id = op.id;
  d.pending.emplace(id, std::move(op));
  return id;
}

// Nothing runs behind the host's back here, so a query (cudaStreamQuery,
// cudaEventQuery) moves the device one operation on (towards `target`, the
// work queried): a polling loop ends, and sees cudaErrorNotReady first.
void run_one(Device& d, uint64_t target) {
  const size_t before = d.pending.size();
  run_until(d, [&] { return d.pending.size() < before; }, target);
}

void sync_stream(Device& d, CUstream_st* s) {
  if (s->queue.empty()) return;
  const uint64_t last = s->queue.back();
  run_until(d, [&] { return !d.pending.count(last); }, last);
}

int optin_smem() {
  switch (arch()) {
    case 80: return 166912;  // 163 KiB
    case 86:
    case 89: return 101376;  // 99 KiB
    default: return 232448;  // sm_90: 227 KiB
  }
}

void free_alloc(Device& d, uintptr_t base) {
  auto it = d.allocs.find(base);
  Alloc a = std::move(it->second);
  d.allocs.erase(it);
  d.allocated -= a.size;
  EMU_UNPOISON(a.raw.get(), a.raw_bytes());
  std::memset(a.user, kPoison, a.size);
  EMU_POISON(a.raw.get(), a.raw_bytes());
  d.freed.emplace_back(base, std::move(a));
  if (d.freed.size() > 64) {  // keep the quarantine bounded
    EMU_UNPOISON(d.freed.front().second.raw.get(), d.freed.front().second.raw_bytes());
    d.freed.erase(d.freed.begin());
  }
}

enum class Where { Device, Pinned, Host };
Where where(Device& d, const void* p) {
  if (find(d, p, nullptr)) return Where::Device;
  if (holding(d.pinned, p, [](size_t n) { return n; }) != d.pinned.end()) return Where::Pinned;
  return Where::Host;
}

// Checks a copy's two sides against its kind; "" when fine.
std::string copy_problem(Device& d, void* dst, const void* src, size_t n, cudaMemcpyKind kind) {
  const bool dst_dev = kind == cudaMemcpyHostToDevice || kind == cudaMemcpyDeviceToDevice;
  const bool src_dev = kind == cudaMemcpyDeviceToHost || kind == cudaMemcpyDeviceToDevice;
  if (kind == cudaMemcpyDefault) return "";
  if (dst_dev) {
    if (std::string w = device_range_problem(d, dst, n); !w.empty()) return "destination " + w;
  } else if (where(d, dst) == Where::Device) {
    return "destination " + ptr(dst) + " is device memory, the copy's kind says host";
  }
  if (src_dev) {
    if (std::string w = device_range_problem(d, src, n); !w.empty()) return "source " + w;
  } else if (where(d, src) == Where::Device) {
    return "source " + ptr(src) + " is device memory, the copy's kind says host";
  }
  return "";
}

cudaMemcpyKind infer(Device& d, const void* dst, const void* src) {
  const bool dd = where(d, dst) == Where::Device, sd = where(d, src) == Where::Device;
  return dd ? (sd ? cudaMemcpyDeviceToDevice : cudaMemcpyHostToDevice)
            : (sd ? cudaMemcpyDeviceToHost : cudaMemcpyHostToHost);
}

}  // namespace

StreamMode& stream_mode() {
  static StreamMode m = [] {
    const char* e = std::getenv("EMU_STREAMS");
    if (!e || std::string(e) == "in-order") return StreamMode::InOrder;
    if (std::string(e) != "adversarial") detail::bad_setting("EMU_STREAMS", e, "in-order or adversarial");
    return StreamMode::Adversarial;
  }();
  return m;
}

int arch() {
  static const int a = [] {
    const char* e = std::getenv("EMU_ARCH");
    if (!e) return 90;
    for (const char* v : {"80", "86", "89", "90"})
      if (std::string(e) == v) return std::atoi(v);
    detail::bad_setting("EMU_ARCH", e, "80, 86, 89 or 90");
  }();
  return a;
}

cudaError_t enqueue(cudaStream_t stream, std::string what, std::function<void()> fn) {
  Device& d = dev();
  std::lock_guard lock(d.mu);
  if (d.sticky != cudaSuccess) return d.sticky;
  CUstream_st* s = stream_of(d, stream);
  if (!s) return fail(d, cudaErrorInvalidResourceHandle, what + ": unknown stream");
  if (!admit(d, s, what)) return d.sticky;
  push(d, s, std::move(what), std::move(fn));
  return cudaSuccess;
}

cudaError_t hold_stream(cudaStream_t stream, const std::string& what, std::string reason) {
  Device& d = dev();
  std::lock_guard lock(d.mu);
  if (d.sticky != cudaSuccess) return d.sticky;
  CUstream_st* s = stream_of(d, stream);
  if (!s) return fail(d, cudaErrorInvalidResourceHandle, "emu::hold_stream: unknown stream");
  if (!admit(d, s, what)) return d.sticky;
  s->held = std::move(reason);
  return cudaSuccess;
}

void release_stream(cudaStream_t stream) {
  Device& d = dev();
  std::lock_guard lock(d.mu);
  if (CUstream_st* s = stream_of(d, stream)) s->held.clear();
}

void check_device_range(const void* p, size_t bytes, const char* what) {
  Device& d = dev();
  std::lock_guard lock(d.mu);
  if (std::string w = device_range_problem(d, p, bytes); !w.empty())
    throw KernelError(std::string(what) + ": " + w);
}

bool is_device_pointer(const void* p) {
  Device& d = dev();
  std::lock_guard lock(d.mu);
  return find(d, p, nullptr) != nullptr;
}

void drain() {
  Device& d = dev();
  std::lock_guard lock(d.mu);
  run_until(d, [] { return false; });
}

const std::string& fault_message() { return dev().fault; }

void reset_device() {
  Device& d = dev();
  std::lock_guard lock(d.mu);
  d.pending.clear();
  d.legacy.queue.clear();
  d.legacy.held.clear();
  for (CUstream_st* s : d.streams) delete s;
  d.streams.clear();
  for (CUevent_st* e : d.events) delete e;
  d.events.clear();
  for (auto& [b, a] : d.allocs) EMU_UNPOISON(a.raw.get(), a.raw_bytes());
  for (auto& [b, a] : d.freed) EMU_UNPOISON(a.raw.get(), a.raw_bytes());
  d.allocs.clear();
  d.freed.clear();
  d.pinned.clear();
  d.max_dynamic_smem.clear();
  d.allocated = 0;
  d.sticky = d.last_error = cudaSuccess;
  d.fault.clear();
}

size_t bytes_allocated() { return dev().allocated; }

void enqueue_kernel(const Site& site, const void* fn, dim3 grid, dim3 block, size_t dynamic_smem,
                    cudaStream_t stream, std::function<void()> body) {
  Device& d = dev();
  std::lock_guard lock(d.mu);
  if (d.sticky != cudaSuccess) return;
  const std::string name = std::string("kernel ") + site.kernel + " (" + site.file + ":" +
                           std::to_string(site.line) + ")";
  const uint64_t threads = uint64_t(block.x) * block.y * block.z;
  if (block.x == 0 || block.y == 0 || block.z == 0 || grid.x == 0 || grid.y == 0 || grid.z == 0 ||
      block.x > 1024 || block.y > 1024 || block.z > 64 || threads > 1024 || grid.x > 2147483647u ||
      grid.y > 65535 || grid.z > 65535) {
    fail(d, cudaErrorInvalidConfiguration,
         name + ": grid (" + std::to_string(grid.x) + "," + std::to_string(grid.y) + "," +
             std::to_string(grid.z) + ") x block (" + std::to_string(block.x) + "," +
             std::to_string(block.y) + "," + std::to_string(block.z) +
             ") is not a valid launch configuration");
    return;
  }
  GridShape shape;
  shape.grid = grid;
  shape.block = block;
  shape.dynamic_smem = dynamic_smem;
  const auto attr = d.max_dynamic_smem.find(fn);
  const size_t allowed = attr != d.max_dynamic_smem.end() ? size_t(attr->second) : 48 * 1024;
  shape.smem_limit = attr != d.max_dynamic_smem.end() ? size_t(optin_smem()) : 48 * 1024;
  if (dynamic_smem > allowed) {
    fail(d, cudaErrorInvalidValue,
         name + ": " + std::to_string(dynamic_smem) + " bytes of dynamic shared memory, above the " +
             std::to_string(allowed) + (attr == d.max_dynamic_smem.end()
                                             ? " allowed without cudaFuncSetAttribute"
                                             : " set with cudaFuncSetAttribute"));
    return;
  }
  CUstream_st* s = stream_of(d, stream);
  if (!s) {
    fail(d, cudaErrorInvalidResourceHandle, name + ": launched on an unknown stream");
    return;
  }
  if (!admit(d, s, name)) return;
  Site kept = site;
  push(d, s, name, [kept, shape, body = std::move(body)] { run_grid(kept, shape, body); });
}

}  // namespace emu

using emu::Device;
using emu::dev;

// ------------------------------------------------------------------ device --

cudaError_t cudaGetDeviceCount(int* count) {
  if (!count) return cudaErrorInvalidValue;
  *count = 1;
  return cudaSuccess;
}

cudaError_t cudaSetDevice(int device) {
  Device& d = dev();
  if (device != 0) return emu::fail(d, cudaErrorInvalidDevice, "cudaSetDevice(" + std::to_string(device) + "): the emulated device is device 0");
  return cudaSuccess;
}

cudaError_t cudaGetDevice(int* device) {
  if (!device) return cudaErrorInvalidValue;
  *device = 0;
  return cudaSuccess;
}

cudaError_t cudaGetDeviceProperties(cudaDeviceProp* prop, int device) {
  if (!prop || device != 0) return cudaErrorInvalidValue;
  *prop = cudaDeviceProp{};
  std::snprintf(prop->name, sizeof prop->name, "moe-lfb emulated device (sm_%d)", emu::arch());
  prop->totalGlobalMem = emu::kTotalMemory;
  prop->sharedMemPerBlock = 48 * 1024;
  prop->sharedMemPerBlockOptin = size_t(emu::optin_smem());
  prop->regsPerBlock = 65536;
  prop->warpSize = 32;
  prop->maxThreadsPerBlock = 1024;
  prop->maxThreadsDim[0] = prop->maxThreadsDim[1] = 1024;
  prop->maxThreadsDim[2] = 64;
  prop->maxGridSize[0] = 2147483647;
  prop->maxGridSize[1] = prop->maxGridSize[2] = 65535;
  prop->major = emu::arch() / 10;
  prop->minor = emu::arch() % 10;
  prop->multiProcessorCount = emu::arch() == 90 ? 132 : 108;
  return cudaSuccess;
}

cudaError_t cudaDeviceGetAttribute(int* value, cudaDeviceAttr attr, int device) {
  if (!value || device != 0) return cudaErrorInvalidValue;
  cudaDeviceProp p;
  cudaGetDeviceProperties(&p, 0);
  switch (attr) {
    case cudaDevAttrMaxThreadsPerBlock: *value = p.maxThreadsPerBlock; break;
    case cudaDevAttrMaxSharedMemoryPerBlock: *value = int(p.sharedMemPerBlock); break;
    case cudaDevAttrWarpSize: *value = 32; break;
    case cudaDevAttrMultiProcessorCount: *value = p.multiProcessorCount; break;
    case cudaDevAttrComputeCapabilityMajor: *value = p.major; break;
    case cudaDevAttrComputeCapabilityMinor: *value = p.minor; break;
    case cudaDevAttrMaxSharedMemoryPerBlockOptin: *value = int(p.sharedMemPerBlockOptin); break;
    default: return cudaErrorInvalidValue;
  }
  return cudaSuccess;
}

cudaError_t cudaMemGetInfo(size_t* free_bytes, size_t* total_bytes) {
  Device& d = dev();
  std::lock_guard lock(d.mu);
  if (free_bytes) *free_bytes = emu::kTotalMemory - d.allocated;
  if (total_bytes) *total_bytes = emu::kTotalMemory;
  return emu::ok(d);
}

cudaError_t cudaDeviceSynchronize() {
  Device& d = dev();
  std::lock_guard lock(d.mu);
  emu::run_until(d, [] { return false; });
  return emu::ok(d);
}

// ------------------------------------------------------------------ errors --

cudaError_t cudaGetLastError() {
  Device& d = dev();
  std::lock_guard lock(d.mu);
  const cudaError_t e = d.last_error;
  d.last_error = d.sticky;  // a sticky error is never cleared
  return e;
}

cudaError_t cudaPeekAtLastError() { return dev().last_error; }

const char* cudaGetErrorName(cudaError_t e) {
  switch (e) {
    case cudaSuccess: return "cudaSuccess";
    case cudaErrorInvalidValue: return "cudaErrorInvalidValue";
    case cudaErrorMemoryAllocation: return "cudaErrorMemoryAllocation";
    case cudaErrorInitializationError: return "cudaErrorInitializationError";
    case cudaErrorInvalidConfiguration: return "cudaErrorInvalidConfiguration";
    case cudaErrorInvalidDevicePointer: return "cudaErrorInvalidDevicePointer";
    case cudaErrorInvalidMemcpyDirection: return "cudaErrorInvalidMemcpyDirection";
    case cudaErrorInsufficientDriver: return "cudaErrorInsufficientDriver";
    case cudaErrorNoDevice: return "cudaErrorNoDevice";
    case cudaErrorInvalidDevice: return "cudaErrorInvalidDevice";
    case cudaErrorInvalidResourceHandle: return "cudaErrorInvalidResourceHandle";
    case cudaErrorNotReady: return "cudaErrorNotReady";
    case cudaErrorIllegalAddress: return "cudaErrorIllegalAddress";
    case cudaErrorLaunchOutOfResources: return "cudaErrorLaunchOutOfResources";
    case cudaErrorLaunchFailure: return "cudaErrorLaunchFailure";
    case cudaErrorUnknown: return "cudaErrorUnknown";
  }
  return "cudaErrorUnknown";
}

const char* cudaGetErrorString(cudaError_t e) {
  switch (e) {
    case cudaSuccess: return "no error";
    case cudaErrorInvalidValue: return "invalid argument";
    case cudaErrorMemoryAllocation: return "out of memory";
    case cudaErrorInvalidConfiguration: return "invalid configuration argument";
    case cudaErrorInvalidResourceHandle: return "invalid resource handle";
    case cudaErrorNotReady: return "device not ready";
    case cudaErrorIllegalAddress: return "an illegal memory access was encountered";
    case cudaErrorLaunchFailure: return "unspecified launch failure";
    case cudaErrorNoDevice: return "no CUDA-capable device is detected";
    default: return "unknown error";
  }
}

// ------------------------------------------------------------------ memory --

cudaError_t cudaMalloc(void** ptr, size_t size) {
  Device& d = dev();
  std::lock_guard lock(d.mu);
  if (!ptr) return emu::fail(d, cudaErrorInvalidValue, "cudaMalloc: null pointer");
  if (d.sticky != cudaSuccess) return d.sticky;
  if (size > emu::kTotalMemory - d.allocated)
    return emu::fail(d, cudaErrorMemoryAllocation, "cudaMalloc(" + std::to_string(size) + "): out of memory");
  emu::Alloc a;
  a.size = size;
  a.raw.reset(new unsigned char[a.raw_bytes()]);
  std::memset(a.raw.get(), emu::kRedByte, a.raw_bytes());
  const auto first = reinterpret_cast<uintptr_t>(a.raw.get()) + emu::kRedZone;
  a.user = a.raw.get() + emu::kRedZone + ((first + 255) / 256 * 256 - first);
  std::memset(a.user, emu::kPoison, size);
  // Under AddressSanitizer a kernel's access past either end faults at once.
  EMU_POISON(a.raw.get(), size_t(a.user - a.raw.get()));
  EMU_POISON(a.user + size, a.raw_bytes() - size_t(a.user - a.raw.get()) - size);
  *ptr = a.user;
  d.allocated += size;
  d.allocs.emplace(reinterpret_cast<uintptr_t>(a.user), std::move(a));
  return cudaSuccess;
}

// cudaFree synchronises the device first ("API synchronization behavior").
cudaError_t cudaFree(void* ptr) {
  Device& d = dev();
  std::lock_guard lock(d.mu);
  if (!ptr) return emu::ok(d);
  emu::run_until(d, [] { return false; });
  const auto base = reinterpret_cast<uintptr_t>(ptr);
  if (!d.allocs.count(base))
    return emu::fail(d, cudaErrorInvalidValue,
                     "cudaFree(" + emu::ptr(ptr) + "): " +
                         (emu::was_freed(d, ptr) ? "freed twice" : "not an address cudaMalloc returned"));
  emu::free_alloc(d, base);
  return emu::ok(d);
}

cudaError_t cudaMallocHost(void** ptr, size_t size) {
  Device& d = dev();
  std::lock_guard lock(d.mu);
  if (!ptr) return cudaErrorInvalidValue;
  *ptr = std::malloc(size ? size : 1);
  d.pinned.emplace(reinterpret_cast<uintptr_t>(*ptr), size ? size : 1);
  return cudaSuccess;
}

cudaError_t cudaFreeHost(void* ptr) {
  Device& d = dev();
  std::lock_guard lock(d.mu);
  emu::run_until(d, [] { return false; });
  if (ptr && !d.pinned.erase(reinterpret_cast<uintptr_t>(ptr)))
    return emu::fail(d, cudaErrorInvalidValue, "cudaFreeHost(" + emu::ptr(ptr) + "): not from cudaMallocHost");
  std::free(ptr);
  return cudaSuccess;
}

// Stream-ordered allocation: the memory is reserved now and used in stream
// order; cudaFreeAsync releases it when the stream reaches the free.
cudaError_t cudaMallocAsync(void** ptr, size_t size, cudaStream_t stream) {
  Device& d = dev();
  {
    std::lock_guard lock(d.mu);
    if (!emu::stream_of(d, stream))
      return emu::fail(d, cudaErrorInvalidResourceHandle, "cudaMallocAsync: unknown stream");
  }
  return cudaMalloc(ptr, size);
}

cudaError_t cudaFreeAsync(void* ptr, cudaStream_t stream) {
  Device& d = dev();
  std::lock_guard lock(d.mu);
  CUstream_st* s = emu::stream_of(d, stream);
  if (!s) return emu::fail(d, cudaErrorInvalidResourceHandle, "cudaFreeAsync: unknown stream");
  if (!emu::admit(d, s, "cudaFreeAsync")) return d.sticky;
  const auto base = reinterpret_cast<uintptr_t>(ptr);
  if (!d.allocs.count(base))
    return emu::fail(d, cudaErrorInvalidValue, "cudaFreeAsync(" + emu::ptr(ptr) + "): not a live allocation");
  emu::push(d, s, "cudaFreeAsync", [&d, base] {
    if (d.allocs.count(base)) emu::free_alloc(d, base);
  });
  return emu::ok(d);
}

namespace {

// Queues a copy; pageable host sources are read now (the runtime stages
// them before returning), pinned ones when the stream reaches the copy.
cudaError_t queue_copy(Device& d, void* dst, const void* src, size_t n, cudaMemcpyKind kind,
                       CUstream_st* s, const char* api) {
  if (!emu::admit(d, s, api)) return d.sticky;
  if (kind == cudaMemcpyDefault) kind = emu::infer(d, dst, src);
  if (kind < cudaMemcpyHostToHost || kind > cudaMemcpyDefault)
    return emu::fail(d, cudaErrorInvalidMemcpyDirection, std::string(api) + ": invalid kind");
  if (n == 0) return emu::ok(d);
  if (std::string w = emu::copy_problem(d, dst, src, n, kind); !w.empty())
    return emu::fail(d, cudaErrorInvalidValue, std::string(api) + ": " + w);
  std::function<void()> fn;
  if (kind == cudaMemcpyHostToDevice && emu::where(d, src) == emu::Where::Host) {
    auto staged = std::make_shared<std::vector<unsigned char>>(
        static_cast<const unsigned char*>(src), static_cast<const unsigned char*>(src) + n);
    fn = [dst, staged] { std::memcpy(dst, staged->data(), staged->size()); };
  } else {
    fn = [dst, src, n] { std::memmove(dst, src, n); };
  }
  emu::push(d, s, api, std::move(fn));
  return cudaSuccess;
}

}  // namespace

// Synchronous: on the legacy stream, and the host waits for it.
cudaError_t cudaMemcpy(void* dst, const void* src, size_t count, cudaMemcpyKind kind) {
  Device& d = dev();
  std::lock_guard lock(d.mu);
  if (d.sticky != cudaSuccess) return d.sticky;
  if (cudaError_t e = queue_copy(d, dst, src, count, kind, &d.legacy, "cudaMemcpy"); e != cudaSuccess)
    return e;
  emu::sync_stream(d, &d.legacy);
  return emu::ok(d);
}

// Device to pageable host memory returns only once the copy is done; from
// pageable host memory the stream is synchronised before the copy is
// staged ("API synchronization behavior").
cudaError_t cudaMemcpyAsync(void* dst, const void* src, size_t count, cudaMemcpyKind kind,
                            cudaStream_t stream) {
  Device& d = dev();
  std::lock_guard lock(d.mu);
  if (d.sticky != cudaSuccess) return d.sticky;
  CUstream_st* s = emu::stream_of(d, stream);
  if (!s) return emu::fail(d, cudaErrorInvalidResourceHandle, "cudaMemcpyAsync: unknown stream");
  const cudaMemcpyKind k = kind == cudaMemcpyDefault ? emu::infer(d, dst, src) : kind;
  if (k == cudaMemcpyHostToDevice && emu::where(d, src) == emu::Where::Host) emu::sync_stream(d, s);
  if (cudaError_t e = queue_copy(d, dst, src, count, kind, s, "cudaMemcpyAsync"); e != cudaSuccess)
    return e;
  if (k == cudaMemcpyDeviceToHost && emu::where(d, dst) == emu::Where::Host) emu::sync_stream(d, s);
  return emu::ok(d);
}

namespace {
cudaError_t queue_memset(Device& d, void* ptr, int value, size_t count, CUstream_st* s,
                         const char* api) {
  if (!emu::admit(d, s, api)) return d.sticky;
  if (count == 0) return emu::ok(d);
  if (std::string w = emu::device_range_problem(d, ptr, count); !w.empty())
    return emu::fail(d, cudaErrorInvalidValue, std::string(api) + ": " + w);
  emu::push(d, s, api, [ptr, value, count] { std::memset(ptr, value, count); });
  return emu::ok(d);
}
}  // namespace

// cudaMemset of device memory is asynchronous with respect to the host and
// runs on the legacy default stream.
cudaError_t cudaMemset(void* ptr, int value, size_t count) {
  Device& d = dev();
  std::lock_guard lock(d.mu);
  if (d.sticky != cudaSuccess) return d.sticky;
  return queue_memset(d, ptr, value, count, &d.legacy, "cudaMemset");
}

cudaError_t cudaMemsetAsync(void* ptr, int value, size_t count, cudaStream_t stream) {
  Device& d = dev();
  std::lock_guard lock(d.mu);
  if (d.sticky != cudaSuccess) return d.sticky;
  CUstream_st* s = emu::stream_of(d, stream);
  if (!s) return emu::fail(d, cudaErrorInvalidResourceHandle, "cudaMemsetAsync: unknown stream");
  return queue_memset(d, ptr, value, count, s, "cudaMemsetAsync");
}

// Rows of `width` bytes, `pitch` apart: the range from the first byte of the
// first row to the last byte of the last must lie in one allocation.
cudaError_t cudaMemset2DAsync(void* ptr, size_t pitch, int value, size_t width, size_t height,
                              cudaStream_t stream) {
  Device& d = dev();
  std::lock_guard lock(d.mu);
  if (d.sticky != cudaSuccess) return d.sticky;
  CUstream_st* s = emu::stream_of(d, stream);
  if (!s) return emu::fail(d, cudaErrorInvalidResourceHandle, "cudaMemset2DAsync: unknown stream");
  if (width > pitch && height > 1)
    return emu::fail(d, cudaErrorInvalidValue, "cudaMemset2DAsync: width is larger than pitch");
  if (width == 0 || height == 0) return emu::ok(d);
  const size_t span = pitch * (height - 1) + width;
  if (std::string w = emu::device_range_problem(d, ptr, span); !w.empty())
    return emu::fail(d, cudaErrorInvalidValue, "cudaMemset2DAsync: " + w);
  emu::push(d, s, "cudaMemset2DAsync", [ptr, pitch, value, width, height] {
    for (size_t r = 0; r < height; ++r) std::memset(static_cast<char*>(ptr) + r * pitch, value, width);
  });
  return emu::ok(d);
}

// ------------------------------------------------------- streams, events --

cudaError_t cudaStreamCreate(cudaStream_t* stream) { return cudaStreamCreateWithFlags(stream, 0); }

cudaError_t cudaStreamCreateWithFlags(cudaStream_t* stream, unsigned int flags) {
  Device& d = dev();
  std::lock_guard lock(d.mu);
  if (!stream || (flags & ~1u)) return emu::fail(d, cudaErrorInvalidValue, "cudaStreamCreateWithFlags: bad arguments");
  auto* s = new CUstream_st;
  s->blocking = !(flags & cudaStreamNonBlocking);
  d.streams.insert(s);
  *stream = s;
  return cudaSuccess;
}

// Work already queued still completes (the runtime does not drop it).
cudaError_t cudaStreamDestroy(cudaStream_t stream) {
  Device& d = dev();
  std::lock_guard lock(d.mu);
  if (!d.streams.count(stream)) return emu::fail(d, cudaErrorInvalidResourceHandle, "cudaStreamDestroy: unknown stream");
  emu::sync_stream(d, stream);
  d.streams.erase(stream);
  delete stream;
  return emu::ok(d);
}

cudaError_t cudaStreamSynchronize(cudaStream_t stream) {
  Device& d = dev();
  std::lock_guard lock(d.mu);
  CUstream_st* s = emu::stream_of(d, stream);
  if (!s) return emu::fail(d, cudaErrorInvalidResourceHandle, "cudaStreamSynchronize: unknown stream");
  emu::sync_stream(d, s);
  return emu::ok(d);
}

cudaError_t cudaStreamQuery(cudaStream_t stream) {
  Device& d = dev();
  std::lock_guard lock(d.mu);
  CUstream_st* s = emu::stream_of(d, stream);
  if (!s) return emu::fail(d, cudaErrorInvalidResourceHandle, "cudaStreamQuery: unknown stream");
  if (!s->queue.empty()) emu::run_one(d, s->queue.back());
  return s->queue.empty() ? emu::ok(d) : cudaErrorNotReady;
}

cudaError_t cudaStreamWaitEvent(cudaStream_t stream, cudaEvent_t event, unsigned int flags) {
  Device& d = dev();
  std::lock_guard lock(d.mu);
  CUstream_st* s = emu::stream_of(d, stream);
  if (!s || !d.events.count(event) || flags != 0)
    return emu::fail(d, cudaErrorInvalidResourceHandle, "cudaStreamWaitEvent: unknown stream or event");
  if (!emu::admit(d, s, "cudaStreamWaitEvent")) return d.sticky;
  if (event->op == 0) return emu::ok(d);  // never recorded: nothing to wait for
  const uint64_t id = emu::push(d, s, "cudaStreamWaitEvent", [] {});
  d.pending.at(id).after.push_back(event->op);
  return emu::ok(d);
}

cudaError_t cudaEventCreate(cudaEvent_t* event) { return cudaEventCreateWithFlags(event, 0); }

cudaError_t cudaEventCreateWithFlags(cudaEvent_t* event, unsigned int flags) {
  Device& d = dev();
  std::lock_guard lock(d.mu);
  if (!event) return cudaErrorInvalidValue;
  auto* e = new CUevent_st;
  e->flags = flags;
  d.events.insert(e);
  *event = e;
  return cudaSuccess;
}

cudaError_t cudaEventDestroy(cudaEvent_t event) {
  Device& d = dev();
  std::lock_guard lock(d.mu);
  if (!d.events.erase(event)) return emu::fail(d, cudaErrorInvalidResourceHandle, "cudaEventDestroy: unknown event");
  // A wait already queued keeps its own copy of the marker id.
  delete event;
  return cudaSuccess;
}

cudaError_t cudaEventRecord(cudaEvent_t event, cudaStream_t stream) {
  Device& d = dev();
  std::lock_guard lock(d.mu);
  CUstream_st* s = emu::stream_of(d, stream);
  if (!s || !d.events.count(event))
    return emu::fail(d, cudaErrorInvalidResourceHandle, "cudaEventRecord: unknown stream or event");
  if (d.sticky != cudaSuccess) return d.sticky;
  if (!emu::admit(d, s, "cudaEventRecord")) return d.sticky;
  event->op = emu::push(d, s, "cudaEventRecord", [event, &d] {
    if (d.events.count(event)) event->when = std::chrono::steady_clock::now();
  });
  return cudaSuccess;
}

cudaError_t cudaEventSynchronize(cudaEvent_t event) {
  Device& d = dev();
  std::lock_guard lock(d.mu);
  if (!d.events.count(event)) return emu::fail(d, cudaErrorInvalidResourceHandle, "cudaEventSynchronize: unknown event");
  const uint64_t id = event->op;
  emu::run_until(d, [&] { return !d.pending.count(id); }, id);
  return emu::ok(d);
}

cudaError_t cudaEventQuery(cudaEvent_t event) {
  Device& d = dev();
  std::lock_guard lock(d.mu);
  if (!d.events.count(event)) return emu::fail(d, cudaErrorInvalidResourceHandle, "cudaEventQuery: unknown event");
  if (d.pending.count(event->op)) emu::run_one(d, event->op);
  return d.pending.count(event->op) ? cudaErrorNotReady : emu::ok(d);
}

// Host time between the two markers' execution: the emulator's, not a GPU's.
cudaError_t cudaEventElapsedTime(float* ms, cudaEvent_t start, cudaEvent_t end) {
  Device& d = dev();
  std::lock_guard lock(d.mu);
  if (!ms || !d.events.count(start) || !d.events.count(end))
    return emu::fail(d, cudaErrorInvalidResourceHandle, "cudaEventElapsedTime: unknown event");
  if ((start->flags | end->flags) & cudaEventDisableTiming)
    return emu::fail(d, cudaErrorInvalidResourceHandle, "cudaEventElapsedTime: an event created with cudaEventDisableTiming");
  if (start->op == 0 || end->op == 0)
    return emu::fail(d, cudaErrorInvalidResourceHandle, "cudaEventElapsedTime: an event never recorded");
  if (d.pending.count(start->op) || d.pending.count(end->op)) return cudaErrorNotReady;
  *ms = std::chrono::duration<float, std::milli>(end->when - start->when).count();
  return emu::ok(d);
}

cudaError_t cudaFuncSetAttribute(const void* func, cudaFuncAttribute attr, int value) {
  Device& d = dev();
  std::lock_guard lock(d.mu);
  if (attr == cudaFuncAttributePreferredSharedMemoryCarveout) return cudaSuccess;
  if (attr != cudaFuncAttributeMaxDynamicSharedMemorySize)
    return emu::fail(d, cudaErrorInvalidValue, "cudaFuncSetAttribute: attribute not emulated");
  if (value < 0 || value > emu::optin_smem())
    return emu::fail(d, cudaErrorInvalidValue,
                     "cudaFuncSetAttribute: " + std::to_string(value) +
                         " bytes of dynamic shared memory, above sm_" + std::to_string(emu::arch()) +
                         "'s " + std::to_string(emu::optin_smem()));
  d.max_dynamic_smem[func] = value;
  return cudaSuccess;
}
