#include "core/dir_lock.h"

#include <spdlog/spdlog.h>

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <thread>

#include "core/error.h"
#include "core/path_check.h"

namespace moe {

namespace fs = std::filesystem;

namespace {

std::string now_iso8601() {
  const std::time_t t = std::time(nullptr);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

std::string holder_line() {
  char host[256] = "?";
  gethostname(host, sizeof host - 1);
  host[sizeof host - 1] = '\0';
  return "host " + std::string(host) + ", pid " + std::to_string(getpid()) + ", since " +
         now_iso8601();
}

// The holder's line. It writes it just after taking the lock: a refusal in
// between waits a moment for it rather than naming nobody.
std::string read_holder(int fd) {
  for (int tries = 0; tries < 100; ++tries) {
    char buf[512];
    const ssize_t n = pread(fd, buf, sizeof buf - 1, 0);
    if (n > 0) {
      std::string s(buf, size_t(n));
      s.erase(std::find(s.begin(), s.end(), '\n'), s.end());
      if (!s.empty()) return s;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return "holder not recorded";
}

}  // namespace

std::string dir_lock_path(const std::string& dir) {
  std::error_code ec;
  fs::path p = fs::weakly_canonical(fs::absolute(dir), ec);
  if (ec) p = fs::absolute(dir).lexically_normal();
  return (p / kDirLockName).string();
}

DirLock::DirLock(const std::string& dir, const std::string& key, const std::string& program) {
  // Created and tried first: a path that cannot hold a run (a file, below a
  // file, read-only) is one line now, not a failed save after hours.
  check_output_dir(dir, key);
  path_ = dir_lock_path(dir);  // after creating it: a symlink in dir resolves
  // 0666 under the umask: in a group-writable directory the next user can
  // take a lock the last one left. Another user's file that is not writable
  // still locks read-only (flock needs no write access); only the holder
  // line is then not recorded.
  fd_ = ::open(path_.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0666);
  bool read_only = false;
  if (fd_ < 0 && errno == EACCES) {
    fd_ = ::open(path_.c_str(), O_RDONLY | O_CLOEXEC);
    read_only = fd_ >= 0;
    if (fd_ < 0) errno = EACCES;
  }
  if (fd_ < 0) throw_path_error(key + ": " + path_, "cannot create the lock file", errno);
  if (::flock(fd_, LOCK_EX | LOCK_NB) != 0) {
    const int err = errno;
    if (err == EWOULDBLOCK) {
      const std::string holder = read_holder(fd_);
      ::close(fd_);
      fd_ = -1;
      throw InputError(dir + " is in use by another " + program + " (" + holder +
                       "); wait for it or use another " + key);
    }
    // A filesystem without flock (Lustre mounted without -o flock: ENOSYS)
    // must not stop training; it only loses the guard.
    spdlog::warn("{}: cannot lock {} ({}): a second {} there would not be noticed", key, path_,
                 std::strerror(err), program);
    return;
  }
  if (read_only) return;
  const std::string line = holder_line() + "\n";
  if (::ftruncate(fd_, 0) != 0 || ::pwrite(fd_, line.data(), line.size(), 0) != ssize_t(line.size()))
    spdlog::warn("{}: cannot record this run in {}: {}", key, path_, std::strerror(errno));
}

DirLock::~DirLock() {
  if (fd_ >= 0) ::close(fd_);  // drops the lock; the file stays (see the header)
}

std::vector<DirLock> lock_dirs(const std::vector<std::pair<std::string, std::string>>& dirs_and_keys,
                               const std::string& program) {
  std::vector<std::pair<std::string, size_t>> order;  // lock file, index in dirs_and_keys
  for (size_t i = 0; i < dirs_and_keys.size(); ++i) {
    if (dirs_and_keys[i].first.empty()) continue;
    const std::string p = dir_lock_path(dirs_and_keys[i].first);
    if (std::none_of(order.begin(), order.end(), [&](const auto& o) { return o.first == p; }))
      order.emplace_back(p, i);
  }
  std::sort(order.begin(), order.end());
  std::vector<DirLock> locks;
  locks.reserve(order.size());
  for (const auto& [p, i] : order)
    locks.emplace_back(dirs_and_keys[i].first, dirs_and_keys[i].second, program);
  return locks;
}

}  // namespace moe
