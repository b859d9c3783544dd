// One writer per directory: an advisory flock(2) held for as long as the
// DirLock lives (moe-train holds one on log.out_dir and one on
// checkpoint.dir for its whole run). The kernel drops the lock when the
// holder dies, however it dies, so a lock left by a killed process (a Slurm
// requeue, the OOM killer) never blocks the next run.
//
// The lock of directory D is the file D/.moe.lock (kDirLockName), inside D,
// so it needs no more than D itself does (a mounted /ckpt whose parent is
// read-only works). A fresh run that moves an earlier checkpoint.dir aside
// must leave that file where it is (keep_aside's `stays`), or a second run
// would lock a new file of the same name. The file holds the holder's host,
// PID and start time, for the refusal's message; it is never removed
// (removing it would let two runs lock two different files).
#pragma once

#include <string>
#include <utility>
#include <vector>

namespace moe {

// The name of the lock file inside a locked directory.
inline constexpr const char* kDirLockName = ".moe.lock";

class DirLock {
 public:
  // Locks `dir` for `program`, after check_output_dir (core/path_check.h)
  // created it if needed and tried that files can be made in it: a bad path
  // throws that check's typed error, naming `key`.
  // Held elsewhere: InputError "DIR is in use by another PROGRAM (host H,
  // pid P, since T); wait for it or use another KEY", key naming the
  // setting that chose dir (e.g. "log.out_dir").
  DirLock(const std::string& dir, const std::string& key, const std::string& program);
  ~DirLock();
  DirLock(DirLock&& o) noexcept : fd_(std::exchange(o.fd_, -1)), path_(std::move(o.path_)) {}
  DirLock(const DirLock&) = delete;
  DirLock& operator=(const DirLock&) = delete;
  DirLock& operator=(DirLock&&) = delete;

  const std::string& path() const { return path_; }  // the lock file

 private:
  int fd_ = -1;
  std::string path_;
};

// The lock file of directory `dir` (absolute, symlinks resolved).
std::string dir_lock_path(const std::string& dir);

// Locks each directory of (dir, key) once, in one order (by lock file), so
// two runs that share several directories cannot each take one and both be
// refused. Empty dirs are skipped; a dir named twice (or by two keys) is
// locked once.
std::vector<DirLock> lock_dirs(const std::vector<std::pair<std::string, std::string>>& dirs_and_keys,
                               const std::string& program);

}  // namespace moe
