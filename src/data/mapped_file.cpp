#include "data/mapped_file.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <mutex>
#include <utility>

#include "core/error.h"

namespace moe {

namespace {

// Mapped ranges for the SIGBUS handler. A slot is published by setting
// `begin` last and freed by clearing it, so the handler (which may run at any
// moment) never reads a half-written one. Mappings beyond the table still
// work; a fault in one of them just dies without the message.
struct Slot {
  std::atomic<uintptr_t> begin{0};
  uintptr_t end = 0;
  char path[480] = {};
};
constexpr int kSlots = 1024;
Slot g_slots[kSlots];
struct sigaction g_previous;

void write_str(const char* s) {
  size_t n = std::strlen(s);
  while (n > 0) {
    const ssize_t w = ::write(STDERR_FILENO, s, n);
    if (w <= 0) return;
    s += w;
    n -= size_t(w);
  }
}

void on_sigbus(int sig, siginfo_t* info, void* context) {
  const uintptr_t at = reinterpret_cast<uintptr_t>(info->si_addr);
  for (const Slot& s : g_slots) {
    const uintptr_t b = s.begin.load(std::memory_order_acquire);
    if (b == 0 || at < b || at >= s.end) continue;
    write_str(program_invocation_short_name);
    write_str(": error: ");
    write_str(s.path);
    write_str(": truncated on disk while this run reads it (SIGBUS): a data file must not "
              "change during a run; restore it, then resume from the last checkpoint\n");
    _exit(2);
  }
  // Not one of ours: what was there before decides.
  sigaction(SIGBUS, &g_previous, nullptr);
  if (!(g_previous.sa_flags & SA_SIGINFO) && g_previous.sa_handler != SIG_DFL &&
      g_previous.sa_handler != SIG_IGN)
    g_previous.sa_handler(sig);
  else if ((g_previous.sa_flags & SA_SIGINFO) && g_previous.sa_sigaction)
    g_previous.sa_sigaction(sig, info, context);
  // SIG_DFL: returning re-runs the faulting access, which now ends the process.
}

int register_mapping(const void* begin, size_t bytes, const std::string& path) {
  static std::once_flag once;
  std::call_once(once, [] {
    struct sigaction sa {};
    sa.sa_sigaction = on_sigbus;
    sa.sa_flags = SA_SIGINFO;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGBUS, &sa, &g_previous);
  });
  static std::mutex m;  // registrations race only with each other
  std::lock_guard<std::mutex> lock(m);
  for (int i = 0; i < kSlots; ++i) {
    Slot& s = g_slots[i];
    if (s.begin.load(std::memory_order_relaxed) != 0) continue;
    s.end = reinterpret_cast<uintptr_t>(begin) + bytes;
    std::strncpy(s.path, path.c_str(), sizeof(s.path) - 1);
    s.begin.store(reinterpret_cast<uintptr_t>(begin), std::memory_order_release);
    return i;
  }
  return -1;
}

}  // namespace

MappedFile::MappedFile(const std::string& path, const std::string& what)
    : path_(path), what_(what) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) throw DataError(path + ": cannot open " + what + ": " + std::strerror(errno));
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    const int err = errno;
    ::close(fd);
    throw DataError(path + ": cannot stat " + what + ": " + std::strerror(err));
  }
  bytes_ = size_t(st.st_size);
  inode_ = st.st_ino;
  device_ = st.st_dev;
  mtime_ = st.st_mtim;
  if (bytes_ > 0) {  // mmap of 0 bytes fails; the callers' size checks report it
    void* m = ::mmap(nullptr, bytes_, PROT_READ, MAP_PRIVATE, fd, 0);
    if (m == MAP_FAILED) {
      const int err = errno;
      ::close(fd);
      throw DataError(path + ": mmap failed: " + std::strerror(err));
    }
    map_ = static_cast<const unsigned char*>(m);
    slot_ = register_mapping(map_, bytes_, path_);
  }
  ::close(fd);
}

MappedFile::~MappedFile() { release(); }

MappedFile::MappedFile(MappedFile&& o) noexcept
    : path_(std::move(o.path_)), what_(std::move(o.what_)), map_(std::exchange(o.map_, nullptr)),
      bytes_(std::exchange(o.bytes_, 0)), inode_(o.inode_), device_(o.device_), mtime_(o.mtime_),
      slot_(std::exchange(o.slot_, -1)) {}

MappedFile& MappedFile::operator=(MappedFile&& o) noexcept {
  if (this != &o) {
    release();
    path_ = std::move(o.path_);
    what_ = std::move(o.what_);
    map_ = std::exchange(o.map_, nullptr);
    bytes_ = std::exchange(o.bytes_, 0);
    inode_ = o.inode_;
    device_ = o.device_;
    mtime_ = o.mtime_;
    slot_ = std::exchange(o.slot_, -1);
  }
  return *this;
}

void MappedFile::release() {
  if (slot_ >= 0) g_slots[slot_].begin.store(0, std::memory_order_release);
  slot_ = -1;
  if (map_) ::munmap(const_cast<unsigned char*>(map_), bytes_);
  map_ = nullptr;
}

void MappedFile::check_unchanged() const {
  struct stat st {};
  if (::stat(path_.c_str(), &st) != 0) return;  // removed: the mapping stays valid
  if (st.st_ino != inode_ || st.st_dev != device_) return;  // replaced by a rename: ditto
  if (size_t(st.st_size) == bytes_ && st.st_mtim.tv_sec == mtime_.tv_sec &&
      st.st_mtim.tv_nsec == mtime_.tv_nsec)
    return;
  throw DataError(path_ + ": " + what_ + " changed on disk while this run reads it (" +
                  std::to_string(bytes_) + " bytes when opened, now " +
                  std::to_string(st.st_size) + (size_t(st.st_size) == bytes_ ? ", rewritten" : "") +
                  "): a data file must not change during a run; restore it, then resume from "
                  "the last checkpoint");
}

}  // namespace moe
