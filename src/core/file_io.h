// The file operations behind everything a run must not lose: checkpoints,
// moe-data's shards and summary, moe-export's directory. Each open, write,
// fsync, close, mkdir and rename goes through here, so that one seam can make
// the N-th of them fail as a full or failing disk would (ENOSPC, EIO), and
// the failure tests can walk every failure point in turn
// (docs/reliability.md). A failure is an IoError naming the file and the
// system's reason, e.g. "ck/.step_00000004.tmp/model.safetensors: write
// failed: No space left on device".
//
// The fault: MOE_FAULT_INJECTION=io.fail_op=N[:EIO] (core/fault.h; ENOSPC
// unless EIO) fails the N-th operation of the process, counted from its start;
// tests in the process use arm_io_fault().
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

namespace moe::io {

// A file being written: created (or truncated) by the constructor, complete
// only after close(). The destructor closes an unfinished file silently.
class FileWriter {
 public:
  explicit FileWriter(const std::string& path);
  ~FileWriter();
  FileWriter(const FileWriter&) = delete;
  FileWriter& operator=(const FileWriter&) = delete;

  void write(const void* data, size_t bytes);
  void write_at(uint64_t offset, const void* data, size_t bytes);  // pwrite
  // fsync, then close: the data is on disk when this returns.
  void sync_and_close();
  const std::string& path() const { return path_; }

 private:
  std::string path_;
  int fd_ = -1;
};

// `text` as the whole of `path`, fsynced (for files inside a directory that
// is itself renamed into place when complete).
void write_file(const std::string& path, const std::string& text);
// `text` into `path` through `path`.tmp, fsynced and renamed: `path` either
// keeps its old content or holds all of `text`. The directory is not synced.
void write_file_atomically(const std::string& path, const std::string& text);
// fsync of a directory, after renames in it.
void sync_dir(const std::string& dir);
// mkdir -p.
void make_dirs(const std::string& dir);
// rename(2): `to` is replaced atomically.
void rename_path(const std::string& from, const std::string& to);
// Best-effort cleanup after a failure (never counted, never fails).
void remove_quietly(const std::string& path);

// Test seam: the nth operation from now (1-based) fails with errno `error`;
// nth 0 disarms. operations() counts the operations since the last arm.
void arm_io_fault(int64_t nth, int error);
int64_t io_operations();

}  // namespace moe::io
