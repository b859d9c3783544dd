// Corpus inputs: which files a list of paths, directories and globs names,
// and streaming readers for them (plain or gzip), so that any corpus size
// is read with a fixed amount of memory.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace moe::data {

enum class Format { Text, Jsonl };

struct InputFile {
  std::string path;
  uint64_t bytes = 0;  // size on disk (compressed size for .gz)
  bool gzip = false;
  Format format = Format::Text;
};

// Format from the name: *.jsonl[.gz] is JSONL, anything else text; *.gz is gzip.
InputFile classify_input(const std::string& path);
// True for the names a directory walk picks up: .txt, .jsonl, .txt.gz, .jsonl.gz.
bool is_corpus_name(const std::string& name);

// Expands paths in the order given: a file as is, a directory recursively
// (corpus names only, hidden entries skipped, sorted), a glob pattern to its
// sorted matches. Duplicates are dropped. Throws DataError naming the path
// when it does not exist, matches nothing, holds no corpus file, or a file
// cannot be opened for reading.
std::vector<InputFile> expand_inputs(const std::vector<std::string>& paths);

// Raw bytes of one input, decompressed when gzip. Throws DataError naming
// the file on a read error or corrupt/truncated gzip data.
class ByteReader {
 public:
  virtual ~ByteReader() = default;
  virtual size_t read(char* buf, size_t n) = 0;  // 0 at the end
  virtual uint64_t disk_offset() const = 0;      // bytes of the file consumed so far
  static std::unique_ptr<ByteReader> open(const InputFile& f);
};

// Lines of a ByteReader without their '\n' (any length; a final line without
// '\n' counts). The view stays valid until the next call.
class LineReader {
 public:
  explicit LineReader(std::unique_ptr<ByteReader> in);
  bool next(std::string_view* line);
  uint64_t line_number() const { return line_; }  // 1-based number of the last line
  uint64_t disk_offset() const { return in_->disk_offset(); }

 private:
  std::unique_ptr<ByteReader> in_;
  std::string buf_;
  size_t begin_ = 0, end_ = 0;
  bool eof_ = false;
  uint64_t line_ = 0;
};

// A whole input, decompressed.
std::string read_all(ByteReader& in);

}  // namespace moe::data
