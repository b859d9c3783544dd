#include "core/file_io.h"

#include <fcntl.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <mutex>

#include "core/error.h"
#include "core/fault.h"

namespace moe::io {

namespace fs = std::filesystem;

namespace {

std::atomic<int64_t> g_ops{0};
std::atomic<int64_t> g_fail_at{0};  // 0: nothing armed
std::atomic<int> g_fail_errno{ENOSPC};

// MOE_FAULT_INJECTION=io.fail_op=N[:EIO], read once at the first operation.
void arm_from_environment() {
  static std::once_flag once;
  std::call_once(once, [] {
    const auto spec = injected_fault("io.fail_op");
    if (!spec) return;
    const size_t colon = spec->find(':');
    const int64_t n = std::atoll(spec->substr(0, colon).c_str());
    const std::string err = colon == std::string::npos ? "ENOSPC" : spec->substr(colon + 1);
    if (n <= 0 || (err != "ENOSPC" && err != "EIO"))
      throw InternalError("MOE_FAULT_INJECTION: io.fail_op=" + *spec +
                          ": expected N[:ENOSPC|:EIO] with N >= 1");
    g_fail_errno = err == "EIO" ? EIO : ENOSPC;
    g_fail_at = n;
  });
}

// Counts one operation; true when it is the one armed to fail (errno is set).
bool injected_failure() {
  arm_from_environment();
  const int64_t n = ++g_ops;
  if (g_fail_at == 0 || n != g_fail_at) return false;
  errno = g_fail_errno;
  return true;
}

[[noreturn]] void fail(const std::string& path, const char* what, int err) {
  throw IoError(path + ": " + what + " failed: " + std::strerror(err));
}

}  // namespace

FileWriter::FileWriter(const std::string& path) : path_(path) {
  if (injected_failure()) fail(path_, "create", errno);
  fd_ = ::open(path_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd_ < 0) fail(path_, "create", errno);
}

FileWriter::~FileWriter() {
  if (fd_ >= 0) ::close(fd_);
}

void FileWriter::write(const void* data, size_t bytes) {
  // A full disk takes part of a write, then refuses the rest: so does the fault.
  const bool fault = injected_failure();
  const char* c = static_cast<const char*>(data);
  size_t left = fault ? bytes / 2 : bytes;
  while (left > 0) {
    const ssize_t w = ::write(fd_, c, left);
    if (w < 0 && errno == EINTR) continue;
    if (w < 0) fail(path_, "write", errno);
    c += w;
    left -= size_t(w);
  }
  if (fault) fail(path_, "write", g_fail_errno);
}

void FileWriter::write_at(uint64_t offset, const void* data, size_t bytes) {
  if (injected_failure()) fail(path_, "write", errno);
  const char* c = static_cast<const char*>(data);
  while (bytes > 0) {
    const ssize_t w = ::pwrite(fd_, c, bytes, off_t(offset));
    if (w < 0 && errno == EINTR) continue;
    if (w < 0) fail(path_, "write", errno);
    c += w;
    bytes -= size_t(w);
    offset += uint64_t(w);
  }
}

void FileWriter::sync_and_close() {
  if (injected_failure() || ::fsync(fd_) != 0) fail(path_, "fsync", errno);
  const int fd = fd_;
  fd_ = -1;
  // close() can report a delayed write error (NFS): it counts as one too.
  if (injected_failure()) {
    const int err = errno;
    ::close(fd);
    fail(path_, "close", err);
  }
  if (::close(fd) != 0) fail(path_, "close", errno);
}

void write_file(const std::string& path, const std::string& text) {
  FileWriter f(path);
  f.write(text.data(), text.size());
  f.sync_and_close();
}

void write_file_atomically(const std::string& path, const std::string& text) {
  const std::string tmp = path + ".tmp";
  try {
    write_file(tmp, text);
    rename_path(tmp, path);
  } catch (...) {
    remove_quietly(tmp);
    throw;
  }
}

void sync_dir(const std::string& dir) {
  if (injected_failure()) fail(dir, "fsync", errno);
  const int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) fail(dir, "open", errno);
  const int rc = ::fsync(fd);
  const int err = errno;
  ::close(fd);
  if (rc != 0) fail(dir, "fsync", err);
}

void make_dirs(const std::string& dir) {
  if (injected_failure()) fail(dir, "mkdir", errno);
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) throw IoError(dir + ": mkdir failed: " + ec.message());
}

void rename_path(const std::string& from, const std::string& to) {
  if (injected_failure() || ::rename(from.c_str(), to.c_str()) != 0)
    fail(to, "rename", errno);
}

void remove_quietly(const std::string& path) {
  std::error_code ec;
  fs::remove_all(path, ec);
}

void arm_io_fault(int64_t nth, int error) {
  arm_from_environment();
  g_ops = 0;
  g_fail_errno = error;
  g_fail_at = nth;
}

int64_t io_operations() { return g_ops; }

}  // namespace moe::io
