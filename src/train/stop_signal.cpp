#include "train/stop_signal.h"

#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <csignal>
#include <cstdint>

namespace moe {

namespace {

volatile std::sig_atomic_t g_stop_signal = 0;
// Read by the handler: set before it is installed, or lock-free atomics.
const char* g_program = "moe-train";
int g_rank = -1;
bool g_checkpoints = true;
std::atomic<int64_t> g_step{0};
static_assert(std::atomic<int64_t>::is_always_lock_free, "read from a signal handler");

// Async-signal-safe text building: no allocation, no locale, no stdio.
struct Line {
  char buf[256];
  size_t n = 0;
  void add(const char* s) {
    while (*s && n < sizeof buf) buf[n++] = *s++;
  }
  void add(int64_t v) {
    char digits[24];
    size_t k = 0;
    const bool neg = v < 0;
    uint64_t u = neg ? uint64_t(0) - uint64_t(v) : uint64_t(v);
    do {
      digits[k++] = char('0' + u % 10);
      u /= 10;
    } while (u > 0);
    if (neg && n < sizeof buf) buf[n++] = '-';
    while (k > 0 && n < sizeof buf) buf[n++] = digits[--k];
  }
};

const char* signal_name(int sig) {
  switch (sig) {
    case SIGINT: return "SIGINT";
    case SIGTERM: return "SIGTERM";
    case SIGUSR1: return "SIGUSR1";
    default: return "signal";
  }
}

void say(const Line& l) {
  const ssize_t ignored = ::write(STDERR_FILENO, l.buf, l.n);
  (void)ignored;
}

void on_stop_signal(int sig) {
  if (g_stop_signal != 0) {
    // Second signal: the user means it. Only async-signal-safe calls here.
    constexpr char msg[] = "\nsecond stop signal: exiting now without a checkpoint\n";
    const ssize_t ignored = ::write(STDERR_FILENO, msg, sizeof(msg) - 1);
    (void)ignored;
    ::_exit(128 + sig);
  }
  g_stop_signal = sig;
  // The acknowledgement: saving a large model takes a while, and a user who
  // hears nothing presses Ctrl-C again and loses the checkpoint.
  const int saved_errno = errno;
  Line l;
  l.add(g_program);
  l.add(": ");
  if (g_rank >= 0) {
    l.add("rank ");
    l.add(int64_t(g_rank));
    l.add(": ");
  }
  l.add("stop requested (");
  l.add(signal_name(sig));
  l.add("): finishing step ");
  l.add(g_step.load(std::memory_order_relaxed));
  l.add(g_checkpoints ? ", then checkpoint; send again to exit without one\n"
                      : ", then exit (no checkpoint.dir: nothing saved)\n");
  say(l);
  errno = saved_errno;
}

}  // namespace

void set_stop_context(const char* program, int rank, bool checkpoints) {
  g_program = program;
  g_rank = rank;
  g_checkpoints = checkpoints;
}

void set_stop_step(int64_t step) { g_step.store(step, std::memory_order_relaxed); }

void install_stop_signal_handlers() {
  struct sigaction sa {};
  sa.sa_handler = on_stop_signal;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = SA_RESTART;
  sigaction(SIGINT, &sa, nullptr);
  sigaction(SIGTERM, &sa, nullptr);
  sigaction(SIGUSR1, &sa, nullptr);  // mpirun forwards USR1 to the ranks; TERM it turns into a kill
}

bool stop_requested() { return g_stop_signal != 0; }
int stop_signal() { return g_stop_signal; }

}  // namespace moe
