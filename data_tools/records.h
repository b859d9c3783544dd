// Documents and sentences of a corpus, read in input order.
//  - text files: a document is a paragraph (lines up to a blank line, joined
//    with '\n', a trailing '\r' dropped from each line) or the whole file;
//  - JSONL files: a document is the string field `text_field` of the object
//    on one line (blank lines are skipped).
// The reader hands out JSONL lines unparsed, so that parsing can run on the
// worker threads; jsonl_text() does it.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "data_tools/inputs.h"

namespace moe::data {

struct RawRecord {
  std::string_view text;  // valid until the next call of next()
  uint32_t file = 0;      // index into the inputs
  uint64_t line = 0;      // 1-based line where the record starts
  bool json = false;      // a JSONL line: the document is one field of it
};

class RecordReader {
 public:
  RecordReader(const std::vector<InputFile>& files, bool whole_file_docs);
  ~RecordReader();
  bool next(RawRecord* r);
  uint64_t disk_bytes() const;  // bytes of the input files consumed so far

 private:
  bool open_next_file();
  const std::vector<InputFile>& files_;
  bool whole_file_;
  size_t file_ = 0;  // index of the next file to open
  uint64_t done_bytes_ = 0;
  std::unique_ptr<LineReader> lines_;
  std::unique_ptr<ByteReader> whole_;
  std::string paragraph_;
};

// The string field `field` of the JSON object in `line`. False when the line
// is not JSON, not an object or lacks a string field; `why` says which.
bool jsonl_text(std::string_view line, const std::string& field, std::string* text,
                std::string* why);

// "FILE:LINE: WHY (use --skip-bad-lines to skip such lines)".
std::string bad_line_message(const std::string& file, uint64_t line, const std::string& why);

// Non-empty lines of every document, for tokenizer training. JSONL documents
// are parsed here; a bad line throws DataError unless skip_bad_lines.
class SentenceReader {
 public:
  SentenceReader(const std::vector<InputFile>& files, const std::string& text_field,
                 bool skip_bad_lines);
  bool next(std::string* sentence);
  uint64_t disk_bytes() const { return records_.disk_bytes(); }
  uint64_t bad_lines() const { return bad_lines_; }
  const std::string& first_bad_line() const { return first_bad_; }

 private:
  const std::vector<InputFile>& files_;
  RecordReader records_;
  std::string field_;
  bool skip_bad_;
  std::string doc_;  // the current JSONL document, handed out line by line
  size_t doc_pos_ = std::string::npos;
  uint64_t bad_lines_ = 0;
  std::string first_bad_;
};

}  // namespace moe::data
