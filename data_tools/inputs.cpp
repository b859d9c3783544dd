#include "data_tools/inputs.h"

#include <fcntl.h>
#include <glob.h>
#include <unistd.h>
#include <zlib.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstring>
#include <filesystem>
#include <set>

#include "core/error.h"

namespace moe::data {

namespace fs = std::filesystem;

namespace {

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() &&
         s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

std::string errno_text(int err) { return std::strerror(err); }

// Fails early (before hours of work) on a file that cannot be opened.
InputFile checked_file(const std::string& path) {
  InputFile f = classify_input(path);
  const int fd = ::open(path.c_str(), O_RDONLY);
  if (fd < 0) throw DataError(path + ": cannot open: " + errno_text(errno));
  ::close(fd);
  std::error_code ec;
  const auto size = fs::file_size(path, ec);
  f.bytes = ec ? 0 : uint64_t(size);
  return f;
}

std::vector<std::string> walk_directory(const std::string& dir) {
  std::vector<std::string> found;
  std::error_code ec;
  // Links to directories below `dir` are not followed (no cycles); links to files are.
  fs::recursive_directory_iterator it(dir, ec), end;
  if (ec) throw DataError(dir + ": cannot read directory: " + ec.message());
  for (; it != end; it.increment(ec)) {
    if (ec) throw DataError(dir + ": cannot read directory: " + ec.message());
    const std::string name = it->path().filename().string();
    if (!name.empty() && name[0] == '.') {  // .git, editor backups and the like
      if (it->is_directory(ec)) it.disable_recursion_pending();
      continue;
    }
    if (it->is_regular_file(ec) && is_corpus_name(name)) found.push_back(it->path().string());
  }
  if (ec) throw DataError(dir + ": cannot read directory: " + ec.message());
  if (found.empty())
    throw DataError(dir + ": directory holds no .txt, .jsonl, .txt.gz or .jsonl.gz file");
  std::sort(found.begin(), found.end());
  return found;
}

std::vector<std::string> glob_matches(const std::string& pattern) {
  glob_t g{};
  const int rc = ::glob(pattern.c_str(), 0, nullptr, &g);
  std::vector<std::string> out;
  if (rc == 0)
    for (size_t i = 0; i < g.gl_pathc; ++i) out.emplace_back(g.gl_pathv[i]);  // sorted by glob
  ::globfree(&g);
  if (rc == GLOB_NOMATCH || (rc == 0 && out.empty()))
    throw DataError(pattern + ": matches no file");
  if (rc != 0) throw DataError(pattern + ": cannot expand the pattern");
  return out;
}

class PlainReader : public ByteReader {
 public:
  explicit PlainReader(const std::string& path) : path_(path) {
    fd_ = ::open(path.c_str(), O_RDONLY);
    if (fd_ < 0) throw DataError(path + ": cannot open: " + errno_text(errno));
    ::posix_fadvise(fd_, 0, 0, POSIX_FADV_SEQUENTIAL);
  }
  ~PlainReader() override { ::close(fd_); }
  size_t read(char* buf, size_t n) override {
    for (;;) {
      const ssize_t r = ::read(fd_, buf, n);
      if (r >= 0) {
        offset_ += uint64_t(r);
        return size_t(r);
      }
      if (errno != EINTR) throw DataError(path_ + ": read failed: " + errno_text(errno));
    }
  }
  uint64_t disk_offset() const override { return offset_; }

 private:
  std::string path_;
  int fd_ = -1;
  uint64_t offset_ = 0;
};

class GzipReader : public ByteReader {
 public:
  explicit GzipReader(const std::string& path) : path_(path) {
    // zlib reads non-gzip data transparently; a .gz file must really be gzip.
    unsigned char magic[2] = {0, 0};
    const int fd = ::open(path.c_str(), O_RDONLY);
    if (fd < 0) throw DataError(path + ": cannot open: " + errno_text(errno));
    const ssize_t got = ::read(fd, magic, 2);
    ::close(fd);
    if (got != 2 || magic[0] != 0x1f || magic[1] != 0x8b)
      throw DataError(path + ": corrupt gzip data (not a gzip file)");
    gz_ = gzopen(path.c_str(), "rb");
    if (!gz_) throw DataError(path + ": cannot open: " + errno_text(errno));
    gzbuffer(gz_, 1 << 18);
  }
  ~GzipReader() override { gzclose_r(gz_); }
  size_t read(char* buf, size_t n) override {
    const int r = gzread(gz_, buf, unsigned(std::min<size_t>(n, INT_MAX)));
    int err = Z_OK;
    const char* msg = gzerror(gz_, &err);
    if (r < 0 || (err != Z_OK && err != Z_BUF_ERROR))
      throw DataError(path_ + ": corrupt gzip data: " +
                      (err == Z_ERRNO ? errno_text(errno) : std::string(msg)));
    // zlib reports a stream cut short as Z_BUF_ERROR at the end of the input.
    if (r == 0 && err == Z_BUF_ERROR)
      throw DataError(path_ + ": corrupt gzip data: truncated (unexpected end of file)");
    return size_t(r);
  }
  uint64_t disk_offset() const override {
    const auto off = gzoffset(gz_);
    return off < 0 ? 0 : uint64_t(off);
  }

 private:
  std::string path_;
  gzFile gz_ = nullptr;
};

}  // namespace

bool is_corpus_name(const std::string& name) {
  for (const char* ext : {".txt", ".jsonl", ".txt.gz", ".jsonl.gz"})
    if (ends_with(name, ext) && name.size() > std::strlen(ext)) return true;
  return false;
}

InputFile classify_input(const std::string& path) {
  InputFile f;
  f.path = path;
  f.gzip = ends_with(path, ".gz");
  const std::string inner = f.gzip ? path.substr(0, path.size() - 3) : path;
  f.format = ends_with(inner, ".jsonl") ? Format::Jsonl : Format::Text;
  return f;
}

std::vector<InputFile> expand_inputs(const std::vector<std::string>& paths) {
  std::vector<InputFile> out;
  std::set<std::string> seen;
  auto add = [&](const std::string& p) {
    std::error_code ec;
    const std::string key = fs::weakly_canonical(p, ec).string();
    if (!seen.insert(ec ? p : key).second) return;
    out.push_back(checked_file(p));
  };
  auto add_path = [&](const std::string& p) {
    std::error_code ec;
    if (fs::is_directory(p, ec)) {
      for (const auto& f : walk_directory(p)) add(f);
    } else {
      add(p);
    }
  };
  for (const auto& p : paths) {
    if (p.empty()) throw DataError("an input path is empty");
    std::error_code ec;
    if (fs::exists(p, ec)) {
      add_path(p);
    } else if (p.find_first_of("*?[") != std::string::npos) {
      for (const auto& m : glob_matches(p)) add_path(m);
    } else {
      throw DataError(p + ": no such file or directory");
    }
  }
  return out;
}

std::unique_ptr<ByteReader> ByteReader::open(const InputFile& f) {
  if (f.gzip) return std::make_unique<GzipReader>(f.path);
  return std::make_unique<PlainReader>(f.path);
}

namespace {
constexpr size_t kLineBuffer = 1 << 20;
}

LineReader::LineReader(std::unique_ptr<ByteReader> in)
    : in_(std::move(in)), buf_(kLineBuffer, '\0') {}

bool LineReader::next(std::string_view* line) {
  size_t scan = begin_;  // bytes before `scan` hold no '\n'
  for (;;) {
    if (scan < end_) {
      const void* nl = std::memchr(buf_.data() + scan, '\n', end_ - scan);
      if (nl) {
        const size_t at = size_t(static_cast<const char*>(nl) - buf_.data());
        *line = std::string_view(buf_.data() + begin_, at - begin_);
        begin_ = at + 1;
        ++line_;
        return true;
      }
      scan = end_;
    }
    if (eof_) {
      if (begin_ == end_) return false;
      *line = std::string_view(buf_.data() + begin_, end_ - begin_);
      begin_ = end_;
      ++line_;
      return true;
    }
    // Move the partial line to the front; grow only for a line longer than
    // the buffer, and give that memory back once such lines are gone.
    const size_t pending = end_ - begin_;
    if (begin_ > 0) {
      std::memmove(buf_.data(), buf_.data() + begin_, pending);
      scan -= begin_;
      begin_ = 0;
      end_ = pending;
    }
    if (buf_.size() > 4 * kLineBuffer && pending < kLineBuffer) {
      buf_.resize(kLineBuffer);
      buf_.shrink_to_fit();
    }
    if (end_ == buf_.size()) buf_.resize(buf_.size() * 2);
    const size_t got = in_->read(buf_.data() + end_, buf_.size() - end_);
    if (got == 0) eof_ = true;
    end_ += got;
  }
}

std::string read_all(ByteReader& in) {
  std::string s(kLineBuffer, '\0');
  size_t n = 0;
  for (;;) {
    if (n == s.size()) s.resize(s.size() * 2);
    const size_t got = in.read(s.data() + n, s.size() - n);
    if (got == 0) break;
    n += got;
  }
  s.resize(n);
  return s;
}

}  // namespace moe::data
