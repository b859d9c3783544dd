#include "core/path_check.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "core/error.h"

namespace moe {

namespace fs = std::filesystem;

namespace {

std::string prefixed(const std::string& setting, const std::string& path) {
  return setting.empty() ? path : setting + ": " + path;
}

// Creates and removes a file in `dir`: what the writer will do first.
void probe_writable(const std::string& dir, const std::string& setting) {
  const std::string probe =
      (fs::path(dir) / (".moe-write-probe." + std::to_string(::getpid()))).string();
  const int fd = ::open(probe.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  if (fd < 0) throw_path_error(prefixed(setting, dir), "cannot create files in it", errno);
  ::close(fd);
  ::unlink(probe.c_str());
}

}  // namespace

bool is_disk_failure(int err) { return err == ENOSPC || err == EIO || err == EDQUOT; }

void throw_path_error(const std::string& path, const std::string& what, int err) {
  const std::string msg = path + ": " + what + ": " + std::strerror(err);
  if (is_disk_failure(err)) throw IoError(msg);
  throw InputError(msg);
}

void check_output_dir(const std::string& dir, const std::string& setting) {
  std::error_code ec;
  if (fs::exists(dir, ec) && !fs::is_directory(dir, ec))
    throw InputError(prefixed(setting, dir) + ": exists and is not a directory");
  fs::create_directories(dir, ec);
  if (ec) throw_path_error(prefixed(setting, dir), "cannot create", ec.value());
  probe_writable(dir, setting);
}

void check_output_file(const std::string& file, const std::string& setting) {
  std::error_code ec;
  if (fs::is_directory(file, ec))
    throw_path_error(prefixed(setting, file), "cannot write", EISDIR);
  // Written beside it and renamed over it: its directory is what must take
  // new files, whether the file exists or not.
  const fs::path parent = fs::path(file).parent_path();
  const std::string dir = parent.empty() ? "." : parent.string();
  if (!fs::is_directory(dir, ec))
    throw_path_error(prefixed(setting, file), "cannot write",
                     ec ? ec.value() : fs::exists(dir, ec) ? ENOTDIR : ENOENT);
  probe_writable(dir, setting);
}

void check_new_output_dir(const std::string& dir, const std::string& setting) {
  std::error_code ec;
  if (fs::exists(dir, ec) && !(fs::is_directory(dir, ec) && fs::is_empty(dir, ec)))
    throw InputError(prefixed(setting, dir) + ": exists and is not an empty directory");
  // Missing parents are created by the writer (mkdir -p): the nearest one
  // that exists must be a directory that takes new entries.
  fs::path p = fs::absolute(fs::path(dir), ec).lexically_normal();
  if (p.filename().empty()) p = p.parent_path();  // "hf/" is "hf"
  fs::path ancestor = p.parent_path();
  while (!fs::exists(ancestor, ec) && ancestor.has_relative_path())
    ancestor = ancestor.parent_path();
  if (!fs::is_directory(ancestor, ec))
    throw_path_error(prefixed(setting, dir), "cannot create", ec ? ec.value() : ENOTDIR);
  probe_writable(ancestor.string(), setting);
}

std::string describe(const fs::filesystem_error& e) {
  // libstdc++: "filesystem error: cannot remove: Not a directory [a/file/x.tmp]".
  std::string what = e.what();
  const std::string prefix = "filesystem error: ";
  if (what.rfind(prefix, 0) == 0) what.erase(0, prefix.size());
  if (const size_t bracket = what.find(" ["); bracket != std::string::npos) what.erase(bracket);
  return e.path1().empty() ? what : e.path1().string() + ": " + what;
}

}  // namespace moe
