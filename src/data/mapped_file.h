// A file mapped read-only for a whole run (token shards, token files), and
// what happens when it changes on disk under the run (docs/reliability.md):
//  - size and header are checked when it is opened (by the callers);
//  - check_unchanged(), called before every read, compares the file at its
//    path with what was mapped (inode, size, modification time) and throws a
//    DataError naming the file when the same file was truncated, grown or
//    rewritten;
//  - a read that faults all the same (truncated between that check and the
//    read) raises SIGBUS: a handler installed with the first mapping writes
//    one line naming the file and exits with code 2, instead of a silent
//    "Bus error".
// A file replaced by a rename (a new inode at the path) is not a change: the
// run goes on reading the file it mapped, which stays valid while mapped.
#pragma once

#include <sys/types.h>

#include <cstddef>
#include <ctime>
#include <string>

namespace moe {

class MappedFile {
 public:
  // Maps the whole file; an empty file maps nothing (data() null). Throws
  // DataError naming `path` (`what` says what it is, e.g. "shard").
  MappedFile(const std::string& path, const std::string& what);
  ~MappedFile();
  MappedFile(MappedFile&& o) noexcept;
  MappedFile& operator=(MappedFile&& o) noexcept;
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;

  const unsigned char* data() const { return map_; }
  size_t size() const { return bytes_; }
  const std::string& path() const { return path_; }
  // Throws DataError when the mapped file changed on disk since it was mapped.
  void check_unchanged() const;

 private:
  void release();
  std::string path_, what_;
  const unsigned char* map_ = nullptr;
  size_t bytes_ = 0;
  ino_t inode_ = 0;
  dev_t device_ = 0;
  timespec mtime_{};
  int slot_ = -1;  // in the SIGBUS handler's table of mappings
};

}  // namespace moe
