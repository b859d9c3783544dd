// The block scheduler of the emulated device: every CUDA thread is a fiber
// (Boost.Context, a few ns a switch) with its own stack, so a thread's
// registers are its locals. A fiber runs until it reaches __syncthreads, a
// warp collective or its end. The scheduler resumes the runnable threads in
// the order the Schedule asks for, completes each warp collective that all
// lanes of its mask have reached (every lane's result from every lane's
// input, as the hardware computes it), and releases __syncthreads once every
// thread of the block waits there. A state in which nothing can move is an
// error that says who waits where, never a hang.
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <boost/context/fiber.hpp>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <memory>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "emu/exec.h"

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/asan_interface.h>
#include <sanitizer/common_interface_defs.h>
#define EMU_ASAN_FIBERS 1
#endif

namespace emu {

namespace ctx = boost::context;

namespace detail {
constinit thread_local ThreadView* current = nullptr;
}

namespace detail {
void bad_setting(const char* name, const char* value, const char* expected) {
  std::fprintf(stderr, "emu: %s=%s: expected %s\n", name, value, expected);
  std::exit(2);
}
}  // namespace detail

// EMU_SCHEDULE=ORDER[,greedy], ORDER forward, reverse or random[:SEED].
Schedule& schedule() {
  static Schedule s = [] {
    Schedule r;
    const char* env = std::getenv("EMU_SCHEDULE");
    if (!env) return r;
    std::string v = env;
    const char* expected = "forward, reverse or random[:SEED], optionally followed by ,greedy";
    if (const size_t comma = v.find(','); comma != std::string::npos) {
      if (v.substr(comma) != ",greedy") detail::bad_setting("EMU_SCHEDULE", env, expected);
      r.warp_greedy = true;
      v.resize(comma);
    }
    if (v == "reverse") {
      r.order = Order::Reverse;
    } else if (v.rfind("random", 0) == 0) {
      r.order = Order::Random;
      if (v.size() > 6) {
        char* end = nullptr;
        r.seed = v[6] == ':' && v.size() > 7 ? std::strtoull(v.c_str() + 7, &end, 10) : 0;
        if (!end || *end != '\0') detail::bad_setting("EMU_SCHEDULE", env, expected);
      }
    } else if (v != "forward") {
      detail::bad_setting("EMU_SCHEDULE", env, expected);
    }
    return r;
  }();
  return s;
}

namespace {

constexpr size_t kStackBytes = 256 * 1024;
constexpr unsigned char kSharedPoison = 0xFF;  // NaN as fp32 and bf16
constexpr unsigned char kRedZone = 0xFA;
constexpr size_t kSharedRedZone = 256;

// Fiber stacks, each with a guard page below it (a stack overflow faults),
// reused from block to block.
class StackPool {
 public:
  ~StackPool() {
    for (void* p : free_) munmap(p, kStackBytes + page());
  }
  void* take() {
    if (!free_.empty()) {
      void* p = free_.back();
      free_.pop_back();
      return p;
    }
    void* p = mmap(nullptr, kStackBytes + page(), PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (p == MAP_FAILED) throw std::bad_alloc();
    mprotect(p, page(), PROT_NONE);
    return p;
  }
  void give(void* p) {
#ifdef EMU_ASAN_FIBERS
    // A fiber unwound while suspended (a thread of a faulting block) leaves
    // its frames' red zones poisoned: clear them before the stack is reused.
    ASAN_UNPOISON_MEMORY_REGION(static_cast<char*>(p) + page(), kStackBytes);
#endif
    free_.push_back(p);
  }
  static size_t page() { return size_t(sysconf(_SC_PAGESIZE)); }

 private:
  std::vector<void*> free_;
};

StackPool& stacks() {
  thread_local StackPool pool;
  return pool;
}

struct PoolStack {
  void** bottom;  // where the stack's lowest address is recorded (for ASan)
  ctx::stack_context allocate() {
    char* base = static_cast<char*>(stacks().take()) + StackPool::page();
    *bottom = base;
    ctx::stack_context sc;
    sc.size = kStackBytes;
    sc.sp = base + kStackBytes;
    return sc;
  }
  void deallocate(ctx::stack_context& sc) noexcept {
    stacks().give(static_cast<char*>(sc.sp) - kStackBytes - StackPool::page());
  }
};

enum class Wait { Runnable, Block, Warp, Done };

const char* op_name(detail::WarpOp op) {
  switch (op) {
    case detail::WarpOp::SyncWarp: return "__syncwarp";
    case detail::WarpOp::ShflIdx: return "__shfl_sync";
    case detail::WarpOp::ShflUp: return "__shfl_up_sync";
    case detail::WarpOp::ShflDown: return "__shfl_down_sync";
    case detail::WarpOp::ShflXor: return "__shfl_xor_sync";
    case detail::WarpOp::MatchAny: return "__match_any_sync";
    case detail::WarpOp::Ballot: return "__ballot_sync";
    case detail::WarpOp::Any: return "__any_sync";
    case detail::WarpOp::All: return "__all_sync";
    case detail::WarpOp::Custom: return "a warp collective";
  }
  return "?";
}

std::string hex(unsigned v) {
  char b[16];
  std::snprintf(b, sizeof b, "0x%08x", v);
  return b;
}

std::string str(uint3 v) {
  char b[48];
  std::snprintf(b, sizeof b, "(%u,%u,%u)", v.x, v.y, v.z);
  return b;
}

struct Thread {
  detail::ThreadView view{};
  Wait wait = Wait::Runnable;
  ctx::fiber fiber;  // this thread, while suspended
  ctx::fiber sink;   // the scheduler, while this thread runs
  void* stack_bottom = nullptr;
  void* asan_fake = nullptr;
  // The warp collective this thread waits in.
  detail::WarpOp op{};
  unsigned mask = 0;
  uint64_t value = 0, result = 0;
  int arg = 0, width = 32;
  const detail::Collective* coll = nullptr;  // op Custom: which, and this lane's record
  void* record = nullptr;
};

const char* op_name(const Thread& t) { return t.op == detail::WarpOp::Custom ? t.coll->name : op_name(t.op); }

// One run_grid call: the grid, its shared memory layout, the block now
// running and the first error.
struct Grid {
  const GridShape* shape;
  const std::function<void()>* body;
  // Shared memory: [dynamic | red zone | static declarations], 128-byte
  // aligned; statics get their offsets the first time a thread reaches them.
  std::vector<unsigned char> arena_store;
  unsigned char* arena = nullptr;
  size_t static_base = 0, arena_bytes = 0;
  size_t static_bytes = 0;
  struct Static {
    const void* tag;
    size_t offset, bytes;
  };
  std::vector<Static> statics;
  detail::BlockView block{};
  std::vector<Thread> threads;
  Thread* running = nullptr;
  std::string error;  // the first violation, with who and where
  const void* sched_bottom = nullptr;
  size_t sched_size = 0;

  size_t static_capacity() const { return shape->smem_limit - shape->dynamic_smem; }
};

thread_local Grid* g_grid = nullptr;

Grid& grid() {
  if (!g_grid) throw KernelError("a device function was called outside a kernel");
  return *g_grid;
}

std::string who(const Grid& g, const Thread& t) {
  return "block " + str(g.block.idx) + " thread " + str(t.view.idx);
}

// Fiber side: give control back to the scheduler until resumed.
void suspend(Thread& t, Wait w) {
  [[maybe_unused]] Grid& g = grid();
  t.wait = w;
#ifdef EMU_ASAN_FIBERS
  __sanitizer_start_switch_fiber(&t.asan_fake, g.sched_bottom, g.sched_size);
#endif
  t.sink = std::move(t.sink).resume();
#ifdef EMU_ASAN_FIBERS
  __sanitizer_finish_switch_fiber(t.asan_fake, &g.sched_bottom, &g.sched_size);
#endif
}

ctx::fiber thread_main(Thread& t, ctx::fiber&& sink) {
  t.sink = std::move(sink);
  Grid& g = grid();
#ifdef EMU_ASAN_FIBERS
  __sanitizer_finish_switch_fiber(nullptr, &g.sched_bottom, &g.sched_size);
#endif
  try {
    (*g.body)();
  } catch (const std::exception& e) {  // KernelError, or anything the kernel threw
    if (g.error.empty()) g.error = who(g, t) + ": " + e.what();
  }
  t.wait = Wait::Done;
#ifdef EMU_ASAN_FIBERS
  __sanitizer_start_switch_fiber(nullptr, g.sched_bottom, g.sched_size);
#endif
  return std::move(t.sink);
}

// Scheduler side: run t until it suspends or ends.
void resume(Grid& g, Thread& t) {
  g.running = &t;
  detail::current = &t.view;
  t.wait = Wait::Runnable;
#ifdef EMU_ASAN_FIBERS
  void* fake = nullptr;
  __sanitizer_start_switch_fiber(&fake, t.stack_bottom, kStackBytes);
#endif
  t.fiber = std::move(t.fiber).resume();
#ifdef EMU_ASAN_FIBERS
  __sanitizer_finish_switch_fiber(fake, nullptr, nullptr);
#endif
  g.running = nullptr;
  detail::current = nullptr;
}

// Completes the warp collectives that every lane of their mask has reached.
// Returns false (with g.error set) on a collective that cannot complete.
bool complete_collectives(Grid& g, unsigned warp) {
  const unsigned n = unsigned(g.threads.size());
  const unsigned first = warp * 32, lanes = std::min(32u, n - first);
  auto lane = [&](unsigned l) -> Thread& { return g.threads[first + l]; };
  for (unsigned l = 0; l < lanes; ++l) {
    Thread& t = lane(l);
    if (t.wait != Wait::Warp) continue;
    const unsigned mask = t.mask;
    const char* name = op_name(t);
    if (!(mask >> l & 1u)) {
      g.error = who(g, t) + ": " + name + " with mask " + hex(mask) + ", which leaves out the calling lane " + std::to_string(l);
      return false;
    }
    if (lanes < 32 && (mask >> lanes) != 0) {
      g.error = who(g, t) + ": " + name + " with mask " + hex(mask) + " names lanes beyond the block's last thread (lane " + std::to_string(lanes - 1) + ")";
      return false;
    }
    bool ready = true;
    for (unsigned m = 0; m < lanes; ++m) {
      if (!(mask >> m & 1u)) continue;
      const Thread& o = lane(m);
      if (o.wait == Wait::Done) {
        g.error = who(g, t) + ": " + name + " with mask " + hex(mask) + ": lane " + std::to_string(m) + " has already exited";
        return false;
      }
      if (o.wait != Wait::Warp) {
        ready = false;
        continue;
      }
      // Another collective first (legal under independent thread
      // scheduling: it may complete and this lane come here later); if
      // nothing can move, stuck() reports who waits where.
      if (o.op != t.op || o.mask != mask || o.coll != t.coll) ready = false;
    }
    if (!ready) continue;
    if (t.op == detail::WarpOp::Custom) {
      void* records[32] = {};
      for (unsigned m = 0; m < lanes; ++m)
        if (mask >> m & 1u) records[m] = lane(m).record;
      try {
        t.coll->complete(*t.coll, records, mask);
      } catch (const KernelError& e) {
        g.error = "block " + str(g.block.idx) + " warp " + std::to_string(warp) + ": " + e.what();
        return false;
      }
      for (unsigned m = 0; m < lanes; ++m)
        if (mask >> m & 1u) lane(m).wait = Wait::Runnable;
      continue;
    }
    for (unsigned m = 0; m < lanes; ++m) {
      if (!(mask >> m & 1u)) continue;
      Thread& me = lane(m);
      const int width = me.width;
      if (width <= 0 || width > 32 || (width & (width - 1)) != 0) {
        g.error = who(g, me) + ": " + name + " with width " + std::to_string(width) + " (a power of 2 up to 32)";
        return false;
      }
      const int seg = int(m) / width * width;
      int src = int(m);
      switch (me.op) {
        case detail::WarpOp::SyncWarp:
        case detail::WarpOp::Custom:  // completed above
          me.result = 0;
          break;
        case detail::WarpOp::ShflIdx: src = seg + (me.arg & (width - 1)); break;
        case detail::WarpOp::ShflUp: src = int(m) - me.arg >= seg ? int(m) - me.arg : int(m); break;
        case detail::WarpOp::ShflDown: src = int(m) + me.arg < seg + width ? int(m) + me.arg : int(m); break;
        case detail::WarpOp::ShflXor: {
          // A group may read earlier groups; a later one gives its own value.
          const int j = int(m) ^ (me.arg & 31);
          src = j < seg + width ? j : int(m);
          break;
        }
        case detail::WarpOp::MatchAny:
        case detail::WarpOp::Ballot:
        case detail::WarpOp::Any:
        case detail::WarpOp::All: {
          uint64_t same = 0, votes = 0;
          for (unsigned o = 0; o < lanes; ++o) {
            if (!(mask >> o & 1u)) continue;
            if (lane(o).value == me.value) same |= 1ull << o;
            if (lane(o).value) votes |= 1ull << o;
          }
          me.result = me.op == detail::WarpOp::MatchAny ? same
                      : me.op == detail::WarpOp::Ballot ? votes
                      : me.op == detail::WarpOp::Any    ? uint64_t(votes != 0)
                                                        : uint64_t(votes == mask);
          break;
        }
      }
      if (me.op >= detail::WarpOp::ShflIdx && me.op <= detail::WarpOp::ShflXor) {
        // A source lane outside the mask gives an undefined value (the
        // guide), not undefined behaviour: all-ones bits, NaN as a float.
        const bool defined = src >= 0 && src < int(lanes) && (mask >> src & 1u);
        me.result = defined ? lane(unsigned(src)).value : ~uint64_t(0);
      }
    }
    for (unsigned m = 0; m < lanes; ++m)
      if (mask >> m & 1u) lane(m).wait = Wait::Runnable;
  }
  return true;
}

// Why nothing can move: who waits where.
std::string stuck(const Grid& g) {
  std::string at_block, at_warp;
  int n_block = 0, n_warp = 0, n_done = 0;
  for (const Thread& t : g.threads) {
    if (t.wait == Wait::Block && n_block++ < 3) at_block += (at_block.empty() ? "" : ", ") + str(t.view.idx);
    if (t.wait == Wait::Warp && n_warp++ < 3)
      at_warp += (at_warp.empty() ? "" : ", ") + str(t.view.idx) + " in " + op_name(t) + " (mask " + hex(t.mask) + ")";
    if (t.wait == Wait::Done) ++n_done;
  }
  return "block " + str(g.block.idx) + " cannot go on: " + std::to_string(n_block) +
         " thread(s) wait at __syncthreads (" + at_block + (n_block > 3 ? ", ..." : "") + "), " +
         std::to_string(n_warp) + " in a warp collective (" + at_warp + (n_warp > 3 ? ", ..." : "") +
         "), " + std::to_string(n_done) + " exited";
}

// 0 .. n-1 in the schedule's order (blocks, warps or threads).
template <class I>
std::vector<I> order_of(I n, Order order, std::mt19937_64& rng) {
  std::vector<I> v(n);
  std::iota(v.begin(), v.end(), I(0));
  if (order == Order::Reverse) std::reverse(v.begin(), v.end());
  if (order == Order::Random) std::shuffle(v.begin(), v.end(), rng);
  return v;
}

void check_red_zone(Grid& g) {
  const unsigned char* z = g.arena + g.shape->dynamic_smem;
  for (size_t i = 0; i < kSharedRedZone; ++i)
    if (z[i] != kRedZone) {
      g.error = "block " + str(g.block.idx) + ": shared memory written past the end of the block's " +
                std::to_string(g.shape->dynamic_smem) + " bytes of dynamic shared memory (at byte " +
                std::to_string(g.shape->dynamic_smem + i) + ")";
      return;
    }
}

void run_block(Grid& g, const Schedule& sched, std::mt19937_64& rng) {
  const dim3 bd = g.shape->block;
  const unsigned n = bd.x * bd.y * bd.z;
  std::memset(g.arena, kSharedPoison, g.arena_bytes);
  std::memset(g.arena + g.shape->dynamic_smem, kRedZone, kSharedRedZone);
  g.threads.clear();
  g.threads.resize(n);
  for (unsigned i = 0; i < n; ++i) {
    Thread& t = g.threads[i];
    t.view.idx = uint3{i % bd.x, i / bd.x % bd.y, i / (bd.x * bd.y)};
    t.view.block = &g.block;
    PoolStack alloc{&t.stack_bottom};
    t.fiber = ctx::fiber(std::allocator_arg, alloc,
                         [&t](ctx::fiber&& sink) { return thread_main(t, std::move(sink)); });
  }
  const unsigned warps = (n + 31) / 32;
  for (;;) {
    if (sched.warp_greedy) {
      // Each warp as far as it goes before the next.
      for (unsigned w : order_of(warps, sched.order, rng)) {
        const unsigned lanes = std::min(32u, n - w * 32);
        for (bool more = true; more && g.error.empty();) {
          for (unsigned l : order_of(lanes, sched.order, rng)) {
            Thread& t = g.threads[w * 32 + l];
            if (t.wait != Wait::Runnable) continue;
            resume(g, t);
            if (!g.error.empty()) break;
          }
          if (!g.error.empty() || !complete_collectives(g, w)) break;
          more = false;
          for (unsigned l = 0; l < lanes; ++l) more |= g.threads[w * 32 + l].wait == Wait::Runnable;
        }
        if (!g.error.empty()) break;
      }
    } else {
      // Every thread one step (to its next barrier or collective) in turn.
      for (unsigned i : order_of(n, sched.order, rng)) {
        Thread& t = g.threads[i];
        if (t.wait != Wait::Runnable) continue;
        resume(g, t);
        if (!g.error.empty()) break;
      }
      for (unsigned w = 0; w < warps && g.error.empty(); ++w) complete_collectives(g, w);
    }
    if (!g.error.empty()) break;
    size_t done = 0, at_block = 0, runnable = 0;
    for (const Thread& t : g.threads) {
      done += t.wait == Wait::Done;
      at_block += t.wait == Wait::Block;
      runnable += t.wait == Wait::Runnable;
    }
    if (done == n) break;
    if (runnable > 0) continue;
    if (at_block + done < n) {  // some wait in collectives that cannot complete
      g.error = stuck(g);
      break;
    }
    if (done > 0) {
      g.error = "block " + str(g.block.idx) + ": __syncthreads reached by " + std::to_string(at_block) +
                " thread(s) after " + std::to_string(done) + " other(s) of the block exited";
      break;
    }
    for (Thread& t : g.threads) t.wait = Wait::Runnable;  // every thread is at the barrier
  }
  if (g.error.empty()) check_red_zone(g);
  g.threads.clear();  // unwinds the fibers of threads that did not finish
}

}  // namespace

void run_grid(const Site& site, const GridShape& shape, const std::function<void()>& body) {
  Grid g;
  g.shape = &shape;
  g.body = &body;
  g.static_base = (shape.dynamic_smem + kSharedRedZone + 127) / 128 * 128;
  g.arena_bytes = g.static_base + g.static_capacity();
  g.arena_store.resize(g.arena_bytes + 128);
  const auto raw = reinterpret_cast<uintptr_t>(g.arena_store.data());
  g.arena = g.arena_store.data() + ((raw + 127) / 128 * 128 - raw);
  g.block.dim = shape.block;
  g.block.grid = shape.grid;
  const Schedule sched = schedule();
  std::mt19937_64 rng(sched.seed);
  const dim3 gd = shape.grid;
  const std::vector<uint64_t> order = order_of(uint64_t(gd.x) * gd.y * gd.z, sched.order, rng);
  Grid* const outer = g_grid;
  g_grid = &g;
  struct Restore {
    Grid* outer;
    ~Restore() { g_grid = outer; }
  } restore{outer};
  for (uint64_t b : order) {
    g.block.idx = uint3{unsigned(b % gd.x), unsigned(b / gd.x % gd.y), unsigned(b / (uint64_t(gd.x) * gd.y))};
    run_block(g, sched, rng);
    if (!g.error.empty())
      throw KernelError(std::string("kernel ") + site.kernel + " (launched at " + site.file + ":" +
                        std::to_string(site.line) + "), " + g.error);
  }
}

namespace detail {

uint64_t warp_op(WarpOp op, unsigned mask, uint64_t value, int arg, int width) {
  Grid& g = grid();
  Thread& t = *g.running;
  t.op = op;
  t.mask = mask;
  t.value = value;
  t.arg = arg;
  t.width = width;
  t.coll = nullptr;
  suspend(t, Wait::Warp);
  return t.result;
}

void warp_collective(const Collective& c, unsigned mask, void* lane_record) {
  Grid& g = grid();
  Thread& t = *g.running;
  t.op = WarpOp::Custom;
  t.mask = mask;
  t.width = 32;
  t.coll = &c;
  t.record = lane_record;
  suspend(t, Wait::Warp);
}

void sync_block() {
  Grid& g = grid();
  suspend(*g.running, Wait::Block);
}

void* static_shared(const void* tag, size_t bytes, size_t align, const char* name) {
  Grid& g = grid();
  for (const Grid::Static& s : g.statics)
    if (s.tag == tag) return g.arena + s.offset;
  const size_t off = (g.static_base + g.static_bytes + align - 1) / align * align;
  const size_t used = off + bytes - g.static_base;
  if (used > g.static_capacity())
    kernel_fail(std::string("__shared__ ") + name + " (" + std::to_string(bytes) +
                " bytes) takes the block's shared memory to " +
                std::to_string(used + g.shape->dynamic_smem) + " bytes (" +
                std::to_string(g.shape->dynamic_smem) + " dynamic), above its limit of " +
                std::to_string(g.shape->smem_limit));
  g.static_bytes = used;
  g.statics.push_back(Grid::Static{tag, off, bytes});
  return g.arena + off;
}

void* dynamic_shared(size_t align) {
  Grid& g = grid();
  if (align > 128) kernel_fail("dynamic shared memory of an alignment above 128");
  return g.arena;
}

// Window addresses are offsets in the arena: the dynamic part from 0, the
// static declarations after the red zone.
uint32_t shared_address(const void* p, const char* what) {
  Grid& g = grid();
  const auto a = reinterpret_cast<uintptr_t>(p), base = reinterpret_cast<uintptr_t>(g.arena);
  if (a >= base && a - base <= g.arena_bytes) {
    const size_t off = a - base;
    if (off <= g.shape->dynamic_smem) return uint32_t(off);
    for (const Grid::Static& s : g.statics)
      if (off >= s.offset && off <= s.offset + s.bytes) return uint32_t(off);
  }
  char b[32];
  std::snprintf(b, sizeof b, "%p", p);
  kernel_fail(std::string(what) + ": " + b + " is not in the block's shared memory");
}

void* shared_window(uint64_t addr, size_t bytes, const char* what) {
  Grid& g = grid();
  if (addr + bytes <= g.shape->dynamic_smem) return g.arena + addr;
  for (const Grid::Static& s : g.statics)
    if (addr >= s.offset && addr + bytes <= s.offset + s.bytes) return g.arena + addr;
  kernel_fail(std::string(what) + ": shared address " + std::to_string(addr) + " + " + std::to_string(bytes) +
              " bytes lies outside the block's shared memory (" + std::to_string(g.shape->dynamic_smem) +
              " bytes dynamic" + (g.statics.empty() ? "" : ", and its __shared__ declarations") + ")");
}

void kernel_fail(const std::string& what) { throw KernelError(what); }

}  // namespace detail
}  // namespace emu
