#include "data_tools/records.h"

#include <nlohmann/json.hpp>

#include "core/error.h"

namespace moe::data {

namespace {

bool is_blank(std::string_view s) {
  return s.find_first_not_of(" \t\r\f\v") == std::string_view::npos;
}

}  // namespace

RecordReader::RecordReader(const std::vector<InputFile>& files, bool whole_file_docs)
    : files_(files), whole_file_(whole_file_docs) {}

RecordReader::~RecordReader() = default;

uint64_t RecordReader::disk_bytes() const {
  uint64_t cur = 0;
  if (lines_) cur = lines_->disk_offset();
  if (whole_) cur = whole_->disk_offset();
  return done_bytes_ + cur;
}

bool RecordReader::open_next_file() {
  if (lines_ || whole_) done_bytes_ += files_[file_ - 1].bytes;
  lines_.reset();
  whole_.reset();
  if (file_ == files_.size()) return false;
  const InputFile& f = files_[file_++];
  if (whole_file_ && f.format == Format::Text)
    whole_ = ByteReader::open(f);
  else
    lines_ = std::make_unique<LineReader>(ByteReader::open(f));
  return true;
}

bool RecordReader::next(RawRecord* r) {
  for (;;) {
    if (!lines_ && !whole_ && !open_next_file()) return false;
    const uint32_t file = uint32_t(file_ - 1);
    if (whole_) {
      paragraph_ = read_all(*whole_);
      if (!open_next_file() && paragraph_.empty()) return false;
      if (paragraph_.empty()) continue;
      *r = RawRecord{paragraph_, file, 1, false};
      return true;
    }
    std::string_view line;
    if (files_[file].format == Format::Jsonl) {
      while (lines_->next(&line)) {
        if (is_blank(line)) continue;
        *r = RawRecord{line, file, lines_->line_number(), true};
        return true;
      }
      open_next_file();
      continue;
    }
    // Text: a paragraph ends at a blank line or at the end of the file.
    paragraph_.clear();
    uint64_t first = 0;
    bool more = false;
    while ((more = lines_->next(&line))) {
      if (is_blank(line)) {
        if (!paragraph_.empty()) break;
        continue;
      }
      if (line.back() == '\r') line.remove_suffix(1);
      if (paragraph_.empty()) {
        first = lines_->line_number();
      } else {
        paragraph_ += '\n';
      }
      paragraph_.append(line);
    }
    if (!more) open_next_file();
    if (paragraph_.empty()) continue;
    *r = RawRecord{paragraph_, file, first, false};
    return true;
  }
}

bool jsonl_text(std::string_view line, const std::string& field, std::string* text,
                std::string* why) {
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(line.begin(), line.end());
  } catch (const nlohmann::json::parse_error& e) {
    *why = "not valid JSON (parse error at byte " + std::to_string(e.byte) + ")";
    return false;
  }
  if (!j.is_object()) {
    *why = "not a JSON object";
    return false;
  }
  auto it = j.find(field);
  if (it == j.end() || !it->is_string()) {
    *why = "no string field \"" + field + "\"";
    return false;
  }
  *text = std::move(it->get_ref<std::string&>());
  return true;
}

std::string bad_line_message(const std::string& file, uint64_t line, const std::string& why) {
  return file + ":" + std::to_string(line) + ": " + why +
         " (use --skip-bad-lines to skip such lines)";
}

SentenceReader::SentenceReader(const std::vector<InputFile>& files, const std::string& text_field,
                               bool skip_bad_lines)
    : files_(files), records_(files, false), field_(text_field), skip_bad_(skip_bad_lines) {}

bool SentenceReader::next(std::string* sentence) {
  for (;;) {
    // Hand out the remaining lines of the current JSONL document first.
    while (doc_pos_ < doc_.size()) {
      size_t nl = doc_.find('\n', doc_pos_);
      if (nl == std::string::npos) nl = doc_.size();
      std::string_view s(doc_.data() + doc_pos_, nl - doc_pos_);
      doc_pos_ = nl + 1;
      if (!s.empty() && s.back() == '\r') s.remove_suffix(1);
      if (is_blank(s)) continue;
      sentence->assign(s);
      return true;
    }
    doc_pos_ = std::string::npos;
    RawRecord r;
    if (!records_.next(&r)) return false;
    if (!r.json) {  // a text paragraph: hand out its lines
      doc_.assign(r.text);
      doc_pos_ = 0;
      continue;
    }
    std::string why;
    if (!jsonl_text(r.text, field_, &doc_, &why)) {
      const std::string& path = files_[r.file].path;
      if (!skip_bad_) throw DataError(bad_line_message(path, r.line, why));
      if (bad_lines_++ == 0) first_bad_ = path + ":" + std::to_string(r.line) + ": " + why;
      continue;
    }
    doc_pos_ = 0;
  }
}

}  // namespace moe::data
