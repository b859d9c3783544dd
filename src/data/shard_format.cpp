#include "data/shard_format.h"

#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <vector>

#include "core/error.h"

namespace moe {

namespace {

template <typename U>
void put(unsigned char* p, U v) {
  for (size_t i = 0; i < sizeof(U); ++i) p[i] = static_cast<unsigned char>(uint64_t(v) >> (8 * i));
}
template <typename U>
U get(const unsigned char* p) {
  uint64_t v = 0;
  for (size_t i = 0; i < sizeof(U); ++i) v |= uint64_t(p[i]) << (8 * i);
  return static_cast<U>(v);
}

}  // namespace

void encode_shard_header(const ShardHeader& h, unsigned char out[kShardHeaderBytes]) {
  std::memset(out, 0, kShardHeaderBytes);
  std::memcpy(out, kShardMagic, 8);
  put<uint32_t>(out + 8, h.version);
  put<uint32_t>(out + 12, h.token_bytes);
  put<uint32_t>(out + 16, h.vocab_size);
  put<int32_t>(out + 20, h.bos_id);
  put<int32_t>(out + 24, h.eos_id);
  put<int32_t>(out + 28, h.pad_id);
  put<uint64_t>(out + 32, h.token_count);
  put<uint64_t>(out + 40, h.doc_count);
  put<uint64_t>(out + 48, h.tokenizer_hash);
}

ShardHeader decode_shard_header(const unsigned char* b, size_t size, const std::string& path) {
  if (size < kShardHeaderBytes)
    throw DataError(path + ": not a token shard (shorter than its " +
                    std::to_string(kShardHeaderBytes) + "-byte header)");
  if (std::memcmp(b, kShardMagic, 8) != 0)
    throw DataError(path + ": not a token shard (bad magic; expected MOELFBTK)");
  ShardHeader h;
  h.version = get<uint32_t>(b + 8);
  h.token_bytes = get<uint32_t>(b + 12);
  h.vocab_size = get<uint32_t>(b + 16);
  h.bos_id = get<int32_t>(b + 20);
  h.eos_id = get<int32_t>(b + 24);
  h.pad_id = get<int32_t>(b + 28);
  h.token_count = get<uint64_t>(b + 32);
  h.doc_count = get<uint64_t>(b + 40);
  h.tokenizer_hash = get<uint64_t>(b + 48);
  if (h.version != kShardVersion)
    throw DataError(path + ": unsupported shard version " + std::to_string(h.version) +
                    " (this build reads version " + std::to_string(kShardVersion) + ")");
  if (h.token_bytes != 2 && h.token_bytes != 4)
    throw DataError(path + ": bad token width " + std::to_string(h.token_bytes) +
                    " bytes (expected 2 or 4)");
  if (h.vocab_size == 0 || (h.token_bytes == 2 && h.vocab_size > 65536))
    throw DataError(path + ": bad vocab size " + std::to_string(h.vocab_size) + " for " +
                    std::to_string(h.token_bytes) + "-byte tokens");
  for (int32_t id : {h.bos_id, h.eos_id, h.pad_id})
    if (id < -1 || id >= int64_t(h.vocab_size))
      throw DataError(path + ": special token id " + std::to_string(id) + " outside the vocab");
  return h;
}

void check_shard_size(const ShardHeader& h, uint64_t file_bytes, const std::string& path) {
  // Compared by division: token_count * token_bytes can wrap around 2^64, and
  // a header that lies by a multiple of it must not pass (found by fuzz_shard).
  const uint64_t body = file_bytes >= kShardHeaderBytes ? file_bytes - kShardHeaderBytes : 0;
  const uint64_t whole = body / h.token_bytes;
  if (file_bytes < kShardHeaderBytes || h.token_count > whole)
    throw DataError(path + ": truncated: header promises " + std::to_string(h.token_count) +
                    " tokens of " + std::to_string(h.token_bytes) + " bytes, file has " +
                    std::to_string(file_bytes) + " bytes");
  if (h.token_count < whole || body % h.token_bytes != 0)
    throw DataError(path + ": " + std::to_string(body - h.token_count * h.token_bytes) +
                    " trailing bytes after the tokens the header promises");
}

namespace {
constexpr size_t kShardWriteBuffer = size_t(1) << 20;
}  // namespace

ShardWriter::ShardWriter(const std::string& path, const ShardHeader& header_template)
    : path_(path), tmp_path_(path + ".tmp"), header_(header_template) {
  header_.token_count = 0;
  header_.doc_count = 0;
  header_.version = kShardVersion;
  file_ = std::make_unique<io::FileWriter>(tmp_path_);
  buffer_.reserve(kShardWriteBuffer);
  buffer_.resize(kShardHeaderBytes);  // zeros until finish() writes the counts
}

ShardWriter::~ShardWriter() {
  if (file_) {
    file_.reset();
    io::remove_quietly(tmp_path_);
  }
}

void ShardWriter::flush() {
  file_->write(buffer_.data(), buffer_.size());
  buffer_.clear();
}

void ShardWriter::append(const uint32_t* tokens, size_t n) {
  if (n == 0) return;
  for (size_t i = 0; i < n; ++i)
    MOE_CHECK(tokens[i] < header_.vocab_size, "ShardWriter: token id outside the vocab");
  const size_t width = header_.token_bytes;
  const size_t at = buffer_.size();
  buffer_.resize(at + n * width);
  unsigned char* out = buffer_.data() + at;
  for (size_t i = 0; i < n; ++i)  // little-endian, 2 or 4 bytes
    for (size_t b = 0; b < width; ++b) out[i * width + b] = uint8_t(tokens[i] >> (8 * b));
  header_.token_count += n;
  if (buffer_.size() >= kShardWriteBuffer) flush();
}

void ShardWriter::end_document() { ++header_.doc_count; }

ShardHeader ShardWriter::finish() {
  MOE_CHECK(file_ != nullptr, "ShardWriter::finish called twice");
  unsigned char hdr[kShardHeaderBytes];
  encode_shard_header(header_, hdr);
  try {
    if (!buffer_.empty()) flush();
    file_->write_at(0, hdr, kShardHeaderBytes);
    file_->sync_and_close();
    io::rename_path(tmp_path_, path_);
  } catch (...) {
    file_.reset();
    io::remove_quietly(tmp_path_);
    throw;
  }
  file_.reset();
  return header_;
}

uint64_t hash_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) throw DataError(path + ": cannot read: " + std::strerror(errno));
  uint64_t h = 1469598103934665603ull;
  std::vector<char> buf(1 << 16);
  while (f) {
    f.read(buf.data(), std::streamsize(buf.size()));
    for (std::streamsize i = 0; i < f.gcount(); ++i)
      h = (h ^ static_cast<unsigned char>(buf[size_t(i)])) * 1099511628211ull;
  }
  return h;
}

}  // namespace moe
